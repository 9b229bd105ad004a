//! `/metrics` in the Prometheus text format: request counts and latency by
//! method and status, plus whatever the cache and the lifecycle jobs register.
//!
//! Negotiated by `Accept`: OpenMetrics 1.0 to a client that asks for it
//! (Prometheus does, first), the classic text format 0.0.4 to everyone
//! else (older scrapers, curl, exporters' tooling), as Distribution serves.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, Method, StatusCode};
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
        prom.register(
            "berth_blob_sendfile_bytes",
            "Blob bytes sent from file to socket by sendfile, without a copy through memory",
            crate::zero_copy::SENT_BYTES.clone(),
        );
        prom.register_collector(Box::new(crate::process_metrics::ProcessCollector));
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

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the client accepts OpenMetrics (with a q above 0).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// OpenMetrics text as the classic 0.0.4 format: no `# EOF` or `# UNIT`
/// lines, a counter family named by its samples (`x_total`), an info family
/// as a gauge named `x_info`.
fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Family name → the name its samples carry, for HELP lines that come
    // before their TYPE line.
    let mut renamed: std::collections::HashMap<&str, String> = Default::default();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                match kind {
                    "counter" => {
                        renamed.insert(name, format!("{name}_total"));
                    }
                    "info" => {
                        renamed.insert(name, format!("{name}_info"));
                    }
                    _ => {}
                }
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        for prefix in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = renamed.get(name).map_or(name, String::as_str);
                let tail = if prefix == "# TYPE " && tail == "info" {
                    "gauge"
                } else {
                    tail
                };
                out.push_str(prefix);
                out.push_str(name);
                out.push(' ');
                out.push_str(tail);
                out.push('\n');
            }
        }
        if !line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub async fn render(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &state.metrics.prom) {
        Ok(()) if wants_openmetrics(&headers) => {
            ([(header::CONTENT_TYPE, OPENMETRICS)], out).into_response()
        }
        Ok(()) => ([(header::CONTENT_TYPE, TEXT_004)], to_text_004(&out)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        // What Prometheus sends.
        assert!(wants_openmetrics(&h(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(&h("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(&h("*/*")));
        assert!(!wants_openmetrics(&h("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }

    #[test]
    fn classic_text_names_families_by_their_samples() {
        let om = "# HELP berth_cache_hits Hits.\n# TYPE berth_cache_hits counter\nberth_cache_hits_total 3\n\
                  # HELP build Build.\n# TYPE build info\nbuild_info{version=\"1\"} 1\n\
                  # HELP bytes Stored.\n# TYPE bytes gauge\n# UNIT bytes bytes\nbytes 7\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP berth_cache_hits_total Hits.\n# TYPE berth_cache_hits_total counter\nberth_cache_hits_total 3\n\
             # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{version=\"1\"} 1\n\
             # HELP bytes Stored.\n# TYPE bytes gauge\nbytes 7\n"
        );
    }
}
