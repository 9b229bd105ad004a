//! Lifecycle counters for `/metrics`: GC runs, what they freed and how long
//! they took; expired uploads; storage use (with the last usage report kept
//! whole for the web UI).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as PromRegistry;

use crate::{GcReport, UploadsReport, UsageReport};

/// `upstream="docker.io"`, or `upstream="local"` for local repositories.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Debug, Default, Clone)]
pub struct LifecycleMetrics {
    pub gc_runs: Counter,
    pub failures: Counter,
    pub blobs_deleted: Counter,
    pub bytes_freed: Counter,
    pub last_duration_ms: Gauge,
    pub uploads_expired: Counter,
    pub upload_bytes_freed: Counter,
    pub uploads_open: Gauge,
    pub evictions: Counter,
    pub evicted_bytes: Counter,
    pub stored_bytes: Gauge,
    pub scrub_runs: Counter,
    pub scrub_bytes: Counter,
    pub scrub_corrupt: Counter,
    pub upstream_bytes: Family<UpstreamLabel, Gauge>,
    pub pinned_bytes: Gauge,
    pub cached_bytes: Gauge,
    /// The last collection's usage report, and when it was made.
    pub last_usage: Arc<Mutex<Option<(SystemTime, UsageReport)>>>,
}

impl LifecycleMetrics {
    pub fn register(&self, prom: &mut PromRegistry) {
        let r = prom.sub_registry_with_prefix("berth_gc");
        r.register("runs", "Garbage collections finished", self.gc_runs.clone());
        r.register(
            "failures",
            "Garbage collections that failed",
            self.failures.clone(),
        );
        r.register(
            "blobs_deleted",
            "Blobs deleted by garbage collection",
            self.blobs_deleted.clone(),
        );
        r.register(
            "bytes_freed",
            "Blob bytes freed by garbage collection",
            self.bytes_freed.clone(),
        );
        r.register(
            "last_duration_milliseconds",
            "How long the last garbage collection took",
            self.last_duration_ms.clone(),
        );
        r.register(
            "uploads_expired",
            "Idle upload sessions ended",
            self.uploads_expired.clone(),
        );
        r.register(
            "upload_bytes_freed",
            "Bytes of idle upload sessions freed",
            self.upload_bytes_freed.clone(),
        );
        r.register(
            "uploads_open",
            "Upload sessions held in storage at the last collection",
            self.uploads_open.clone(),
        );
        let c = prom.sub_registry_with_prefix("berth_cache");
        c.register(
            "evictions",
            "Cached images evicted (least recently pulled first)",
            self.evictions.clone(),
        );
        c.register(
            "evicted_bytes",
            "Blob bytes freed by evicting cached images",
            self.evicted_bytes.clone(),
        );
        let sc = prom.sub_registry_with_prefix("berth_scrub");
        sc.register("runs", "Scrubs finished", self.scrub_runs.clone());
        sc.register(
            "bytes",
            "Bytes re-hashed by scrubs",
            self.scrub_bytes.clone(),
        );
        sc.register(
            "corrupt",
            "Blobs found not to match their digest (quarantined)",
            self.scrub_corrupt.clone(),
        );
        let s = prom.sub_registry_with_prefix("berth_storage");
        s.register(
            "stored_bytes",
            "Bytes of blobs stored (measured by the evictor)",
            self.stored_bytes.clone(),
        );
        s.register(
            "upstream_bytes",
            "Bytes of blobs held for each upstream's mirrors, and for local repositories (at the last collection)",
            self.upstream_bytes.clone(),
        );
        s.register(
            "pinned_bytes",
            "Bytes of pushed or loaded blobs, never evicted (at the last collection)",
            self.pinned_bytes.clone(),
        );
        s.register(
            "cached_bytes",
            "Bytes of blobs only the cache holds, evictable (at the last collection)",
            self.cached_bytes.clone(),
        );
    }

    /// The last usage report, if a collection made one.
    pub fn usage(&self) -> Option<(SystemTime, UsageReport)> {
        self.last_usage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn record_usage(&self, usage: &UsageReport) {
        *self.last_usage.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((SystemTime::now(), usage.clone()));
        self.stored_bytes.set(usage.total.bytes as i64);
        self.pinned_bytes.set(usage.pinned.bytes as i64);
        self.cached_bytes.set(usage.cached.bytes as i64);
        self.uploads_open.set(usage.uploads.blobs as i64);
        self.upstream_bytes.clear();
        for (group, b) in &usage.by_upstream {
            self.upstream_bytes
                .get_or_create(&UpstreamLabel {
                    upstream: group.clone(),
                })
                .set(b.bytes as i64);
        }
    }

    pub(crate) fn record(&self, gc: &GcReport, uploads: &UploadsReport) {
        self.gc_runs.inc();
        self.blobs_deleted.inc_by(gc.blobs_deleted as u64);
        self.bytes_freed.inc_by(gc.bytes_freed);
        self.last_duration_ms.set(gc.duration_ms as i64);
        self.uploads_expired.inc_by(uploads.expired as u64);
        self.upload_bytes_freed.inc_by(uploads.bytes_freed);
        self.uploads_open
            .set(uploads.open.saturating_sub(uploads.expired) as i64);
    }
}
