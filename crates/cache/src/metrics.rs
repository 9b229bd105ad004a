//! Cache counters, exported on `/metrics` through the Prometheus registry
//! the server hands in: totals, and per upstream (`upstream` = the host as
//! in mirror names, `kind` = what was asked) the requests, failures, time
//! to the answer's head and blob bytes, which tell a slow or failing
//! upstream apart from the others.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_upstream::UpstreamError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;

/// One upstream, and what it was asked.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCall {
    pub upstream: String,
    /// `manifest`, `manifest_head`, `blob` or `blob_head`.
    pub kind: &'static str,
}

/// One upstream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms to ~40 s: a local mirror to a slow public registry's timeout.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 14,
    ))
}

#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub requests: Family<UpstreamCall, Counter>,
    pub failures: Family<UpstreamCall, Counter>,
    pub seconds: Family<UpstreamCall, Histogram, fn() -> Histogram>,
    pub bytes: Family<UpstreamLabel, Counter>,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        UpstreamMetrics {
            requests: Family::default(),
            failures: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            bytes: Family::default(),
        }
    }
}

/// How one upstream has been answering, for the web UI's cache page (the
/// Prometheus families say the same in series; this is a readable snapshot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamHealth {
    pub requests: u64,
    /// Errors other than "not found".
    pub failures: u64,
    /// Summed time to the answers' heads.
    pub total_time: Duration,
    pub last_success: Option<SystemTime>,
    /// When the last failure was, and what it was (no URL or credential:
    /// the error's display, which names only the host).
    pub last_failure: Option<(SystemTime, String)>,
}

impl UpstreamHealth {
    /// Whether the most recent answer was a failure.
    pub fn failing(&self) -> bool {
        match (&self.last_failure, self.last_success) {
            (Some((failed, _)), Some(ok)) => *failed > ok,
            (Some(_), None) => true,
            _ => false,
        }
    }

    pub fn mean_time(&self) -> Option<Duration> {
        (self.requests > 0).then(|| self.total_time / self.requests as u32)
    }
}

/// Every upstream's [`UpstreamHealth`], by host.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard(Arc<Mutex<BTreeMap<String, UpstreamHealth>>>);

impl HealthBoard {
    fn record(&self, upstream: &str, took: Duration, failure: Option<String>) {
        let mut board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let h = board.entry(upstream.to_string()).or_default();
        h.requests += 1;
        h.total_time += took;
        let now = SystemTime::now();
        match failure {
            Some(why) => {
                h.failures += 1;
                h.last_failure = Some((now, why));
            }
            None => h.last_success = Some(now),
        }
    }

    /// A copy of the board, by upstream host.
    pub fn snapshot(&self) -> BTreeMap<String, UpstreamHealth> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug, Default, Clone)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    /// Blob bytes answered from what the cache holds (no download).
    pub hit_bytes: Counter,
    pub upstream_requests: Counter,
    pub upstream_bytes: Counter,
    pub coalesced: Counter,
    pub stale_serves: Counter,
    pub fill_failures: Counter,
    pub uncached_serves: Counter,
    /// Cold blobs streamed from the replica that owns their download.
    pub peer_forwards: Counter,
    /// Cold blobs fetched here because their owner replica did not answer.
    pub peer_fallbacks: Counter,
    pub upstream: UpstreamMetrics,
    pub health: HealthBoard,
}

impl CacheMetrics {
    pub fn register(&self, prom: &mut PromRegistry) {
        let r = prom.sub_registry_with_prefix("berth_cache");
        r.register(
            "hits",
            "Requests served from the cache without asking upstream",
            self.hits.clone(),
        );
        r.register(
            "misses",
            "Requests that needed content from upstream",
            self.misses.clone(),
        );
        r.register(
            "hit_bytes",
            "Blob bytes served to clients from the cache, without an upstream download",
            self.hit_bytes.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to upstream registries (HEAD and GET)",
            self.upstream_requests.clone(),
        );
        r.register(
            "upstream_bytes",
            "Blob bytes downloaded from upstream registries",
            self.upstream_bytes.clone(),
        );
        r.register(
            "peer_forwards",
            "Cold blob requests forwarded to the replica that owns their download",
            self.peer_forwards.clone(),
        );
        r.register(
            "peer_fallbacks",
            "Cold blobs fetched directly because their owner replica did not answer",
            self.peer_fallbacks.clone(),
        );
        r.register(
            "coalesced",
            "Requests that joined a fetch already in progress instead of starting one",
            self.coalesced.clone(),
        );
        r.register(
            "stale_serves",
            "Tags served from the cache because the upstream could not be asked",
            self.stale_serves.clone(),
        );
        r.register(
            "fill_failures",
            "Blob downloads abandoned (upstream error, bad digest, storage failure)",
            self.fill_failures.clone(),
        );
        r.register(
            "uncached_serves",
            "Blobs and manifests streamed from upstream without being stored (storage full)",
            self.uncached_serves.clone(),
        );
        let u = prom.sub_registry_with_prefix("berth_upstream");
        u.register(
            "requests",
            "Requests sent to each upstream registry, by kind",
            self.upstream.requests.clone(),
        );
        u.register(
            "failures",
            "Requests to each upstream that failed (an error status other than 404, a timeout, a refused connection)",
            self.upstream.failures.clone(),
        );
        u.register(
            "request_seconds",
            "Time from sending a request to an upstream to the head of its answer",
            self.upstream.seconds.clone(),
        );
        u.register(
            "bytes",
            "Blob bytes downloaded from each upstream registry",
            self.upstream.bytes.clone(),
        );
    }

    /// Send one request to `upstream` (`call`), counted and timed under
    /// `kind` (and in the `upstream_requests` total).
    pub(crate) async fn upstream_call<T>(
        &self,
        upstream: &str,
        kind: &'static str,
        call: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let labels = UpstreamCall {
            upstream: upstream.to_string(),
            kind,
        };
        self.upstream_requests.inc();
        self.upstream.requests.get_or_create(&labels).inc();
        // Made now, at 0, so that a rate of failures exists before one.
        let _ = self.upstream.failures.get_or_create(&labels);
        let start = Instant::now();
        let result = call.await;
        let took = start.elapsed();
        self.upstream
            .seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        // "Not there" is an answer, not a failure of the upstream.
        let failure = match &result {
            Err(e) if !e.is_not_found() => Some(e.to_string()),
            _ => None,
        };
        if failure.is_some() {
            self.upstream.failures.get_or_create(&labels).inc();
        }
        self.health.record(upstream, took, failure);
        result
    }

    /// The counters a download from `upstream` adds its bytes to, looked
    /// up once per download: the per-upstream label is a map lookup and a
    /// string, not work for every chunk of a blob.
    pub(crate) fn upstream_bytes(&self, upstream: &str) -> BytesFrom {
        BytesFrom {
            total: self.upstream_bytes.clone(),
            upstream: self
                .upstream
                .bytes
                .get_or_create(&UpstreamLabel {
                    upstream: upstream.to_string(),
                })
                .clone(),
        }
    }
}

/// Where one download counts its bytes (see [`CacheMetrics::upstream_bytes`]).
pub(crate) struct BytesFrom {
    total: Counter,
    upstream: Counter,
}

impl BytesFrom {
    pub(crate) fn add(&self, n: u64) {
        self.total.inc_by(n);
        self.upstream.inc_by(n);
    }
}
