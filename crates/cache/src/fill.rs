//! Blob fills: one download per missing blob and repository, shared by
//! every client of that repository.
//!
//! Fills are keyed by repository as well as digest: a client asking for a
//! digest through another repository must not receive bytes that only the
//! first repository's upstream vouched for. When the bytes are already
//! stored (fetched or pushed for another repository), the fill is a HEAD
//! that asks this repository's upstream whether it has the blob, and links
//! the stored copy only on a yes.
//!
//! The first request for a missing blob starts a task that downloads it into
//! an upload area, hashing it on another core ([`crate::hash_job`]) and
//! pushing every [`FLUSH_EVERY`] bytes to storage. Each client (the first
//! included) follows the bytes that have landed so far and waits for more,
//! so nobody waits for the download to end. The last byte is withheld from
//! every follower until the digest verified and the blob is published; if
//! it does not verify, their streams end in an error, which breaks their
//! connections instead of handing them wrong content (and a client that
//! has the whole blob knows the cache holds it). The download belongs to no
//! client: one that disconnects does not stop it for the others, nor for
//! the cache.

use std::io;
use std::sync::Arc;

use berth_reference::{Digest, RepositoryName};
use berth_registry::{ByteRange, ByteStream, RegistryError};
use berth_storage::{StorageError, UploadId};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::hash_job::HashJob;
use crate::outcome;
use crate::{lock, Cache, Failure, Inner, Reach};

/// How much is downloaded between two points where followers may catch up.
const FLUSH_EVERY: u64 = 256 * 1024;

#[derive(Debug, Clone)]
pub(crate) enum Progress {
    Starting,
    Running {
        upload: UploadId,
        size: Option<u64>,
        written: u64,
    },
    Done {
        size: u64,
    },
    Failed(Failure),
}

pub(crate) struct Fill {
    pub(crate) progress: watch::Receiver<Progress>,
}

/// Where a blob's bytes will come from.
pub enum BlobLocation {
    /// Held by the cache.
    Local { size: u64 },
    /// Being downloaded now; `size` when the upstream announced it.
    Filling {
        fill: Arc<FillHandle>,
        size: Option<u64>,
    },
    /// Streamed straight from the upstream to this client, not stored:
    /// storage has no room for it.
    Uncached { body: Box<berth_upstream::BlobBody> },
    /// Streamed from the replica that owns the blob's download (it stores
    /// the blob in the shared bucket; see `peers`).
    Forwarded { body: Box<berth_upstream::BlobBody> },
}

/// An opaque handle on a download in progress.
pub struct FillHandle(pub(crate) Arc<Fill>);

impl BlobLocation {
    pub fn size(&self) -> Option<u64> {
        match self {
            BlobLocation::Local { size } => Some(*size),
            BlobLocation::Filling { size, .. } => *size,
            BlobLocation::Uncached { body } | BlobLocation::Forwarded { body } => body.length,
        }
    }
}

