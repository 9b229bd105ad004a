//! Upload sessions that clients abandoned: ended once idle longer than
//! `upload_ttl`, their bytes freed; owner records whose bytes are gone
//! (left by a crash) removed; and the partial writes of writers that died
//! (multipart uploads in an object store) aborted.

use std::time::SystemTime;

use berth_registry::Registry;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadsReport {
    /// Sessions storage held when expiry began.
    pub open: usize,
    /// Ended (or, in a dry run, that would be).
    pub expired: usize,
    pub bytes_freed: u64,
    /// Owner records without bytes, removed.
    pub orphan_records: usize,
    /// Partial writes nothing will finish (an object store's multipart
    /// uploads left by a killed writer), aborted.
    #[serde(default)]
    pub abandoned_writes: usize,
}

pub async fn expire(
    registry: &Registry,
    ttl: std::time::Duration,
    dry_run: bool,
) -> Result<UploadsReport> {
    let idle_since = SystemTime::now()
        .checked_sub(ttl)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let listed = registry.storage().upload_list().await?;
    let mut report = UploadsReport {
        open: listed.len(),
        ..Default::default()
    };
    for upload in listed.iter().filter(|u| u.modified < idle_since) {
        let freed = if dry_run {
            Some(upload.size)
        } else {
            registry.upload_expire(&upload.id, idle_since).await?
        };
        if let Some(bytes) = freed {
            report.expired += 1;
            report.bytes_freed += bytes;
        }
    }
    if !dry_run {
        report.orphan_records = registry.upload_orphans_purge().await?;
        // A writer alive that long has long since been told its request failed.
        report.abandoned_writes = registry.storage().abandoned_writes_sweep(ttl).await?;
    }
    Ok(report)
}
