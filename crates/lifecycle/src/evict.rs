//! A size-capped cache. When the blobs stored pass `cache_max_size`, or the
//! device passes its high watermark (90% full by default), the mirrored
//! images pulled least recently are removed until the store is back under
//! 95% of the cap and the device under its low watermark (80%); garbage
//! collection then frees the blobs no remaining manifest uses, so shared
//! layers stay. Never removed: pushed and bundle-loaded content (pinned:
//! only manifests the cache fetched from an upstream are candidates), and
//! images pulled within `min_age`. A full cache evicts; it never refuses a
//! pull (a fill that finds no room streams uncached, see `berth_cache`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use berth_reference::Digest;
use berth_registry::Registry;
use serde::{Deserialize, Serialize};

use crate::gc::{self, Grace};
use crate::Result;

#[derive(Debug, Clone)]
pub struct EvictionConfig {
    /// Cap on the bytes of stored blobs; `None`: no cap.
    pub max_size: Option<u64>,
    /// Device usage (0..1) that starts eviction; `None`: not watched.
    pub high_watermark: Option<f64>,
    /// Device usage eviction brings it down to.
    pub low_watermark: f64,
    /// Images pulled this recently are never evicted.
    pub min_age: Duration,
    /// How often the cheap check (a counter and a statvfs) runs.
    pub check_every: Duration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            max_size: None,
            high_watermark: Some(0.90),
            low_watermark: 0.80,
            min_age: Duration::from_secs(5 * 60),
            check_every: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvictReport {
    /// Blob bytes stored before eviction.
    pub stored_before: u64,
    pub stored_after: u64,
    /// How many bytes eviction set out to free.
    pub needed: u64,
    pub images_evicted: usize,
    pub bytes_freed: u64,
    /// Candidates left alone because they were pulled within `min_age`.
    pub images_too_recent: usize,
    /// Not run: another replica on the same storage holds the lifecycle
    /// lease.
    #[serde(default)]
    pub skipped: bool,
}

/// Bytes of every stored blob.
pub async fn stored_bytes(registry: &Registry) -> Result<u64> {
    Ok(registry.storage().blob_bytes_total().await?)
}

/// How many bytes must go, by the cap and by the device's watermarks.
pub(crate) async fn needed(registry: &Registry, config: &EvictionConfig, stored: u64) -> u64 {
    let by_cap = match config.max_size {
        Some(cap) if stored > cap => stored - cap / 100 * 95,
        _ => 0,
    };
    let by_device = match (config.high_watermark, registry.storage().space().await) {
        (Some(high), Ok(Some(space))) if space.total > 0 => {
            let used = space.total.saturating_sub(space.available);
            if used as f64 > high * space.total as f64 {
                used.saturating_sub((config.low_watermark * space.total as f64) as u64)
            } else {
                0
            }
        }
        _ => 0,
    };
    by_cap.max(by_device)
}

/// Evict until under the cap and the low watermark, or out of candidates.
pub async fn evict(
    registry: &Registry,
    config: &EvictionConfig,
    pushed_grace: Duration,
) -> Result<EvictReport> {
    let stored = stored_bytes(registry).await?;
    let mut report = EvictReport {
        stored_before: stored,
        stored_after: stored,
        needed: needed(registry, config, stored).await,
        ..Default::default()
    };
    if report.needed == 0 {
        return Ok(report);
    }
    let cutoff = SystemTime::now()
        .checked_sub(config.min_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut images = registry.cached_images().await?;
    images.sort_by_key(|i| i.last_pulled);
    report.images_too_recent = images.iter().filter(|i| i.last_pulled > cutoff).count();
    let mut candidates = images.into_iter().filter(|i| i.last_pulled <= cutoff);
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    // Each round removes images worth about what is still needed (shared
    // layers make that an overestimate), collects, and measures again.
    for _round in 0..16 {
        let mut estimate = 0u64;
        let mut removed = 0;
        while estimate < report.needed {
            let Some(image) = candidates.next() else {
                break;
            };
            if let Some(refs) = registry
                .manifest_references(&image.repo, &image.digest)
                .await?
            {
                for d in refs.blobs.iter().chain(std::iter::once(&image.digest)) {
                    let size = match sizes.get(d) {
                        Some(s) => *s,
                        None => {
                            let s = registry.storage().blob_stat(d).await?.map_or(0, |s| s.size);
                            sizes.insert(d.clone(), s);
                            s
                        }
                    };
                    estimate += size;
                }
            }
            tracing::info!(target: "berth::lifecycle", repository = %image.repo, digest = %image.digest,
                "evicting the least recently pulled cached image");
            registry.manifest_evict(&image).await?;
            removed += 1;
        }
        if removed == 0 {
            break;
        }
        report.images_evicted += removed;
        // Blobs only cache fills brought need no grace: nobody is pushing
        // a manifest for them, and they can be fetched again.
        let grace = Grace {
            pushed: pushed_grace,
            cached: Duration::ZERO,
        };
        let collected = gc::collect(registry, grace, false).await?;
        report.bytes_freed += collected.bytes_freed;
        let stored = stored_bytes(registry).await?;
        report.stored_after = stored;
        report.needed = needed(registry, config, stored).await;
        if report.needed == 0 {
            break;
        }
    }
    if report.needed > 0 {
        tracing::warn!(target: "berth::lifecycle", still_needed = report.needed,
            "eviction ran out of candidates: the rest is pinned or pulled too recently");
    }
    Ok(report)
}