impl Cache {
    /// Find a blob of a mirrored repository, starting (or joining) its
    /// download when the repository does not hold it.
    pub async fn blob_locate(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobLocation, RegistryError> {
        self.blob_locate_as(repo, digest, false).await
    }

    /// [`Cache::blob_locate`] for a client (`from_peer` false) or for
    /// another replica that forwarded its client's request here (then the
    /// blob is fetched here, never forwarded again).
    pub async fn blob_locate_as(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from_peer: bool,
    ) -> Result<BlobLocation, RegistryError> {
        let inner = &self.inner;
        if let Some(size) = self.held(repo, digest).await? {
            inner.metrics.hits.inc();
            if let Some((host, _)) = repo.mirror_parts() {
                outcome::record("hit", &host);
            }
            return Ok(BlobLocation::Local { size });
        }
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        let (host, remote) = self.reachable_upstream(repo, digest).await?;
        if !from_peer {
            if let Some(location) = self.forwarded(repo, digest).await? {
                return Ok(location);
            }
        }
        let fill = self.join_or_start(host, remote, repo.clone(), digest.clone());
        let mut progress = fill.progress.clone();
        let state = progress
            .wait_for(|p| !matches!(p, Progress::Starting))
            .await
            .map(|p| p.clone())
            .unwrap_or_else(|_| Progress::Failed(Failure::Internal("download abandoned".into())));
        match state {
            Progress::Running { size, .. } => Ok(BlobLocation::Filling {
                fill: Arc::new(FillHandle(fill)),
                size,
            }),
            // Finished before we looked (or confirmed a stored copy): the
            // fill was for this repository and linked it.
            Progress::Done { size } => Ok(BlobLocation::Local { size }),
            Progress::Failed(Failure::NoSpace) => self.uncached(&host_of(repo), repo, digest).await,
            Progress::Failed(f) => Err(f.into_error(unknown())),
            Progress::Starting => Err(unknown()),
        }
    }

    /// The blob from the replica that owns its download, when another one
    /// does and answers; `None` to fetch it here (this replica owns it, or
    /// the owner cannot be reached: a replica down is no outage).
    async fn forwarded(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobLocation>, RegistryError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(None);
        };
        let Some((owner, answer)) = peers.forward(repo, digest).await else {
            return Ok(None);
        };
        match answer {
            Ok(body) => {
                self.inner.metrics.peer_forwards.inc();
                outcome::record("forward", &host_of(repo));
                Ok(Some(BlobLocation::Forwarded {
                    body: Box::new(body),
                }))
            }
            // The owner asked the upstream, which has no such blob.
            Err(e) if e.is_not_found() => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => {
                self.inner.metrics.peer_fallbacks.inc();
                tracing::warn!(%owner, repository = %repo, %digest, error = %e, "the owner replica did not answer; fetching the blob here");
                Ok(None)
            }
        }
    }

