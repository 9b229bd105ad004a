//! Storage lifecycle: what keeps a registry's disk correct and bounded while
//! it serves. It owns the jobs that remove content, never the paths that add
//! it:
//!
//! - `gc`: online garbage collection (mark what manifests reference, sweep
//!   the rest past a grace period, fenced against concurrent pushes through
//!   `berth_registry`'s GC fence);
//! - `uploads`: expiry of idle upload sessions and the records crashes leave;
//! - `retention`: per-repository rules on tags and untagged manifests;
//! - `evict`: the size-capped cache (least recently pulled images first);
//! - `scrub`: re-hashing every blob, quarantining any that does not match;
//! - `usage`: what is stored and for whom (`berth du`);
//! - `metrics`: runs, bytes freed, durations, for `/metrics`;
//! - `lease`: one job at a time across replicas sharing a bucket.
//!
//! [`Lifecycle`] runs one job at a time: on a schedule inside `berth serve`,
//! on demand through the admin API, or from `berth gc` on a stopped root.
//! Replicas on one bucket take turns through `lease`: a job another replica
//! is running is skipped (its report says `skipped`).
#![forbid(unsafe_code)]

pub mod evict;
pub mod gc;
mod lease;
pub mod metrics;
pub mod retention;
pub mod scrub;
pub mod uploads;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use berth_registry::Registry;

pub use evict::{EvictReport, EvictionConfig};
pub use gc::GcReport;
pub use metrics::LifecycleMetrics;
pub use retention::{RetentionReport, RetentionRule};
pub use scrub::ScrubReport;
pub use uploads::UploadsReport;
pub use usage::human_bytes;
pub use usage::UsageReport;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Registry(#[from] berth_registry::RegistryError),
    #[error(transparent)]
    Storage(#[from] berth_storage::StorageError),
    #[error(transparent)]
    Key(#[from] berth_storage::KeyError),
}

pub type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// Settings of the lifecycle jobs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Content younger than this is never collected: a push uploads its
    /// blobs before the manifest that references them.
    pub gc_grace: Duration,
    /// Upload sessions idle this long are ended and their bytes freed.
    pub upload_ttl: Duration,
    /// How often `berth serve` runs GC and upload expiry; `None`: never.
    pub gc_interval: Option<Duration>,
    pub eviction: EvictionConfig,
    /// Applied, first match per repository, before each collection.
    pub retention: Vec<RetentionRule>,
}

pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// How long the evictor rests after an eviction that could not free enough.
const EVICT_BACKOFF: Duration = Duration::from_secs(60);
/// On storage replicas share, how often the evictor measures the store
/// anew: its own count of bytes stored misses what the others store.
const SHARED_REMEASURE: Duration = Duration::from_secs(10);

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            gc_grace: DEFAULT_GC_GRACE,
            upload_ttl: DEFAULT_UPLOAD_TTL,
            gc_interval: Some(DEFAULT_GC_INTERVAL),
            eviction: EvictionConfig::default(),
            retention: Vec::new(),
        }
    }
}

/// One collection: GC and upload expiry together, as `berth gc` reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CollectReport {
    pub dry_run: bool,
    /// Not run: another replica on the same storage holds the lifecycle
    /// lease (`gc.skipped` says the same).
    #[serde(default)]
    pub skipped: bool,
    pub retention: RetentionReport,
    pub gc: GcReport,
    pub uploads: UploadsReport,
}

