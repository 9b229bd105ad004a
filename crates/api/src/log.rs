//! One structured log line per request: client address, user, method,
//! path, `ns`, status, bytes, time, what the cache did and which upstream
//! (see `berth_cache::outcome`), user agent. The time is to the
//! response head; a long blob body streams after it. What a client sent
//! (user agent, `ns`) is logged escaped (`?`), never raw.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;

use crate::ApiState;

/// The authenticated user behind a response, put there by the dispatcher.
#[derive(Clone, Debug)]
pub(crate) struct User(pub String);

/// Longest user agent or `ns` logged (a client may send kilobytes).
const MAX_AGENT: usize = 160;

/// What the line takes from the request.
struct Fields {
    path: String,
    client: Option<std::net::IpAddr>,
    ns: Option<String>,
    agent: Option<String>,
}

impl Fields {
    fn of(req: &Request) -> Fields {
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ns = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "ns")
                .map(|(_, v)| v.chars().take(MAX_AGENT).collect::<String>())
        });
        let agent = req.headers().get(header::USER_AGENT).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(MAX_AGENT)
                .collect::<String>()
        });
        Fields {
            path: req.uri().path().to_string(),
            client,
            ns,
            agent,
        }
    }
}

pub async fn log_request(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // Only what the line needs, and only when it is written: at `warn` a
    // request costs nothing here beyond the metrics.
    let line = tracing::enabled!(target: "berth::request", tracing::Level::INFO);
    let fields = line.then(|| Fields::of(&req));
    let Some(f) = fields else {
        let resp = next.run(req).await;
        state
            .metrics
            .observe(&method, resp.status().as_u16(), start.elapsed());
        return resp;
    };
    let (resp, cache) = berth_cache::outcome::scope(next.run(req)).await;
    let user = resp.extensions().get::<User>().map(|u| u.0.clone());
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
        client = f.client.map(tracing::field::display),
        user = user.as_deref().map(tracing::field::debug),
        %method,
        path = %f.path,
        ns = f.ns.as_deref().map(tracing::field::debug),
        status = resp.status().as_u16(),
        bytes,
        micros = start.elapsed().as_micros() as u64,
        cache = cache.as_ref().map(|c| tracing::field::display(c.outcome)),
        upstream = cache.as_ref().map(|c| tracing::field::display(&c.upstream)),
        agent = f.agent.as_deref().map(tracing::field::debug),
    );
    resp
}