    /// A blob for one client straight from its upstream, when storage is
    /// full: a pull must still work, only slower (each client downloads).
    async fn uncached(
        &self,
        host: &str,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobLocation, RegistryError> {
        let inner = &self.inner;
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        let Some((_, remote)) = Cache::upstream_of(repo) else {
            return Err(unknown());
        };
        let client = inner.client(host).map_err(|f| f.into_error(unknown()))?;
        let body = inner
            .metrics
            .upstream_call(host, "blob", client.blob_get(&remote, digest, None))
            .await
            .map_err(|e| Failure::from_upstream(&e).into_error(unknown()))?;
        inner.metrics.uncached_serves.inc();
        outcome::record("uncached", host);
        tracing::warn!(repository = %repo, %digest, "storage full: streaming a blob from upstream without caching it");
        Ok(BlobLocation::Uncached {
            body: Box::new(body),
        })
    }

    /// The blob's bytes (or a range of them) from wherever they are.
    pub async fn blob_stream(
        &self,
        digest: &Digest,
        location: BlobLocation,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, RegistryError> {
        match location {
            // `blob_locate` found it linked here (or linked it): read it directly.
            BlobLocation::Local { .. } => self
                .inner
                .registry
                .storage()
                .blob_read(digest, range)
                .await
                .map_err(|e| match e {
                    StorageError::BlobNotFound => RegistryError::BlobUnknown(digest.clone()),
                    other => other.into(),
                }),
            BlobLocation::Filling { fill, .. } => Ok(follow(
                self.inner.clone(),
                fill.0.clone(),
                digest.clone(),
                range,
            )),
            BlobLocation::Uncached { body } | BlobLocation::Forwarded { body } => {
                Ok(slice(body.stream, range))
            }
        }
    }

    /// The upstream (host, name there) a blob of `repo` may be asked of;
    /// BLOB_UNKNOWN when offline or not a mirror, NAME_UNKNOWN for a host
    /// that may not be contacted and a repository that holds nothing.
    async fn reachable_upstream(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(String, RepositoryName), RegistryError> {
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        let Some((host, remote)) = Cache::upstream_of(repo) else {
            return Err(unknown());
        };
        match self.inner.reach(&host) {
            Reach::Online => Ok((host, remote)),
            Reach::Offline => Err(unknown()),
            Reach::Refused if self.inner.refused_and_unknown(repo).await? => {
                Err(RegistryError::UpstreamNotAllowed)
            }
            Reach::Refused => Err(unknown()),
        }
    }

    /// The blob's size when this repository holds it. A copy stored for
    /// another repository does not count (see the module comment).
    async fn held(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        match self.inner.registry.blob_size(repo, digest).await {
            Ok(size) => Ok(Some(size)),
            Err(RegistryError::BlobUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size of a blob for a `HEAD`, without downloading it. When the
    /// upstream confirms the repository has a blob whose bytes are already
    /// stored, the repository is linked to them (a push that HEADs a blob
    /// before its manifest then finds it).
    pub async fn blob_head(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<u64, RegistryError> {
        let inner = &self.inner;
        // A preload's "do you have it?": kept from GC until its manifest,
        // kept before looking (see `Registry::blob_head`).
        inner.registry.blob_touch(repo, digest).await?;
        if let Some(size) = self.held(repo, digest).await? {
            return Ok(size);
        }
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        let (host, remote) = self.reachable_upstream(repo, digest).await?;
        let Ok(client) = inner.client(&host) else {
            return Err(unknown());
        };
        match inner
            .metrics
            .upstream_call(&host, "blob_head", client.blob_head(&remote, digest))
            .await
        {
            Ok(meta) => {
                if inner.registry.storage().blob_size(digest).await? == Some(meta.size) {
                    inner.registry.link_cached_blob(repo, digest).await?;
                }
                Ok(meta.size)
            }
            // A HEAD is how pushing clients ask "do you have it?": when the
            // upstream cannot say, the honest answer is that we don't, so a
            // preload into a mirror works while its upstream is unreachable.
            Err(e) => {
                if !e.is_not_found() {
                    tracing::info!(repository = %repo, %digest, error = %e, "upstream unavailable for a blob HEAD");
                }
                Err(unknown())
            }
        }
    }

    fn join_or_start(
        &self,
        host: String,
        remote: RepositoryName,
        repo: RepositoryName,
        digest: Digest,
    ) -> Arc<Fill> {
        let key = (repo.clone(), digest.clone());
        let mut fills = lock(&self.inner.fills);
        if let Some(f) = fills.get(&key) {
            self.inner.metrics.coalesced.inc();
            outcome::record("follow", &host);
            return f.clone();
        }
        self.inner.metrics.misses.inc();
        outcome::record("fill", &host);
        let (tx, rx) = watch::channel(Progress::Starting);
        let fill = Arc::new(Fill { progress: rx });
        fills.insert(key.clone(), fill.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let outcome = download(&inner, &host, &remote, &repo, &digest, &tx).await;
            match outcome {
                Ok(size) => {
                    let _ = tx.send(Progress::Done { size });
                }
                Err(f) => {
                    inner.metrics.fill_failures.inc();
                    tracing::warn!(repository = %repo, %digest, reason = ?f, "blob download from upstream failed");
                    // Forgotten before the followers hear of the failure: a
                    // request arriving from now on starts a fresh fill
                    // instead of joining this failed one.
                    lock(&inner.fills).remove(&key);
                    let _ = tx.send(Progress::Failed(f));
                    return;
                }
            }
            // Only now: a request arriving later finds the blob published.
            lock(&inner.fills).remove(&key);
        });
        fill
    }
}

/// Tell a fill's followers that its first `written` bytes are readable.
fn announce(tx: &watch::Sender<Progress>, written: u64) {
    tx.send_modify(|p| {
        if let Progress::Running { written: w, .. } = p {
            *w = written;
        }
    });
}

/// Download `digest` into storage, publishing progress. Returns its size.
async fn download(
    inner: &Inner,
    host: &str,
    remote: &RepositoryName,
    repo: &RepositoryName,
    digest: &Digest,
    tx: &watch::Sender<Progress>,
) -> Result<u64, Failure> {
    // The bytes may be stored already: fetched or pushed for another
    // repository, or published by a fill of this one that left the map
    // between this request's lookup and its joining. They are linked here
    // only once this repository's upstream confirms it has the blob; that
    // HEAD replaces a second download.
    let storage = inner.registry.storage();
    let client = inner.client(host)?;
    if let Some(size) = storage.blob_size(digest).await.map_err(storage_failure)? {
        if inner.registry.blob_size(repo, digest).await.is_err() {
            let meta = inner
                .metrics
                .upstream_call(host, "blob_head", client.blob_head(remote, digest))
                .await
                .map_err(|e| Failure::from_upstream(&e))?;
            if meta.size != size {
                return Err(Failure::Unavailable(format!(
                    "upstream reports {} bytes for a blob stored with {size}",
                    meta.size
                )));
            }
            inner.registry.link_cached_blob(repo, digest).await?;
        }
        return Ok(size);
    }
    if crate::storage_short(&inner.registry, None).await {
        return Err(Failure::NoSpace);
    }
    let mut body = inner
        .metrics
        .upstream_call(
            host,
            "blob",
            // Verified below: hashed on another core as it streams.
            client.blob_get_unverified(remote, digest),
        )
        .await
        .map_err(|e| Failure::from_upstream(&e))?;
    let size = body.length;
    if crate::storage_short(&inner.registry, size).await {
        // Dropping the body closes the connection; each waiting client
        // fetches the blob for itself, uncached.
        return Err(Failure::NoSpace);
    }
    let upload = storage.upload_create().await.map_err(storage_failure)?;
    let result = async {
        let mut writer = storage
            .upload_writer_followed(&upload, 0)
            .await
            .map_err(storage_failure)?;
        let _ = tx.send(Progress::Running {
            upload: upload.clone(),
            size,
            written: 0,
        });
        // Hashed on another core while the download goes on.
        let mut hasher = HashJob::new(digest.algorithm().hasher());
        let (mut written, mut unflushed) = (0u64, 0u64);
        let counted = inner.metrics.upstream_bytes(host);
        // Where storage tells how far its writes have landed, followers
        // hear of each as it lands and the download never waits for the
        // disk; otherwise every FLUSH_EVERY bytes are flushed, waited for,
        // then announced (a 64 MiB fill spent two thirds of its time so).
        let mut landed = writer.landed();
        let flush_every = FLUSH_EVERY.max(writer.flush_granularity());
        loop {
            let next = match landed.as_mut() {
                Some(rx) => tokio::select! {
                    biased;
                    changed = rx.changed() => {
                        match changed {
                            Ok(()) => announce(tx, *rx.borrow_and_update()),
                            Err(_) => landed = None,
                        }
                        continue;
                    }
                    next = body.stream.next() => next,
                },
                None => body.stream.next().await,
            };
            let Some(chunk) = next else { break };
            // A stalled body ends here too (the upstream client's stall
            // timeout): the fill is abandoned, its followers' streams end
            // in an error, and nothing is published.
            let chunk = chunk.map_err(|e| match Failure::from_upstream(&e) {
                Failure::TimedOut(m) => Failure::TimedOut(format!("download interrupted: {m}")),
                _ => Failure::Unavailable(format!("download interrupted: {e}")),
            })?;
            if !hasher.update(chunk.clone()).await {
                return Err(Failure::Internal("the fill's hashing job was lost".into()));
            }
            written += chunk.len() as u64;
            unflushed += chunk.len() as u64;
            counted.add(chunk.len() as u64);
            if size.is_some_and(|s| written > s) {
                return Err(Failure::Unavailable(
                    "upstream sent more bytes than announced".into(),
                ));
            }
            writer.write(chunk).await.map_err(storage_failure)?;
            if unflushed >= flush_every {
                unflushed = 0;
                if landed.is_some() {
                    writer.push().await.map_err(storage_failure)?;
                } else {
                    writer.flush().await.map_err(storage_failure)?;
                    announce(tx, written);
                }
            }
        }
        writer.finish().await.map_err(storage_failure)?;
        if size.is_some_and(|s| s != written) {
            return Err(Failure::Unavailable(format!(
                "upstream sent {written} bytes of an announced {}",
                size.unwrap_or_default()
            )));
        }
        let Some(hasher) = hasher.finish().await else {
            return Err(Failure::Internal("the fill's hashing job was lost".into()));
        };
        let actual = hasher.finish();
        if &actual != digest {
            return Err(Failure::Unavailable(format!(
                "upstream content has digest {actual}"
            )));
        }
        // Followers may read the last landed bytes; the final byte is only
        // released by Done, after publication below: a client that has the
        // whole blob knows the cache holds it.
        announce(tx, written);
        storage
            .upload_publish(&upload, digest)
            .await
            .map_err(storage_failure)?;
        inner.registry.link_cached_blob(repo, digest).await?;
        inner.registry.note_stored(written);
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = storage.upload_delete(&upload).await;
    }
    result
}

fn storage_failure(e: StorageError) -> Failure {
    match e {
        StorageError::StorageFull => Failure::NoSpace,
        e => Failure::Internal(e.to_string()),
    }
}

fn host_of(repo: &RepositoryName) -> String {
    repo.mirror_parts()
        .map(|(host, _)| host.into_owned())
        .unwrap_or_default()
}

/// `range` of an upstream blob stream that starts at byte 0; it ends once
/// the range is sent.
fn slice(stream: berth_upstream::BlobStream, range: Option<ByteRange>) -> ByteStream {
    let stream = stream.map(|r| r.map_err(io::Error::other));
    let Some(range) = range else {
        return Box::pin(stream);
    };
    let pieces = stream.scan(0u64, move |pos, chunk| {
        if *pos >= range.end {
            return futures::future::ready(None);
        }
        let piece = chunk.map(|chunk| {
            let (start, end) = (*pos, *pos + chunk.len() as u64);
            *pos = end;
            let (from, to) = (start.max(range.start), end.min(range.end));
            (from < to).then(|| chunk.slice((from - start) as usize..(to - start) as usize))
        });
        futures::future::ready(Some(piece))
    });
    Box::pin(pieces.filter_map(|piece| futures::future::ready(piece.transpose())))
}

/// Stream `range` of a blob being filled, following the download.
fn follow(
    inner: Arc<Inner>,
    fill: Arc<Fill>,
    digest: Digest,
    range: Option<ByteRange>,
) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::spawn(async move {
        if let Err(e) = follow_into(&inner, &fill, &digest, range, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Forward `stream` into `tx`; returns bytes forwarded, or `None` when the
/// client has gone away.
async fn forward(
    mut stream: ByteStream,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<Option<u64>> {
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some(n))
}

async fn follow_into(
    inner: &Inner,
    fill: &Fill,
    digest: &Digest,
    range: Option<ByteRange>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let storage = inner.registry.storage();
    let mut progress = fill.progress.clone();
    let mut pos = range.map_or(0, |r| r.start);
    let end = range.map(|r| r.end);
    let mut leader_gone = false;
    loop {
        if end.is_some_and(|e| pos >= e) {
            return Ok(());
        }
        let state = progress.borrow_and_update().clone();
        match state {
            Progress::Done { size } => {
                let end = end.unwrap_or(size);
                if pos < end {
                    let stream = storage
                        .blob_read(digest, Some(ByteRange { start: pos, end }))
                        .await
                        .map_err(io::Error::other)?;
                    forward(stream, tx).await?;
                }
                return Ok(());
            }
            Progress::Failed(f) => {
                return Err(io::Error::other(format!("upstream download failed: {f:?}")))
            }
            Progress::Starting => {}
            Progress::Running {
                upload,
                size,
                written,
            } => {
                // Hold back the final byte, and the last byte of a range,
                // until the blob is verified and published: a body that
                // looks complete holds only verified bytes.
                let mut avail = size.map_or(written, |s| written.min(s.saturating_sub(1)));
                if let Some(e) = end {
                    avail = avail.min(e.saturating_sub(1));
                }
                if avail > pos {
                    match storage
                        .upload_read(
                            &upload,
                            Some(ByteRange {
                                start: pos,
                                end: avail,
                            }),
                        )
                        .await
                    {
                        Ok(stream) => match forward(stream, tx).await? {
                            None => return Ok(()),
                            Some(n) if n > 0 => {
                                pos += n;
                                continue;
                            }
                            Some(_) => {}
                        },
                        // Published (or abandoned) in the meantime: the next state says which.
                        Err(StorageError::UploadNotFound) => {}
                        Err(e) => return Err(io::Error::other(e)),
                    }
                }
            }
        }
        if leader_gone {
            return Err(io::Error::other("upstream download ended without a result"));
        }
        if progress.changed().await.is_err() {
            // The download task has finished; its last state is final.
            leader_gone = true;
        }
    }
}
