//! The web UI under `/ui`: read-only pages rendered on the server from what
//! berth holds (repositories, tags, manifests, referrers) and what it has
//! measured (the cache, upstreams, storage). No JavaScript, no assets from
//! elsewhere: one embedded style sheet, so it works air-gapped.
//!
//! Who sees what: the caller is identified as the API does it (Basic
//! credentials — the browser's own login prompt, see `/ui/login` — or a
//! bearer token), anonymous allowed. Every repository page shows only what
//! the caller may pull (a repository they may not pull is the same 404 as
//! one that does not exist); the cache and storage page needs a signed-in
//! user when access control is on. Nothing here contacts an upstream.

mod cache_page;
mod layout;
mod repos;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::ApiState;

/// The style sheet, served from the binary.
const STYLE: &str = include_str!("style.css");

/// The UI's routes (merged into the application router).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(repos::home))
        .route("/ui/", get(repos::home))
        .route("/ui/repo/{*path}", get(repos::repository))
        .route("/ui/cache", get(cache_page::page))
        .route("/ui/login", get(login))
        .route("/ui/style.css", get(style))
}

/// The request as a page handler needs it.
pub(crate) struct Viewer {
    pub caller: Caller,
    /// Access control is on.
    pub auth_on: bool,
    /// How the client reached berth, for pull commands: `host[:port]`.
    pub host: String,
    /// Reached over TLS (the listener says so).
    pub tls: bool,
}

/// Every page handler takes its [`Viewer`] as an extractor.
impl axum::extract::FromRequestParts<ApiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &ApiState,
    ) -> Result<Viewer, Response> {
        Viewer::of(state, parts).await
    }
}

impl Viewer {
    /// Identifies the caller; bad credentials are answered here (a fresh
    /// login prompt, or 429 while the client's logins are limited).
    pub async fn of(state: &ApiState, req: &http::request::Parts) -> Result<Viewer, Response> {
        let client = req.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let headers = &req.headers;
        let caller = match state.authorizer.caller(client, headers).await {
            Ok(c) => c,
            Err(ApiError::TooManyLogins(secs)) => {
                let mut resp = page_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    layout::message_page(
                        "Too many failed logins",
                        &format!("Try again in {secs} seconds."),
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return Err(resp);
            }
            Err(_) => return Err(sign_in_required("Those credentials were not accepted.")),
        };
        Ok(Viewer {
            caller,
            auth_on: state.auth.is_some(),
            host: client_host(headers),
            tls: headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https"),
        })
    }

    /// A signed-in user's name, if any.
    pub fn user(&self) -> Option<&str> {
        self.caller.user.as_deref()
    }
}

/// The host the client used, when it is a plain host name or address.
fn client_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| crate::access::safe_host(h))
        .unwrap_or("REGISTRY")
        .to_string()
}

/// A page with the headers every UI response carries: no scripts or
/// outside resources (CSP), not framed, not cached, no referrer.
pub(crate) fn page_response(status: StatusCode, body: maud::Markup) -> Response {
    let mut resp = (status, body.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    resp
}

fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// 401 with a Basic challenge: the browser asks for a user and password.
fn sign_in_required(why: &str) -> Response {
    let mut resp = page_response(
        StatusCode::UNAUTHORIZED,
        layout::message_page("Sign in", why),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"berth\", charset=\"UTF-8\""),
    );
    resp
}

/// `/ui/login`: prompts until the browser sends good credentials, then
/// back to the repositories.
async fn login(viewer: Viewer) -> Response {
    if viewer.auth_on && viewer.user().is_none() {
        return sign_in_required(
            "Sign in with your registry user name and password (or an API token).",
        );
    }
    let mut resp = (StatusCode::SEE_OTHER, "").into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    secure(resp.headers_mut());
    resp
}

async fn style() -> Response {
    let mut resp = STYLE.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    resp
}
