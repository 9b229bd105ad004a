//! `berth du`: what the store holds and for whom — blob bytes in all, per
//! upstream (mirrored repositories by registry host) and for local
//! repositories, pinned (pushed) against evictable (cached), and open
//! upload sessions. A blob shared by several groups counts in each of them
//! and once in the total.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_reference::Digest;
use berth_registry::Registry;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bytes {
    pub blobs: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageReport {
    pub total: Bytes,
    /// Mirrored repositories by upstream host; `local` for the rest.
    pub by_upstream: BTreeMap<String, Bytes>,
    /// Blobs some repository holds through a push, a mount or a load.
    pub pinned: Bytes,
    /// Blobs only cache fills brought (eviction may free them).
    pub cached: Bytes,
    pub repositories: usize,
    pub uploads: Bytes,
}

pub async fn usage(registry: &Registry) -> Result<UsageReport> {
    let storage = registry.storage();
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    let mut report = UsageReport::default();
    for d in storage.blob_list().await? {
        if let Some(stat) = storage.blob_stat(&d).await? {
            report.total.blobs += 1;
            report.total.bytes += stat.size;
            sizes.insert(d, stat.size);
        }
    }
    let mut groups: BTreeMap<String, HashSet<Digest>> = BTreeMap::new();
    let mut pinned: HashSet<Digest> = HashSet::new();
    let mut cached: HashSet<Digest> = HashSet::new();
    for repo in registry.repositories().await? {
        report.repositories += 1;
        let group = repo
            .mirror_parts()
            .map_or_else(|| "local".to_string(), |(host, _)| host.into_owned());
        let held = groups.entry(group).or_default();
        for (d, link) in registry.layer_links(&repo).await? {
            held.insert(d.clone());
            if link.cached {
                cached.insert(d);
            } else {
                pinned.insert(d);
            }
        }
        for d in registry.manifest_revisions(&repo).await? {
            held.insert(d.clone());
            pinned.insert(d);
        }
    }
    let add = |into: &mut Bytes, set: &HashSet<Digest>| {
        for d in set {
            if let Some(size) = sizes.get(d) {
                into.blobs += 1;
                into.bytes += size;
            }
        }
    };
    for (group, set) in &groups {
        add(report.by_upstream.entry(group.clone()).or_default(), set);
    }
    add(&mut report.pinned, &pinned);
    let only_cached: HashSet<Digest> = cached.difference(&pinned).cloned().collect();
    add(&mut report.cached, &only_cached);
    for u in storage.upload_list().await? {
        report.uploads.blobs += 1;
        report.uploads.bytes += u.size;
    }
    Ok(report)
}

/// A size as people read it: `512 B`, `1.5 KiB`, `3.2 GiB` (binary units,
/// one decimal). The one spelling of sizes in `berth du`, the client verbs
/// and the web UI.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
