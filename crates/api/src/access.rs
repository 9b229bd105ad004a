//! The [`Authorizer`] over berth-auth: reads the `Authorization` header
//! (Basic credentials or berth's own Bearer tokens), asks berth-auth what
//! the caller may do, and answers the way registry clients expect:
//!
//! - no or bad credentials → 401 with a `WWW-Authenticate: Bearer` challenge
//!   naming `/token`, the service and the scope the request needs;
//! - a valid token lacking the action → 401 `error="insufficient_scope"`
//!   (clients ask for a new token), unless the caller's own rights lack it
//!   too: then, like a user the policy denies, 403 DENIED;
//! - too many failed logins from the address → 429 with `Retry-After`.
//!
//! Every denial is one `berth::audit` line (an anonymous `GET /v2/`, which
//! every client sends to discover the realm, is not a denial worth one).
//! Nothing here logs a credential.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use berth_auth::{Actions, Auth, AuthError, Granted, Identity};
use http::{header, HeaderMap};

use crate::auth::{Access, Action, Authorizer, Caller};
use crate::error::ApiError;

/// Longest `Authorization` header looked at.
pub const MAX_AUTHORIZATION: usize = 16 * 1024;

/// What the `Authorization` header holds. A bearer token is borrowed from
/// the header: every request of a pulling client carries one, and copying
/// it showed in the profile of manifest GETs.
pub enum Credentials<'a> {
    None,
    Basic { user: String, password: Vec<u8> },
    Bearer(&'a str),
    Invalid,
}

pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let bytes = value.as_bytes();
    if bytes.len() > MAX_AUTHORIZATION {
        return Credentials::Invalid;
    }
    // Both schemes carry ASCII (base64, or a token berth signed): text that
    // is not even UTF-8 can be neither.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Credentials::Invalid;
    };
    let text = text.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Credentials::Invalid;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return Credentials::Invalid;
        };
        let Ok(user) = std::str::from_utf8(&decoded[..colon]) else {
            return Credentials::Invalid;
        };
        if user.is_empty() {
            return Credentials::Invalid;
        }
        Credentials::Basic {
            user: user.to_string(),
            password: decoded[colon + 1..].to_vec(),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Credentials::Bearer(rest)
    } else {
        Credentials::Invalid
    }
}

/// Characters allowed in a Host header we echo into a challenge.
pub(crate) fn safe_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The token endpoint's URL as this client reaches berth.
pub(crate) fn realm(auth: &Auth, headers: &HeaderMap) -> String {
    if let Some(r) = auth.realm() {
        return r.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| safe_host(h))
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{proto}://{host}/token")
}

/// The scope a client must ask for to do `action` in `repo`.
pub(crate) fn scope_actions(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    }
}

pub(crate) fn challenge(
    auth: &Auth,
    headers: &HeaderMap,
    scope: Option<(&str, Action)>,
    error: Option<&str>,
) -> ApiError {
    let mut c = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        realm(auth, headers),
        auth.service()
    );
    if let Some((repo, action)) = scope {
        c.push_str(&format!(
            ",scope=\"repository:{repo}:{}\"",
            scope_actions(action)
        ));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    ApiError::Unauthorized { challenge: Some(c) }
}

pub(crate) fn actions_of(action: Action) -> Actions {
    match action {
        Action::Pull => Actions::PULL,
        Action::Push => Actions::PUSH,
        Action::Delete => Actions::DELETE,
    }
}

/// One audit line. `user` is a name a caller claimed or proved, never a secret.
pub(crate) fn audit(
    user: Option<&str>,
    client: Option<SocketAddr>,
    repository: Option<&str>,
    action: &str,
    outcome: &str,
) {
    tracing::info!(
        target: "berth::audit",
        user = user.unwrap_or("-"),
        client = %client.map(|c| c.ip().to_string()).unwrap_or_else(|| "-".into()),
        repository = repository.unwrap_or("-"),
        action,
        outcome,
    );
}

/// Access control by berth-auth.
pub struct PolicyAuthorizer {
    auth: Arc<Auth>,
}

impl PolicyAuthorizer {
    pub fn new(auth: Arc<Auth>) -> PolicyAuthorizer {
        PolicyAuthorizer { auth }
    }

