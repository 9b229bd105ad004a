//! What the registry holds, read for the lifecycle jobs in `berth-lifecycle`
//! (garbage collection, upload expiry), and the fence that lets garbage
//! collection run while clients push.
//!
//! The fence: a manifest push can reference a blob that nothing referenced a
//! moment ago (the client HEADs it, finds it, and skips the upload), so GC's
//! mark phase cannot see that reference. Every manifest push holds the read
//! side of `gate` for its whole run; GC takes the write side once, to start,
//! so that pushes already running finish (and are seen by the mark) and every
//! later one records the digests it references in `touched` *before* it
//! checks they exist. A blob HEAD holds the read side too while it records
//! the digest (or renews its link). GC deletes a blob only while holding
//! `touched`, after checking the blob is not in it. So either the push recorded first (GC
//! keeps the blob), or GC deleted first (the push then finds the blob
//! missing and fails with MANIFEST_BLOB_UNKNOWN, and the client uploads it
//! again): a pushed image never lacks a blob.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_manifest::Manifest;
use berth_reference::{Digest, RepositoryName, Tag};
use berth_storage::{DocKey, UploadId};
use bytes::Bytes;

use crate::{layout, Registry, RegistryError, Result};

#[derive(Default)]
pub(crate) struct Fence {
    active: AtomicBool,
    gate: tokio::sync::RwLock<()>,
    touched: tokio::sync::Mutex<HashSet<Digest>>,
}

/// A running garbage collection's hold on the fence; dropping it ends it
/// here, and [`Registry::gc_end`] for the other replicas.
pub struct GcGuard<'a> {
    fence: &'a Fence,
    /// Its marker for other replicas, on shared storage.
    marker: Option<crate::shared_fence::Marker>,
}

impl Drop for GcGuard<'_> {
    fn drop(&mut self) {
        self.fence.active.store(false, Ordering::SeqCst);
    }
}

/// What a stored manifest references.
#[derive(Debug, Clone, Default)]
pub struct References {
    /// Config and layers.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Marks a link made by a cache fill (the blob came from the upstream),
/// as opposed to a push, a mount or an older store.
const CACHED: &str = "cached";

/// The value of a layer link: when it was made, in seconds since the
/// epoch, and ` cached` when a cache fill made it.
pub(crate) fn link_stamp() -> Bytes {
    Bytes::from(now_secs().to_string())
}

fn link_stamp_cached() -> Bytes {
    Bytes::from(format!("{} {CACHED}", now_secs()))
}

/// A layer link as stored: links written before links carried a time
/// (empty values) count as old, pushed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub made: SystemTime,
    /// Made by a cache fill: the content can be fetched again.
    pub cached: bool,
}

fn parse_link(value: &[u8]) -> Link {
    let text = std::str::from_utf8(value).unwrap_or_default();
    let mut words = text.split_whitespace();
    let made = words
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
    Link {
        made,
        cached: words.next() == Some(CACHED),
    }
}

fn link_time(value: &[u8]) -> SystemTime {
    parse_link(value).made
}

/// A manifest revision's record: its media type and when it was stored.
pub(crate) fn revision_record(media_type: &str) -> Bytes {
    Bytes::from(format!("{media_type} {}", now_secs()))
}

/// The media type and store time of a revision record (older stores hold
/// the media type alone: stored long ago).
pub(crate) fn parse_revision(value: &[u8]) -> (String, SystemTime) {
    let text = String::from_utf8_lossy(value);
    let mut words = text.split_whitespace();
    let media_type = words.next().unwrap_or_default().to_string();
    let at = words
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
    (media_type, at)
}

/// A tag's record: the digest it points at and when it was pushed.
pub(crate) fn tag_record(digest: &Digest) -> Bytes {
    Bytes::from(format!("{digest} {}", now_secs()))
}

