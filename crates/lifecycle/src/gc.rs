//! Online garbage collection, mark and sweep, while berth serves.
//!
//! Mark: every manifest revision of every repository is live, with the
//! blobs and child manifests it references. Sweep: a stored blob that is not
//! marked, whose bytes and every link to it are older than the grace period,
//! is deleted with its links. Deletion goes through the registry's GC fence
//! (`Registry::gc_delete_blob`), so a manifest push that references the blob
//! meanwhile either keeps it or is told it is missing: never a pushed image
//! that lacks a blob. A deleted manifest (DELETE by digest) stops protecting
//! its blobs, so the next collection frees their space.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use berth_reference::{Digest, RepositoryName};
use berth_registry::Registry;
use serde::{Deserialize, Serialize};

use crate::Result;

/// At most this many would-be deletions are listed by name in a report.
const LISTED: usize = 100;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub repositories: usize,
    pub manifests: usize,
    /// Blobs (and manifests) some manifest keeps.
    pub marked: usize,
    /// Blobs stored when the sweep began.
    pub blobs_seen: usize,
    /// Unreferenced, but within the grace period.
    pub blobs_young: usize,
    /// Unreferenced, but a push referenced them while GC ran.
    pub blobs_fenced: usize,
    /// Deleted (or, in a dry run, that would be).
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    /// The first few of those, by digest.
    pub deleted: Vec<String>,
    pub duration_ms: u64,
    /// Not run: another replica on the same storage was collecting.
    #[serde(default)]
    pub skipped: bool,
}

/// The newest of a blob's links, and whether a cache fill made every one
/// of them (the blob can be fetched again).
struct Links {
    newest: Option<SystemTime>,
    all_cached: bool,
}

/// Read the links of a sweep candidate (only candidates: reading every
/// link of a store of 100,000 blobs cost the mark phase most of its time).
async fn links_of(registry: &Registry, digest: &Digest, repos: &[RepositoryName]) -> Result<Links> {
    let mut l = Links {
        newest: None,
        all_cached: true,
    };
    for repo in repos {
        if let Some(link) = registry.layer_link(repo, digest).await? {
            l.newest = l.newest.max(Some(link.made));
            l.all_cached &= link.cached;
        }
    }
    Ok(l)
}

/// How long unreferenced content is kept.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// Anything pushed: its manifest may still be on its way.
    pub pushed: Duration,
    /// Blobs only cache fills brought (eviction shortens this: nobody is
    /// pushing a manifest for them, and they can be fetched again).
    pub cached: Duration,
}

impl Grace {
    pub fn uniform(d: Duration) -> Grace {
        Grace {
            pushed: d,
            cached: d,
        }
    }
}

pub async fn collect(registry: &Registry, grace: Grace, dry_run: bool) -> Result<GcReport> {
    let started = Instant::now();
    let cutoff_of = |d: Duration| {
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let (pushed_cutoff, cached_cutoff) = (cutoff_of(grace.pushed), cutoff_of(grace.cached));
    // From here on every manifest push records what it references.
    let mut report = GcReport::default();
    let Some(guard) = registry.gc_begin().await? else {
        // Another replica on the same bucket is collecting: one at a time.
        report.skipped = true;
        tracing::info!("garbage collection skipped: another replica is collecting");
        return Ok(report);
    };
    // Whatever happens in between, the marker goes: other replicas' pushes
    // wait while it stands.
    let outcome = async {
        let mut marked: HashSet<Digest> = HashSet::new();
        // Which repositories link each blob, by index into `repos`.
        let repos = registry.repositories().await?;
        let mut linked_in: HashMap<Digest, Vec<u32>> = HashMap::new();
        for (index, repo) in repos.iter().enumerate() {
            report.repositories += 1;
            for digest in registry.manifest_revisions(repo).await? {
                report.manifests += 1;
                if let Some(refs) = registry.manifest_references(repo, &digest).await? {
                    marked.extend(refs.blobs);
                    marked.extend(refs.manifests);
                }
                marked.insert(digest);
            }
            for digest in registry.layer_link_digests(repo).await? {
                linked_in.entry(digest).or_default().push(index as u32);
            }
        }
        report.marked = marked.len();

        for digest in registry.storage().blob_list().await? {
            report.blobs_seen += 1;
            if marked.contains(&digest) {
                continue;
            }
            let Some(stat) = registry.storage().blob_stat(&digest).await? else {
                continue;
            };
            let holders: Vec<RepositoryName> = linked_in
                .remove(&digest)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| repos.get(i as usize).cloned())
                .collect();
            if stat.modified > pushed_cutoff.max(cached_cutoff) {
                // Within both grace periods: no need to read its links.
                report.blobs_young += 1;
                continue;
            }
            let linked = links_of(registry, &digest, &holders).await?;
            // A blob no repository links (a manifest's own bytes, or a store
            // from before links) counts as pushed.
            let cutoff = if linked.all_cached && !holders.is_empty() {
                cached_cutoff
            } else {
                pushed_cutoff
            };
            if stat.modified > cutoff || linked.newest.is_some_and(|t| t > cutoff) {
                report.blobs_young += 1;
                continue;
            }
            let freed = if dry_run {
                Some(stat.size)
            } else {
                registry
                    .gc_delete_blob(&guard, &digest, stat.size, &holders)
                    .await?
            };
            match freed {
                Some(bytes) => {
                    report.blobs_deleted += 1;
                    report.bytes_freed += bytes;
                    if report.deleted.len() < LISTED {
                        report.deleted.push(digest.to_string());
                    }
                }
                None => report.blobs_fenced += 1,
            }
        }
        Ok::<(), crate::LifecycleError>(())
    }
    .await;
    registry.gc_end(guard).await?;
    outcome?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
