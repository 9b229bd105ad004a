//! The garbage-collection fence across replicas on one bucket, where the
//! in-process fence (`inventory`) cannot see another process's pushes.
//! No locks or consensus, only documents and the store's read-after-write
//! consistency (S3's, Garage's quorums):
//!
//! - A collecting replica first writes a marker, `_lifecycle/gc/<run>`,
//!   holding the moment its lease ends; it deletes nothing after that
//!   moment (less a margin for clocks), renews the lease while it works,
//!   and removes the marker when its last deletion is done.
//! - A manifest push, once its manifest is stored, lists the markers. None
//!   alive: any collection started later marks from storage that already
//!   holds the manifest, so it keeps what the manifest references. One
//!   alive: the push waits until no marker is (removed, or its lease ran
//!   out), then checks that everything the manifest references is still
//!   stored; whatever a collection deleted before it ended shows now, and
//!   the push is undone and answered MANIFEST_BLOB_UNKNOWN (the client
//!   uploads the blob again) rather than leave an image that lacks a blob.
//!
//! A replica that finds another's marker alive skips its own run, so runs
//! go one at a time; two that start at the same instant are both still
//! safe, since a push waits for every marker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_manifest::Manifest;
use berth_reference::{Digest, RepositoryName};
use berth_storage::DocKey;
use bytes::Bytes;

use crate::{Registry, RegistryError, Result};

/// How long a collection's marker holds without renewal.
const LEASE: Duration = Duration::from_secs(10 * 60);
/// A collection stops deleting this long before its lease ends, so that
/// replicas whose clocks differ by less than this agree it ended.
const CLOCK_MARGIN: Duration = Duration::from_secs(60);
/// How long a push waits at most for collections to end.
const PUSH_WAIT: Duration = Duration::from_secs(20 * 60);

fn markers() -> Result<DocKey> {
    Ok(DocKey::new(["_lifecycle", "gc"])?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A collection's marker, held by its `GcGuard`.
pub(crate) struct Marker {
    key: DocKey,
    until: std::sync::atomic::AtomicU64,
}

impl Marker {
    /// May the collection still delete? (Its lease, less the margin.)
    pub(crate) fn may_delete(&self) -> bool {
        now() + CLOCK_MARGIN.as_secs() < self.until.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Registry {
    /// Lease ends of the markers alive now.
    async fn live_markers(&self) -> Result<Vec<(String, u64)>> {
        let dir = markers()?;
        let mut alive = Vec::new();
        for name in self.storage.doc_list(&dir).await? {
            let Some(v) = self.storage.doc_get(&dir.join(&name)?).await? else {
                continue;
            };
            let until: u64 = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if until > now() {
                alive.push((name, until));
            } else {
                // A crashed collector's leftover.
                let _ = self.storage.doc_delete(&dir.join(&name)?).await;
            }
        }
        Ok(alive)
    }

    /// Announce a collection; `None` when another replica's is running.
    pub(crate) async fn shared_gc_begin(&self) -> Result<Option<Marker>> {
        if !self.live_markers().await?.is_empty() {
            return Ok(None);
        }
        let key = markers()?.join(&berth_storage::UploadId::new_random().to_string())?;
        let until = now() + LEASE.as_secs();
        self.storage
            .doc_put(&key, Bytes::from(until.to_string()))
            .await?;
        Ok(Some(Marker {
            key,
            until: until.into(),
        }))
    }

    /// Extend the lease once half of it has passed.
    pub(crate) async fn shared_gc_renew(&self, m: &Marker) -> Result<()> {
        let until = m.until.load(std::sync::atomic::Ordering::SeqCst);
        if until.saturating_sub(now()) < LEASE.as_secs() / 2 && m.may_delete() {
            let next = now() + LEASE.as_secs();
            self.storage
                .doc_put(&m.key, Bytes::from(next.to_string()))
                .await?;
            m.until.store(next, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    /// The collection's last deletion is done: pushes waiting may go on.
    pub(crate) async fn shared_gc_end(&self, m: Marker) -> Result<()> {
        self.storage.doc_delete(&m.key).await?;
        Ok(())
    }

    /// After a manifest push stored `manifest` as `digest` in `repo`, on
    /// storage other replicas collect: wait out running collections, then
    /// make sure they left everything it references (see the module docs).
    pub(crate) async fn shared_fence_after_push(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
    ) -> Result<()> {
        if self.memo_ttl.is_none() || self.live_markers().await?.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + PUSH_WAIT;
        while !self.live_markers().await?.is_empty() {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let referenced = manifest.blobs.iter().chain(&manifest.manifests);
        for r in referenced {
            if self.storage.blob_size(&r.digest).await?.is_none() {
                tracing::warn!(repository = %repo, manifest = %digest, missing = %r.digest,
                    "a collection on another replica deleted a blob this push references; undoing the push");
                let _ = self
                    .manifest_delete(repo, &berth_reference::ManifestRef::Digest(digest.clone()))
                    .await;
                return Err(RegistryError::ManifestBlobUnknown(r.digest.clone()));
            }
        }
        Ok(())
    }
}
