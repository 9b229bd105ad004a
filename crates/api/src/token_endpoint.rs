//! `/token`: the Docker token endpoint clients are sent to by a 401
//! challenge.
//!
//! - `GET` with Basic credentials (or none: anonymous), repeated `scope`
//!   (`repository:NAME:ACTIONS`), `service`, `offline_token`, `account`,
//!   `client_id`;
//! - `POST` form (the OAuth2 flavour containerd tries first): `grant_type`
//!   `password` (`username`, `password`) or `refresh_token`
//!   (`refresh_token`), space-separated `scope`.
//!
//! The answer carries only what the policy grants of what was asked (asking
//! for more is not an error: the token holds less). Scope names are
//! resolved as request paths are (`docker.io/alpine` is
//! `docker.io/library/alpine`), so a token names the repositories the
//! registry API will check it against.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::{Actions, Auth, AuthError, Identity};
use http::{header, HeaderValue, Method, StatusCode};

use crate::access::{audit, credentials, Credentials};
use crate::ApiState;

/// Largest POST form read.
const MAX_FORM: usize = 64 * 1024;
/// Most scopes honoured in one request.
const MAX_SCOPES: usize = 64;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "code": code, "message": message }],
        // OAuth2's shape, for clients of the POST form.
        "error": match status {
            StatusCode::BAD_REQUEST => "invalid_request",
            _ => "invalid_grant",
        },
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn auth_error(e: AuthError) -> Response {
    match e {
        AuthError::TooManyAttempts(secs) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                &format!("too many failed login attempts; retry in {secs} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        AuthError::InvalidToken(_) => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the refresh token is invalid or expired",
        ),
        AuthError::InvalidCredentials => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid user name or password",
        ),
        other => {
            tracing::error!(error = %other, "token endpoint");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "token could not be issued",
            )
        }
    }
}

/// `repository:NAME:ACTIONS` → (NAME, actions); other resource types
/// (`registry:catalog:*`) grant nothing here.
fn parse_scope(s: &str) -> Option<(&str, Actions)> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    // `repository(plugin)` is Docker's typed form of the same thing.
    if kind != "repository" && !kind.starts_with("repository(") {
        return None;
    }
    let actions = actions
        .split(',')
        .filter_map(berth_auth::Actions::parse_one)
        .fold(Actions::NONE, Actions::union);
    (!name.is_empty() && !actions.is_empty()).then_some((name, actions))
}

/// What of `scopes` `who` gets, by resolved repository name.
async fn grants(
    state: &ApiState,
    auth: &Auth,
    who: &Identity,
    scopes: &[String],
) -> Vec<(String, Actions)> {
    let mut out: Vec<(String, Actions)> = Vec::new();
    for s in scopes.iter().take(MAX_SCOPES) {
        let Some((name, asked)) = parse_scope(s) else {
            continue;
        };
        for (one, read) in [
            (Actions::PULL, true),
            (Actions::PUSH, false),
            (Actions::DELETE, false),
        ] {
            if !asked.contains(one) {
                continue;
            }
            let Ok(repo) = state.resolver.resolve(name, None, read).await else {
                continue;
            };
            let granted = auth.rights(who, repo.as_str()).intersect(one);
            if granted.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(n, _)| n == repo.as_str()) {
                Some((_, a)) => *a = a.union(granted),
                None => out.push((repo.to_string(), granted)),
            }
        }
    }
    out
}

fn params(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn scopes_of(params: &[(String, String)]) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
        .collect()
}

pub async fn token(State(state): State<ApiState>, req: Request) -> Response {
    let Some(auth) = state.auth.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = client.map(|c| c.ip());
    let (parts, body) = req.into_parts();
    let (params, identity, want_refresh) = match parts.method {
        Method::GET | Method::HEAD => {
            let params = params(parts.uri.query().unwrap_or("").as_bytes());
            let identity = match credentials(&parts.headers) {
                Credentials::None => Identity::anonymous(),
                Credentials::Basic { user, password } => {
                    match auth.login(&user, &password, ip).await {
                        Ok(id) => id,
                        Err(e) => {
                            audit(Some(&user), client, None, "login", "bad-credentials");
                            return auth_error(e);
                        }
                    }
                }
                Credentials::Bearer(_) | Credentials::Invalid => {
                    if let Err(e) = auth.check_rate(ip) {
                        // Audited as the /v2/ routes audit it.
                        audit(None, client, None, "login", "rate-limited");
                        return auth_error(e);
                    }
                    auth.record_failure(ip);
                    audit(None, client, None, "login", "malformed-credentials");
                    return auth_error(AuthError::InvalidCredentials);
                }
            };
            let refresh = get(&params, "offline_token") == Some("true");
            (params, identity, refresh)
        }
        Method::POST => {
            let bytes = match axum::body::to_bytes(Body::new(body), MAX_FORM).await {
                Ok(b) => b,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "UNSUPPORTED",
                        "form too large or broken",
                    )
                }
            };
            let params = params(&bytes);
            let identity = match get(&params, "grant_type") {
                Some("password") => {
                    let user = get(&params, "username").unwrap_or("");
                    let password = get(&params, "password").unwrap_or("");
                    match auth.login(user, password.as_bytes(), ip).await {
                        Ok(id) => id,
                        Err(e) => {
                            audit(Some(user), client, None, "login", "bad-credentials");
                            return auth_error(e);
                        }
                    }
                }
                Some("refresh_token") => {
                    if let Err(e) = auth.check_rate(ip) {
                        return auth_error(e);
                    }
                    match auth
                        .verify_refresh(get(&params, "refresh_token").unwrap_or(""))
                        .await
                    {
                        Ok(id) => id,
                        Err(e) => {
                            auth.record_failure(ip);
                            audit(None, client, None, "refresh", "invalid-token");
                            return auth_error(e);
                        }
                    }
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "UNSUPPORTED",
                        "grant_type must be password or refresh_token",
                    )
                }
            };
            (params, identity, true)
        }
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    let granted = grants(&state, &auth, &identity, &scopes_of(&params)).await;
    let issued = match auth.issue(&identity, &granted) {
        Ok(i) => i,
        Err(e) => return auth_error(e),
    };
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": berth_auth::token::rfc3339(issued.issued_at),
    });
    if want_refresh {
        match auth.refresh_token(&identity) {
            Ok(Some(r)) => body["refresh_token"] = r.into(),
            Ok(None) => {}
            Err(e) => return auth_error(e),
        }
    }
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            parse_scope("repository:team/app:pull,push"),
            Some(("team/app", Actions::PULL.union(Actions::PUSH)))
        );
        assert_eq!(
            parse_scope("repository:localhost:5000/x:pull"),
            Some(("localhost:5000/x", Actions::PULL))
        );
        assert_eq!(parse_scope("repository:x:*"), Some(("x", Actions::ALL)));
        assert_eq!(
            parse_scope("repository(plugin):x:pull"),
            Some(("x", Actions::PULL))
        );
        assert_eq!(parse_scope("registry:catalog:*"), None);
        assert_eq!(parse_scope("repository:x:write"), None);
        assert_eq!(parse_scope("garbage"), None);
    }
}
