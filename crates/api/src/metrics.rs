//! `/metrics` in the Prometheus text format: request counts and latency by
//! method and status, plus whatever the cache and the lifecycle jobs register.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use crate::ApiState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

pub struct Metrics {
    prom: PromRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
}

impl Metrics {
    pub fn new(
        cache: Option<&berth_cache::CacheMetrics>,
        lifecycle: Option<&berth_lifecycle::LifecycleMetrics>,
    ) -> Metrics {
        let mut prom = PromRegistry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // 100 µs to ~1.6 s in 15 doublings: time to the response head.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        prom.register(
            "berth_http_requests",
            "HTTP requests by method and status",
            requests.clone(),
        );
        prom.register(
            "berth_http_response_head_seconds",
            "Time from request to response head",
            latency.clone(),
        );
        if let Some(c) = cache {
            c.register(&mut prom);
        }
        if let Some(l) = lifecycle {
            l.register(&mut prom);
        }
        Metrics {
            prom,
            requests,
            latency,
        }
    }

    pub fn observe(&self, method: &Method, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.as_str().to_string(),
                status,
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

pub async fn render(State(state): State<ApiState>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.metrics.prom) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}
