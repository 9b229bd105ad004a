//! Cache counters, exported on `/metrics` through the Prometheus registry
//! the server hands in.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry as PromRegistry;

#[derive(Debug, Default, Clone)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub upstream_requests: Counter,
    pub upstream_bytes: Counter,
    pub coalesced: Counter,
    pub stale_serves: Counter,
    pub fill_failures: Counter,
    pub uncached_serves: Counter,
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
    }
}
