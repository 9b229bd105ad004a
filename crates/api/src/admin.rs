//! The admin API: maintenance of a running server (garbage collection,
//! scrub, usage). It is served only on a Unix socket under the storage root
//! (`ROOT/run/admin.sock`, mode 0600), never on the network listener: who
//! may open that socket — the root directory's owner — may run maintenance,
//! exactly as they could on the files themselves. `berth gc --root ROOT`
//! talks to it while a server holds the root.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_lifecycle::Lifecycle;
use http::StatusCode;

#[derive(serde::Deserialize)]
struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /gc[?dry_run=true]`: expire idle uploads and collect garbage now;
/// the report as JSON.
pub fn router(lifecycle: Lifecycle) -> Router {
    Router::new()
        .route("/gc", axum::routing::post(gc))
        .route("/scrub", axum::routing::post(scrub))
        .route("/du", axum::routing::post(du))
        .with_state(lifecycle)
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
