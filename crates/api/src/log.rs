//! One structured log line per request: method, path, status, bytes, time.
//! The time is to the response head; a long blob body streams after it.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;

use crate::ApiState;

pub async fn log_request(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    state
        .metrics
        .observe(&method, resp.status().as_u16(), start.elapsed());
    tracing::info!(
        target: "berth::request",
        %method,
        %path,
        status = resp.status().as_u16(),
        bytes,
        micros = start.elapsed().as_micros() as u64,
    );
    resp
}