/// When a tag was pushed, from its record (older stores: long ago).
fn tag_pushed_at(value: &[u8]) -> SystemTime {
    let text = String::from_utf8_lossy(value);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// A tag with what retention weighs: when it was pushed and last pulled.
#[derive(Debug, Clone)]
pub struct TagActivity {
    pub tag: Tag,
    pub digest: Digest,
    pub pushed: SystemTime,
    /// `None`: never pulled since pulls were recorded.
    pub pulled: Option<SystemTime>,
}

/// A manifest the cache fetched from an upstream, and when it was last
/// pulled: what eviction may remove, least recently pulled first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    pub repo: RepositoryName,
    pub digest: Digest,
    pub last_pulled: SystemTime,
}

/// A pull is written down at most this often per manifest (a pull of a hot
/// image costs no write).
const PULL_NOTE_EVERY: Duration = Duration::from_secs(60);

/// Digests under `<repo>/<kind>/<alg>/<hex>` document keys.
async fn digests_under(registry: &Registry, prefix: DocKey) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in registry.storage.doc_list(&prefix).await? {
        for hex in registry.storage.doc_list(&prefix.join(&alg)?).await? {
            if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                out.push(d);
            }
        }
    }
    Ok(out)
}

impl Registry {
    /// Every repository, read from storage (not the in-memory catalog).
    pub async fn repositories(&self) -> Result<Vec<RepositoryName>> {
        Ok(self
            .walk_repositories()
            .await?
            .into_iter()
            .filter_map(|r| r.parse().ok())
            .collect())
    }

    /// The manifests stored in a repository.
    pub async fn manifest_revisions(&self, repo: &RepositoryName) -> Result<Vec<Digest>> {
        digests_under(
            self,
            DocKey::new([layout::REPOSITORIES, repo.as_str(), layout::MANIFESTS])?,
        )
        .await
    }

    /// The blobs linked into a repository, with how each link was made.
    pub async fn layer_links(&self, repo: &RepositoryName) -> Result<Vec<(Digest, Link)>> {
        let prefix = DocKey::new([layout::REPOSITORIES, repo.as_str(), layout::LAYERS])?;
        let mut out = Vec::new();
        for d in digests_under(self, prefix).await? {
            if let Some(v) = self.storage.doc_get(&layout::layer_link(repo, &d)?).await? {
                out.push((d, parse_link(&v)));
            }
        }
        Ok(out)
    }

    /// Record that a manifest the cache stored was fetched from upstream
    /// just now (it is evictable from here on).
    pub(crate) async fn mark_cached(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.storage
            .doc_put(&layout::cached_record(repo, digest)?, link_stamp())
            .await?;
        Ok(())
    }

    /// A manifest pushed into a mirror repository is pinned: eviction
    /// leaves it (and what it references) alone.
    pub(crate) async fn pin(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        if repo.mirror_parts().is_some() {
            self.storage
                .doc_delete(&layout::cached_record(repo, digest)?)
                .await?;
        }
        Ok(())
    }

    /// A client pulled this manifest of a mirrored repository: renew its
    /// place in the eviction order (written at most once a minute).
    pub async fn note_pulled(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let k = crate::memo::key(repo.as_str(), &digest.to_string());
        {
            let mut pulled = self.pulled.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if pulled
                .get(&k)
                .is_some_and(|t| now.duration_since(*t) < PULL_NOTE_EVERY)
            {
                return Ok(());
            }
            // A bounded hint: forgetting only costs one more write.
            if pulled.len() > 100_000 {
                pulled.clear();
            }
            pulled.insert(k, now);
        }
        let record = layout::cached_record(repo, digest)?;
        if self.storage.doc_get(&record).await?.is_some() {
            self.storage.doc_put(&record, link_stamp()).await?;
        }
        Ok(())
    }

