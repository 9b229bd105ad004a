//! Scrub: re-hash every stored blob (manifests included, they are blobs)
//! against its name, online and rate-limited, and move any that does not
//! match into `ROOT/quarantine/`, so it is never served again: a mirror
//! fetches it anew on the next pull, a pushed one reads as missing (404)
//! until it is pushed again. Quarantined files are kept for inspection.

use std::time::{Duration, Instant};

use berth_registry::Registry;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    /// Digests whose bytes did not hash to their name.
    pub corrupt: Vec<String>,
    /// Of those, moved out of the store.
    pub quarantined: usize,
    /// Blobs that vanished while being checked (deleted by GC meanwhile).
    pub vanished: usize,
    pub duration_ms: u64,
    /// Not run: another replica on the same storage holds the lifecycle
    /// lease.
    #[serde(default)]
    pub skipped: bool,
}

/// Check every blob, reading at most `rate` bytes a second (`None`: as fast
/// as the disk and one core allow).
pub async fn scrub(registry: &Registry, rate: Option<u64>) -> Result<ScrubReport> {
    let started = Instant::now();
    let storage = registry.storage();
    let mut report = ScrubReport::default();
    for digest in storage.blob_list().await? {
        let mut stream = match storage.blob_read(&digest, None).await {
            Ok(s) => s,
            Err(berth_storage::StorageError::BlobNotFound) => {
                report.vanished += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut hasher = digest.algorithm().hasher();
        let mut read_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    report.bytes_checked += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
            if let Some(rate) = rate.filter(|r| *r > 0) {
                // Stay behind the byte budget of the time elapsed.
                let due = Duration::from_secs_f64(report.bytes_checked as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        report.blobs_checked += 1;
        let actual = hasher.finish();
        if read_error.is_none() && actual == digest {
            continue;
        }
        tracing::error!(target: "berth::lifecycle", %digest, %actual, error = ?read_error,
            "scrub: stored blob does not match its digest; quarantining it");
        report.corrupt.push(digest.to_string());
        if storage.blob_quarantine(&digest).await? {
            report.quarantined += 1;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