/// The lifecycle jobs of one registry. Cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    registry: Arc<Registry>,
    config: LifecycleConfig,
    metrics: LifecycleMetrics,
    /// One job at a time: two collections would only race each other.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Lifecycle {
    pub fn new(registry: Arc<Registry>, config: LifecycleConfig) -> Lifecycle {
        Lifecycle {
            registry,
            config,
            metrics: LifecycleMetrics::default(),
            running: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn metrics(&self) -> &LifecycleMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// Apply retention rules, expire idle uploads, then collect garbage;
    /// with `dry_run`, only say what would go (a dry run's GC figures do
    /// not count what retention would remove).
    pub async fn collect(&self, dry_run: bool) -> Result<CollectReport> {
        let _one = self.running.lock().await;
        let Some(lease) = lease::Lease::acquire(&self.registry, "collect").await? else {
            tracing::info!(target: "berth::lifecycle", "garbage collection skipped: another replica is running a lifecycle job");
            return Ok(CollectReport {
                dry_run,
                skipped: true,
                retention: Default::default(),
                gc: GcReport {
                    skipped: true,
                    ..Default::default()
                },
                uploads: Default::default(),
            });
        };
        let report = self.collect_leased(dry_run).await;
        lease.release().await?;
        report
    }

    async fn collect_leased(&self, dry_run: bool) -> Result<CollectReport> {
        let retention = retention::apply(
            &self.registry,
            &self.config.retention,
            self.config.gc_grace,
            dry_run,
        )
        .await?;
        let uploads = uploads::expire(&self.registry, self.config.upload_ttl, dry_run).await?;
        let gc = gc::collect(
            &self.registry,
            gc::Grace::uniform(self.config.gc_grace),
            dry_run,
        )
        .await?;
        if !dry_run {
            self.metrics.record(&gc, &uploads);
            // Measuring usage reads every link again: after the answer, not
            // before it (it doubled `berth gc`'s time on a large store).
            let (registry, metrics) = (self.registry.clone(), self.metrics.clone());
            tokio::spawn(async move {
                match usage::usage(&registry).await {
                    Ok(u) => metrics.record_usage(&u),
                    Err(e) => {
                        tracing::warn!(target: "berth::lifecycle", "measuring usage failed: {e}")
                    }
                }
            });
        }
        tracing::info!(
            target: "berth::lifecycle",
            dry_run,
            blobs_deleted = gc.blobs_deleted,
            bytes_freed = gc.bytes_freed,
            uploads_expired = uploads.expired,
            upload_bytes_freed = uploads.bytes_freed,
            millis = gc.duration_ms,
            "garbage collection finished"
        );
        Ok(CollectReport {
            dry_run,
            skipped: gc.skipped,
            retention,
            gc,
            uploads,
        })
    }

    /// Re-hash every blob (see `scrub`), at most `rate` bytes a second.
    pub async fn scrub(&self, rate: Option<u64>) -> Result<ScrubReport> {
        let Some(lease) = lease::Lease::acquire(&self.registry, "scrub").await? else {
            tracing::info!(target: "berth::lifecycle", "scrub skipped: another replica is running a lifecycle job");
            return Ok(ScrubReport {
                skipped: true,
                ..Default::default()
            });
        };
        let report = scrub::scrub(&self.registry, rate).await;
        lease.release().await?;
        let report = report?;
        self.metrics.scrub_runs.inc();
        self.metrics
            .scrub_corrupt
            .inc_by(report.corrupt.len() as u64);
        self.metrics.scrub_bytes.inc_by(report.bytes_checked);
        tracing::info!(target: "berth::lifecycle", blobs = report.blobs_checked,
            bytes = report.bytes_checked, corrupt = report.corrupt.len(),
            millis = report.duration_ms, "scrub finished");
        Ok(report)
    }

    /// What is stored and for whom (also exported on `/metrics`).
    pub async fn usage(&self) -> Result<UsageReport> {
        let u = usage::usage(&self.registry).await?;
        self.metrics.record_usage(&u);
        Ok(u)
    }

    /// Evict cached images if the store is over its cap or the device over
    /// its high watermark (see `evict`).
    pub async fn evict(&self) -> Result<EvictReport> {
        let _one = self.running.lock().await;
        let Some(lease) = lease::Lease::acquire(&self.registry, "evict").await? else {
            tracing::info!(target: "berth::lifecycle", "eviction skipped: another replica is running a lifecycle job");
            return Ok(EvictReport {
                skipped: true,
                ..Default::default()
            });
        };
        let report =
            evict::evict(&self.registry, &self.config.eviction, self.config.gc_grace).await;
        lease.release().await?;
        let report = report?;
        self.metrics.stored_bytes.set(report.stored_after as i64);
        if report.images_evicted > 0 {
            self.metrics.evictions.inc_by(report.images_evicted as u64);
            self.metrics.evicted_bytes.inc_by(report.bytes_freed);
            tracing::info!(target: "berth::lifecycle", images = report.images_evicted,
                bytes_freed = report.bytes_freed, stored = report.stored_after, "eviction finished");
        }
        Ok(report)
    }

    /// Watch the cap and the watermark: a cheap check every `check_every`
    /// (the bytes stored since the last measurement, and a statvfs), a
    /// full measurement and eviction only when one is passed.
    pub fn spawn_evictor(&self) -> Option<tokio::task::JoinHandle<()>> {
        let config = self.config.eviction.clone();
        if config.max_size.is_none() && config.high_watermark.is_none() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut stored: Option<u64> = None;
            let mut measured_at = tokio::time::Instant::now();
            // After an eviction that found nothing more to remove (the rest
            // pinned or too recent, or a device others filled), wait until
            // something is stored or `EVICT_BACKOFF` passes: re-measuring
            // the whole store every few seconds would change nothing.
            let mut stuck_until: Option<tokio::time::Instant> = None;
            let mut tick = tokio::time::interval(config.check_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let added = this.registry.take_stored();
                if added == 0 && stuck_until.is_some_and(|t| tokio::time::Instant::now() < t) {
                    continue;
                }
                stuck_until = None;
                if this.registry.is_shared() && measured_at.elapsed() >= SHARED_REMEASURE {
                    stored = None;
                }
                let estimate = match stored {
                    Some(s) => s + added,
                    None => match evict::stored_bytes(&this.registry).await {
                        Ok(s) => {
                            measured_at = tokio::time::Instant::now();
                            s
                        }
                        Err(e) => {
                            tracing::warn!(target: "berth::lifecycle", "measuring the store failed: {e}");
                            continue;
                        }
                    },
                };
                stored = Some(estimate);
                this.metrics.stored_bytes.set(estimate as i64);
                if evict::needed(&this.registry, &config, estimate).await == 0 {
                    continue;
                }
                match this.evict().await {
                    Ok(report) if report.skipped => {
                        // Another replica is evicting: measure again after it.
                        stored = None;
                        stuck_until = Some(tokio::time::Instant::now() + SHARED_REMEASURE);
                    }
                    Ok(report) => {
                        stored = Some(report.stored_after);
                        if report.needed > 0 {
                            // Images too recent now become candidates once
                            // `min_age` has passed: no longer a wait than that.
                            let rest = if report.images_too_recent > 0 {
                                config.min_age.min(EVICT_BACKOFF)
                            } else {
                                EVICT_BACKOFF
                            };
                            stuck_until = Some(tokio::time::Instant::now() + rest);
                        }
                    }
                    Err(e) => {
                        this.metrics.failures.inc();
                        stored = None;
                        tracing::warn!(target: "berth::lifecycle", "eviction failed: {e}");
                    }
                }
            }
        }))
    }

    /// Run [`Lifecycle::collect`] every `gc_interval` until the task is
    /// dropped. Failures are logged; the next run tries again.
    pub fn spawn_schedule(&self) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.config.gc_interval?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once: wait one interval after start.
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.collect(false).await {
                    this.metrics.failures.inc();
                    tracing::warn!(target: "berth::lifecycle", "scheduled garbage collection failed: {e}");
                }
            }
        }))
    }
}