    /// Who the credentials in `headers` are (anonymous without any), and
    /// whether by a bearer token; a failed login, a bad token or malformed
    /// credentials are the error a client gets (challenging for `scope`),
    /// audited as an attempt at `action` on `repo`.
    async fn identify(
        &self,
        client: Option<SocketAddr>,
        headers: &HeaderMap,
        repo: Option<&str>,
        action: &str,
        scope: Option<(&str, Action)>,
    ) -> Result<(Arc<Granted>, bool), ApiError> {
        let auth = &self.auth;
        let ip = client.map(|c| c.ip());
        // `who.access` is what a bearer token grants; a login (or no
        // credentials) is judged by the policy alone.
        match credentials(headers) {
            Credentials::None => Ok((Granted::of(Identity::anonymous()), false)),
            Credentials::Basic { user, password } => match auth.login(&user, &password, ip).await {
                Ok(id) => Ok((Granted::of(id), false)),
                Err(AuthError::TooManyAttempts(secs)) => {
                    audit(Some(&user), client, repo, action, "rate-limited");
                    Err(ApiError::TooManyLogins(secs))
                }
                Err(_) => {
                    audit(Some(&user), client, repo, action, "bad-credentials");
                    Err(challenge(auth, headers, scope, None))
                }
            },
            Credentials::Bearer(token) => match auth.verify_access(token) {
                Ok(g) => Ok((g, true)),
                Err(_) => {
                    audit(None, client, repo, action, "invalid-token");
                    Err(challenge(auth, headers, scope, Some("invalid_token")))
                }
            },
            Credentials::Invalid => {
                if let Err(AuthError::TooManyAttempts(secs)) = auth.check_rate(ip) {
                    // A denial like any other: the audit trail must show
                    // the address kept sending garbage while limited.
                    audit(None, client, repo, action, "rate-limited");
                    return Err(ApiError::TooManyLogins(secs));
                }
                auth.record_failure(ip);
                audit(None, client, repo, action, "malformed-credentials");
                Err(challenge(auth, headers, scope, Some("invalid_request")))
            }
        }
    }

    /// The caller, for the catalog's filter: `who` is shared with the
    /// memo of verified tokens, so a token holder's request copies nothing.
    fn caller(&self, who: Arc<Granted>) -> Caller {
        let auth = self.auth.clone();
        let user = who.identity.user.clone();
        Caller::restricted(
            user,
            Arc::new(move |repo| auth.rights(&who.identity, repo).contains(Actions::PULL)),
        )
    }
}

#[async_trait]
impl Authorizer for PolicyAuthorizer {
    async fn authorize(&self, headers: &HeaderMap, access: &Access<'_>) -> Result<(), ApiError> {
        self.check(None, headers, access).await.map(|_| ())
    }

    async fn check(
        &self,
        client: Option<SocketAddr>,
        headers: &HeaderMap,
        access: &Access<'_>,
    ) -> Result<Caller, ApiError> {
        let auth = &self.auth;
        let repo = access.repository.map(|r| r.as_str());
        let scope = repo.map(|r| (r, access.action));
        let action = access.action.as_str();
        let (who, by_token) = self.identify(client, headers, repo, action, scope).await?;
        let identity = &who.identity;
        let Some(repo) = repo else {
            // `/v2/` and the catalog: anyone who authenticated (or holds a
            // token from /token); the catalog is filtered by what they may pull.
            if identity.user.is_none() && !by_token {
                return Err(challenge(auth, headers, None, None));
            }
            return Ok(self.caller(who));
        };
        let need = actions_of(access.action);
        let allowed = if by_token {
            who.access.get(repo).is_some_and(|a| a.contains(need))
        } else {
            auth.rights(identity, repo).contains(need)
        };
        if allowed {
            return Ok(self.caller(who));
        }
        let user = identity.user.clone();
        let may = identity.user.is_some() && auth.rights(identity, repo).contains(need);
        let err = match (by_token, identity.user.is_some()) {
            // The token lacks it but a new one could carry it (or a login could).
            (true, _) if may || identity.user.is_none() => {
                challenge(auth, headers, scope, Some("insufficient_scope"))
            }
            (false, false) => challenge(auth, headers, scope, None),
            _ => ApiError::Denied,
        };
        let outcome = if matches!(err, ApiError::Denied) {
            "denied"
        } else {
            "unauthenticated"
        };
        audit(user.as_deref(), client, Some(repo), action, outcome);
        Err(err)
    }

    async fn caller(
        &self,
        client: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let (who, _) = self.identify(client, headers, None, "view", None).await?;
        Ok(self.caller(who))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
        h
    }

    #[test]
    fn authorization_headers() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(matches!(credentials(&HeaderMap::new()), Credentials::None));
        match credentials(&with(format!("Basic {}", b64(b"al:ice:pw")).as_bytes())) {
            Credentials::Basic { user, password } => {
                assert_eq!(user, "al");
                assert_eq!(password, b"ice:pw");
            }
            _ => panic!("not basic"),
        }
        // A password need not be UTF-8; a user name must be.
        assert!(matches!(
            credentials(&with(format!("basic {}", b64(b"u:\xff\xfe")).as_bytes())),
            Credentials::Basic { .. }
        ));
        for bad in [
            format!("Basic {}", b64(b"\xff:pw")),
            format!("Basic {}", b64(b"nocolon")),
            format!("Basic {}", b64(b":pw")),
            "Basic !!!".to_string(),
            "Digest x".to_string(),
            "Bearer".to_string(),
            format!("Bearer {}", "x".repeat(MAX_AUTHORIZATION)),
        ] {
            assert!(
                matches!(credentials(&with(bad.as_bytes())), Credentials::Invalid),
                "{bad:.40}"
            );
        }
        assert!(matches!(
            credentials(&with(b"Bearer a.b.c")),
            Credentials::Bearer(t) if t == "a.b.c"
        ));
    }

    #[test]
    fn hosts_echoed_into_challenges_are_plain() {
        assert!(safe_host("registry.local:5000"));
        assert!(safe_host("[::1]:5000"));
        assert!(!safe_host("evil\",error=\"x"));
        assert!(!safe_host("a b"));
    }
}
