//! The admin API: maintenance of a running server (garbage collection,
//! scrub, usage). It is served only on a Unix socket under the storage root
//! (`ROOT/run/admin.sock`, mode 0600), never on the network listener: who
//! may open that socket — the root directory's owner — may run maintenance,
//! exactly as they could on the files themselves. `berth gc --root ROOT`
//! talks to it while a server holds the root, and so does `berth token`:
//! on storage replicas share, API tokens live in the bucket, which only the
//! running server reaches.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_auth::apitoken::{Record, TokenStore};
use berth_lifecycle::Lifecycle;
use http::StatusCode;

#[derive(serde::Deserialize)]
struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /gc[?dry_run=true]`: expire idle uploads and collect garbage now;
/// the report as JSON.
pub fn router(lifecycle: Lifecycle, tokens: TokenStore) -> Router {
    Router::new()
        .route("/gc", axum::routing::post(gc))
        .route("/scrub", axum::routing::post(scrub))
        .route("/du", axum::routing::post(du))
        .with_state(lifecycle)
        .merge(
            Router::new()
                .route("/tokens/create", axum::routing::post(token_create))
                .route("/tokens/list", axum::routing::post(token_list))
                .route("/tokens/revoke", axum::routing::post(token_revoke))
                .with_state(tokens),
        )
}

/// What `POST /tokens/create` takes.
#[derive(serde::Deserialize)]
pub struct TokenRequest {
    pub user: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime in seconds; absent: never expires.
    pub expires_secs: Option<u64>,
}

/// What it answers: the record and, this once, the token itself.
#[derive(serde::Serialize)]
struct Created {
    record: Record,
    token: String,
}

/// `POST /tokens/create` (a JSON [`TokenRequest`]): a new API token.
async fn token_create(State(tokens): State<TokenStore>, body: bytes::Bytes) -> Response {
    let req: TokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": format!("not a token request: {e}") }),
            )
        }
    };
    let expires = req.expires_secs.map(std::time::Duration::from_secs);
    match tokens.create(&req.user, &req.scopes, expires).await {
        Ok((record, token)) => json(StatusCode::OK, &Created { record, token }),
        Err(e @ berth_auth::AuthError::Config(_)) => refused(StatusCode::BAD_REQUEST, e),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `POST /tokens/list`: every token's record (never a secret).
async fn token_list(State(tokens): State<TokenStore>) -> Response {
    match tokens.list().await {
        Ok(records) => json(StatusCode::OK, &records),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(serde::Deserialize)]
struct RevokeQuery {
    id: String,
}

/// `POST /tokens/revoke?id=ID`: `{"revoked": bool}`.
async fn token_revoke(State(tokens): State<TokenStore>, Query(q): Query<RevokeQuery>) -> Response {
    match tokens.revoke(&q.id).await {
        Ok(revoked) => json(StatusCode::OK, &serde_json::json!({ "revoked": revoked })),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn refused(status: StatusCode, e: berth_auth::AuthError) -> Response {
    json(status, &serde_json::json!({ "error": e.to_string() }))
}

async fn gc(State(lifecycle): State<Lifecycle>, Query(q): Query<GcQuery>) -> Response {
    match lifecycle.collect(q.dry_run).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

#[derive(serde::Deserialize)]
struct ScrubQuery {
    /// Bytes a second; 0 or absent: no limit.
    #[serde(default)]
    rate: u64,
}

/// `POST /scrub[?rate=BYTES_PER_SECOND]`: re-hash every blob now.
async fn scrub(State(lifecycle): State<Lifecycle>, Query(q): Query<ScrubQuery>) -> Response {
    match lifecycle.scrub((q.rate > 0).then_some(q.rate)).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => failed(e),
    }
}

/// `POST /du`: what is stored and for whom.
async fn du(State(lifecycle): State<Lifecycle>) -> Response {
    match lifecycle.usage().await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => failed(e),
    }
}

fn failed(e: berth_lifecycle::LifecycleError) -> Response {
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({ "error": e.to_string() }),
    )
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