    /// A client resolved this tag: write it down (at most once a minute
    /// per tag) for retention's `pulled_within` and `keep_last`.
    pub(crate) async fn note_tag_pulled(&self, repo: &RepositoryName, tag: &Tag) {
        let k = crate::memo::key(repo.as_str(), tag.as_str());
        {
            let mut pulled = self.pulled.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if pulled
                .get(&k)
                .is_some_and(|t| now.duration_since(*t) < PULL_NOTE_EVERY)
            {
                return;
            }
            if pulled.len() > 100_000 {
                pulled.clear();
            }
            pulled.insert(k, now);
        }
        let written = match layout::tag_pull(repo, tag) {
            Ok(key) => self
                .storage
                .doc_put(&key, link_stamp())
                .await
                .map_err(RegistryError::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            tracing::debug!(repository = %repo, %tag, "recording a tag pull failed: {e}");
        }
    }

    /// Every tag of a repository with its push and last pull times.
    pub async fn tag_activity(&self, repo: &RepositoryName) -> Result<Vec<TagActivity>> {
        let mut out = Vec::new();
        for name in self.storage.doc_list(&layout::tags(repo)?).await? {
            let Ok(tag) = name.parse::<Tag>() else {
                continue;
            };
            let Some(value) = self.storage.doc_get(&layout::tag(repo, &tag)?).await? else {
                continue;
            };
            let Some(digest) = self.tag_lookup(repo, &tag).await? else {
                continue;
            };
            let pulled = self
                .storage
                .doc_get(&layout::tag_pull(repo, &tag)?)
                .await?
                .map(|v| link_time(&v));
            out.push(TagActivity {
                pushed: tag_pushed_at(&value),
                tag,
                digest,
                pulled,
            });
        }
        Ok(out)
    }

    /// When a manifest revision was stored (`None`: not in the repository).
    pub async fn revision_stored_at(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<SystemTime>> {
        Ok(self
            .storage
            .doc_get(&layout::manifest_revision(repo, digest)?)
            .await?
            .map(|v| parse_revision(&v).1))
    }

    /// Remove a tag (retention); its pull record too.
    pub async fn tag_delete(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        let removed = self.tag_remove(repo, tag).await?;
        self.storage
            .doc_delete(&layout::tag_pull(repo, tag)?)
            .await?;
        Ok(removed)
    }

    /// Every evictable manifest, in no particular order.
    pub async fn cached_images(&self) -> Result<Vec<CachedImage>> {
        let mut out = Vec::new();
        for repo in self.repositories().await? {
            if repo.mirror_parts().is_none() {
                continue;
            }
            let prefix = DocKey::new([layout::REPOSITORIES, repo.as_str(), layout::CACHED])?;
            for digest in digests_under(self, prefix).await? {
                if let Some(v) = self
                    .storage
                    .doc_get(&layout::cached_record(&repo, &digest)?)
                    .await?
                {
                    out.push(CachedImage {
                        repo: repo.clone(),
                        digest,
                        last_pulled: link_time(&v),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Remove a cached manifest (its tags, its referrer entry, its record);
    /// garbage collection then frees the blobs nothing else uses.
    pub async fn manifest_evict(&self, image: &CachedImage) -> Result<()> {
        match self
            .manifest_delete(
                &image.repo,
                &berth_reference::ManifestRef::Digest(image.digest.clone()),
            )
            .await
        {
            Ok(()) | Err(RegistryError::ManifestUnknown(_)) => {}
            Err(e) => return Err(e),
        }
        self.storage
            .doc_delete(&layout::cached_record(&image.repo, &image.digest)?)
            .await?;
        Ok(())
    }

    /// Bytes a cache fill just stored (eviction checks its cap cheaply).
    pub fn note_stored(&self, bytes: u64) {
        self.stored_since_scan.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes stored since the last call (by pushes and fills).
    pub fn take_stored(&self) -> u64 {
        self.stored_since_scan.swap(0, Ordering::Relaxed)
    }

    /// The blobs linked into a repository (names only: no link is read).
    pub async fn layer_link_digests(&self, repo: &RepositoryName) -> Result<Vec<Digest>> {
        digests_under(
            self,
            DocKey::new([layout::REPOSITORIES, repo.as_str(), layout::LAYERS])?,
        )
        .await
    }

    /// How a blob was linked into a repository, if it is.
    pub async fn layer_link(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<Link>> {
        Ok(self
            .storage
            .doc_get(&layout::layer_link(repo, digest)?)
            .await?
            .map(|v| parse_link(&v)))
    }

    /// Link a blob a cache fill fetched from `repo`'s upstream: eviction
    /// may free it again (pushed blobs are pinned).
    pub async fn link_cached_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.storage
            .doc_put(&layout::layer_link(repo, digest)?, link_stamp_cached())
            .await?;
        self.note_repository(repo).await;
        Ok(())
    }

    /// Every tag of a repository and the digest it points at.
    pub async fn tag_targets(&self, repo: &RepositoryName) -> Result<Vec<(Tag, Digest)>> {
        let mut out = Vec::new();
        for name in self.storage.doc_list(&layout::tags(repo)?).await? {
            let Ok(tag) = name.parse::<Tag>() else {
                continue;
            };
            if let Some(d) = self.tag_lookup(repo, &tag).await? {
                out.push((tag, d));
            }
        }
        Ok(out)
    }

    /// What a stored manifest references, or `None` when its bytes are
    /// missing or do not parse (it then protects nothing).
    pub async fn manifest_references(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<References>> {
        let stored = match self
            .manifest_get(repo, &berth_reference::ManifestRef::Digest(digest.clone()))
            .await
        {
            Ok(m) => m,
            Err(RegistryError::ManifestUnknown(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(m) = Manifest::parse(&stored.bytes, Some(&stored.media_type)) else {
            tracing::warn!(repository = %repo, %digest, "stored manifest does not parse");
            return Ok(None);
        };
        Ok(Some(References {
            blobs: m.blobs.into_iter().map(|r| r.digest).collect(),
            manifests: m.manifests.into_iter().map(|r| r.digest).collect(),
            subject: m.subject.map(|r| r.digest),
        }))
    }

    /// Start a garbage collection: wait for running manifest pushes, then
    /// make every later one record what it references (see the module docs).
    /// On storage other replicas share, first announce it to them (see
    /// `shared_fence`); `None` when another replica is collecting.
    pub async fn gc_begin(&self) -> Result<Option<GcGuard<'_>>> {
        let marker = match self.memo_ttl {
            Some(_) => match self.shared_gc_begin().await? {
                Some(m) => Some(m),
                None => return Ok(None),
            },
            None => None,
        };
        let _exclusive = self.fence.gate.write().await;
        self.fence.touched.lock().await.clear();
        self.fence.active.store(true, Ordering::SeqCst);
        Ok(Some(GcGuard {
            fence: &self.fence,
            marker,
        }))
    }

    /// End a garbage collection: other replicas' pushes waiting on it go on.
    pub async fn gc_end(&self, mut guard: GcGuard<'_>) -> Result<()> {
        if let Some(m) = guard.marker.take() {
            self.shared_gc_end(m).await?;
        }
        Ok(())
    }

    /// A blob HEAD: how pushing clients ask "do you have it?" before they
    /// skip its upload and push a manifest that references it. The answer
    /// must stay true until that manifest arrives, so the blob is kept from
    /// garbage collection: recorded in the fence while a GC runs, and its
    /// link in `repo` made young again once older than half the grace
    /// period (one small write per blob and repository per half period).
    pub async fn blob_head(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        // Kept first, looked at second: a GC deleting between a look that
        // found the blob and the keeping would make the answer a lie (seen
        // in CI: skopeo skipped the upload, and its manifest was refused).
        // This way GC either deleted before (the answer is 404 and the
        // client uploads) or sees the digest kept.
        self.blob_touch(repo, digest).await?;
        self.blob_size(repo, digest).await
    }

    /// The keeping part of [`Registry::blob_head`], for a blob known to be
    /// in `repo`.
    pub async fn blob_touch(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        // Held across the check and the renewal, as a manifest push holds
        // it: a GC starting meanwhile waits, then either sees the renewed
        // link or has this digest in `touched`. (Without it, a HEAD that
        // found no GC active could renew the link only after a GC that
        // began just then had read it as old: the blob was deleted under
        // a push that had been told it exists.)
        let _gate = self.fence.gate.read().await;
        if self.fence.active.load(Ordering::SeqCst) {
            self.fence.touched.lock().await.insert(digest.clone());
        }
        let key = layout::layer_link(repo, digest)?;
        if let Some(value) = self.storage.doc_get(&key).await? {
            let age = SystemTime::now()
                .duration_since(link_time(&value))
                .unwrap_or_default();
            if age > self.link_refresh {
                let renewed = if parse_link(&value).cached {
                    link_stamp_cached()
                } else {
                    link_stamp()
                };
                self.storage.doc_put(&key, renewed).await?;
            }
        }
        Ok(())
    }

    /// A manifest push's hold on the fence, recording what `manifest`
    /// references and its own digest while a GC runs. Held until the
    /// manifest is stored.
    pub(crate) async fn fence_enter(
        &self,
        manifest: &Manifest,
        own: &Digest,
    ) -> tokio::sync::RwLockReadGuard<'_, ()> {
        let gate = self.fence.gate.read().await;
        if self.fence.active.load(Ordering::SeqCst) {
            let mut touched = self.fence.touched.lock().await;
            let referenced = manifest.blobs.iter().chain(&manifest.manifests);
            touched.extend(referenced.map(|r| r.digest.clone()));
            touched.insert(own.clone());
        }
        gate
    }

    /// Delete an unreferenced blob (of `size` bytes) and its links from
    /// `linked_in`, unless a push referenced it since GC began. Returns the
    /// bytes freed, or `None` when the blob was kept (or already gone).
    pub async fn gc_delete_blob(
        &self,
        guard: &GcGuard<'_>,
        digest: &Digest,
        size: u64,
        linked_in: &[RepositoryName],
    ) -> Result<Option<u64>> {
        if let Some(m) = &guard.marker {
            // Past its lease other replicas' pushes no longer wait for it.
            if !m.may_delete() {
                return Ok(None);
            }
            self.shared_gc_renew(m).await?;
        }
        let touched = self.fence.touched.lock().await;
        if touched.contains(digest) {
            return Ok(None);
        }
        // Links first: a blob is never linked without its bytes.
        for repo in linked_in {
            self.storage
                .doc_delete(&layout::layer_link(repo, digest)?)
                .await?;
        }
        let deleted = self.storage.blob_delete(digest).await?;
        drop(touched);
        Ok(deleted.then_some(size))
    }

    /// End an upload session idle since before `idle_since`: its bytes, its
    /// owner record and its in-memory state. A session a request is using
    /// right now is left alone. Returns the bytes freed.
    pub async fn upload_expire(
        &self,
        id: &UploadId,
        idle_since: SystemTime,
    ) -> Result<Option<u64>> {
        let session = self.session(id);
        let Ok(_busy) = session.try_lock() else {
            return Ok(None);
        };
        let listed = self.storage.upload_list().await?;
        let Some(info) = listed.iter().find(|u| &u.id == id) else {
            self.forget_session(id);
            return Ok(None);
        };
        if info.modified >= idle_since {
            return Ok(None);
        }
        self.storage.upload_delete(id).await?;
        self.storage.doc_delete(&layout::upload(id)?).await?;
        self.forget_session(id);
        Ok(Some(info.size))
    }

    /// Owner records of upload sessions whose bytes are gone (a crash
    /// between the two writes): removed. Returns how many.
    pub async fn upload_orphans_purge(&self) -> Result<usize> {
        // Records first, live sessions second: a session created between
        // the two listings then has a record this pass never saw. (The
        // other order purged the record of a session started in between,
        // and its upload failed with BLOB_UPLOAD_UNKNOWN.)
        let records = self.storage.doc_list(&DocKey::new(["uploads"])?).await?;
        let live: HashSet<UploadId> = self
            .storage
            .upload_list()
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect();
        let mut purged = 0;
        for name in records {
            let Ok(id) = name.parse::<UploadId>() else {
                continue;
            };
            if !live.contains(&id) {
                // Between `upload_create` and its owner record a session
                // has a file and no record, never the reverse: safe.
                self.storage.doc_delete(&layout::upload(&id)?).await?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}
