//! Upload sessions. Bytes are hashed while they stream into storage, so
//! completing an upload costs no second pass (unless the process restarted
//! mid-session, when the stored bytes are re-hashed once). A blob becomes
//! visible only after its digest verified.

use std::sync::Arc;

use berth_reference::{Digest, RepositoryName};
use berth_storage::active::Active;
use berth_storage::batch::Batcher;
use berth_storage::{StorageError, UploadId, UploadWriter};
use bytes::Bytes;
use futures::StreamExt;

use crate::hashing::PendingHash;
use crate::{layout, ByteStream, Registry, RegistryError, Result, Session};

/// Batch sizes. One or two uploads streaming at once get 4 MiB batches (a
/// 256 MiB push ran at 1,066-1,346 MiB/s with 4 MiB against 1,085-1,132
/// with 1 MiB: fewer hand-offs, and direct writes big enough to keep the
/// disk busy). Those come from huge-page buffers (see `berth_storage`'s
/// pool), which are resident in whole 2 MiB pages, so with more uploads the
/// batches drop to 1 MiB or less, from ordinary pages: about
/// `BATCH_BUDGET` shared, at least 256 KiB each. An upload holds a few
/// batches at once (filling, queued for the hasher and the writer).
const BATCH_BUDGET: usize = 16 * 1024 * 1024;
const BATCH_LARGE: usize = 4 * 1024 * 1024;
const BATCH_SMALL_MAX: usize = 1024 * 1024;
const BATCH_MIN: usize = 256 * 1024;

/// This upload request's batch size (see `BATCH_BUDGET`).
fn batch_size(upload: &Active) -> usize {
    match upload.count() {
        1 | 2 => BATCH_LARGE,
        active => (BATCH_BUDGET / active).clamp(BATCH_MIN, BATCH_SMALL_MAX),
    }
}

/// Where an upload session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

impl Registry {
    pub(crate) fn session(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Session>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    pub(crate) fn forget_session(&self, id: &UploadId) {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }

    /// Resolve an upload id from a URL, checking it belongs to `repo`.
    async fn owned_upload(&self, repo: &RepositoryName, id: &str) -> Result<UploadId> {
        let id: UploadId = id.parse().map_err(|_| RegistryError::BlobUploadUnknown)?;
        match self.storage.doc_get(&layout::upload(&id)?).await? {
            Some(owner) if owner.as_ref() == repo.as_str().as_bytes() => Ok(id),
            _ => Err(RegistryError::BlobUploadUnknown),
        }
    }

    pub async fn upload_start(&self, repo: &RepositoryName) -> Result<UploadStatus> {
        let id = self.storage.upload_create().await?;
        self.storage
            .doc_put(
                &layout::upload(&id)?,
                Bytes::copy_from_slice(repo.as_str().as_bytes()),
            )
            .await?;
        Ok(UploadStatus {
            id: id.to_string(),
            offset: 0,
        })
    }

    pub async fn upload_status(&self, repo: &RepositoryName, id: &str) -> Result<UploadStatus> {
        let uid = self.owned_upload(repo, id).await?;
        let offset = self
            .storage
            .upload_size(&uid)
            .await?
            .ok_or(RegistryError::BlobUploadUnknown)?;
        Ok(UploadStatus {
            id: uid.to_string(),
            offset,
        })
    }

    /// Append `body` to an upload. `start`, from `Content-Range`, must equal
    /// the bytes received so far, or the chunk is refused (HTTP 416).
    pub async fn upload_append(
        &self,
        repo: &RepositoryName,
        id: &str,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        let uid = self.owned_upload(repo, id).await?;
        let session = self.session(&uid);
        let mut session = session.lock().await;
        let offset = self.append_locked(&uid, &mut session, start, body).await?;
        Ok(UploadStatus {
            id: uid.to_string(),
            offset,
        })
    }

    async fn append_locked(
        &self,
        uid: &UploadId,
        session: &mut Session,
        start: Option<u64>,
        mut body: ByteStream,
    ) -> Result<u64> {
        let current = self
            .storage
            .upload_size(uid)
            .await?
            .ok_or(RegistryError::BlobUploadUnknown)?;
        if let Some(start) = start {
            if start != current {
                return Err(RegistryError::RangeInvalid { offset: current });
            }
        }
        // Keep hashing only if the running hash covers exactly what is stored.
        let mut hasher = match session.hasher.take() {
            Some(h) if session.hashed == current => Some(h),
            None if current == 0 => Some(PendingHash::new(
                berth_reference::Algorithm::Sha256.hasher(),
            )),
            _ => None,
        };
        let mut writer: Option<Box<dyn UploadWriter>> = None;
        let active = self.active_appends.enter();
        let mut batcher = Batcher::new(current, batch_size(&active));
        let mut failure = None;
        let mut given = 0u64;
        // Each frame is copied once, into a batch; the batch is then shared
        // by the hasher and the writer (see `berth_storage::batch`).
        'body: loop {
            let chunk = match body.next().await {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => {
                    failure = Some(RegistryError::BlobUploadInvalid(format!(
                        "request body: {e}"
                    )));
                    None
                }
                None => None,
            };
            let mut rest = chunk.as_deref().unwrap_or_default();
            loop {
                if !rest.is_empty() {
                    if let Err(e) = batcher.reserve().await {
                        hasher = None;
                        failure = Some(RegistryError::from(StorageError::from(e)));
                        break 'body;
                    }
                }
                let n = match batcher.fill(rest) {
                    Ok(n) => n,
                    Err(e) => {
                        hasher = None;
                        failure = Some(RegistryError::from(StorageError::from(e)));
                        break 'body;
                    }
                };
                rest = &rest[n..];
                // The last, partial batch goes too once the body has ended
                // (or broke off: what arrived is kept so the client can resume).
                let batch = if batcher.is_full() || chunk.is_none() {
                    batcher.take()
                } else {
                    None
                };
                if let Some(batch) = batch {
                    let w = match &mut writer {
                        Some(w) => w,
                        None => match self.storage.upload_writer(uid, current).await {
                            Ok(w) => writer.insert(w),
                            Err(e) => {
                                hasher = None;
                                failure = Some(e.into());
                                break 'body;
                            }
                        },
                    };
                    if let Some(h) = hasher.as_mut() {
                        h.update(batch.clone()).await;
                    }
                    given += batch.len() as u64;
                    if let Err(e) = w.write(batch).await {
                        // What reached the disk is unknown: stop trusting the hash.
                        hasher = None;
                        failure = Some(RegistryError::from(e));
                        break 'body;
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
            if chunk.is_none() {
                break;
            }
        }
        drop(active);
        session.hasher = hasher;
        let Some(writer) = writer else {
            // Nothing to store (an empty body), or the writer never opened.
            return match failure {
                Some(e) => Err(e),
                None => Ok(current),
            };
        };
        // Every byte received is written out before the answer: a 202 means
        // the acknowledged bytes are with the OS and survive the process
        // being killed. The same holds for a body that broke off, so that
        // the session's offset and its hash agree and the client can resume.
        let total = match writer.finish().await {
            Ok(total) => total,
            Err(e) => {
                session.hasher = None;
                return Err(failure.unwrap_or(e.into()));
            }
        };
        session.hashed = total;
        if total != current + given {
            // Storage holds other than what was handed to it: the running
            // hash no longer describes the stored bytes.
            session.hasher = None;
            return Err(RegistryError::BlobUploadInvalid(format!(
                "storage holds {} bytes of the {given} received",
                total.saturating_sub(current)
            )));
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Finish an upload: append the final chunk (if any), verify the digest
    /// and publish the blob into `repo`. On a digest mismatch the session is
    /// discarded and nothing becomes visible.
    pub async fn upload_complete(
        &self,
        repo: &RepositoryName,
        id: &str,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        let uid = self.owned_upload(repo, id).await?;
        let session = self.session(&uid);
        let mut session = session.lock().await;
        let appended = match body {
            Some(body) => Some(self.append_locked(&uid, &mut session, None, body).await?),
            None => None,
        };
        let size = match appended {
            Some(size) => size,
            None => self
                .storage
                .upload_size(&uid)
                .await?
                .ok_or(RegistryError::BlobUploadUnknown)?,
        };
        let running = match session.hasher.take() {
            Some(h) if session.hashed == size => h.resolve().await,
            _ => None,
        };
        let actual = match running {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            _ => self.rehash_upload(&uid, digest).await?,
        };
        if &actual != digest {
            self.discard_upload(&uid).await?;
            return Err(RegistryError::DigestInvalid {
                expected: digest.to_string(),
                actual: Some(actual.to_string()),
            });
        }
        let published = self.storage.upload_publish(&uid, digest).await?;
        self.storage.doc_delete(&layout::upload(&uid)?).await?;
        self.forget_session(&uid);
        self.link_blob(repo, digest).await?;
        self.note_stored(published);
        Ok(published)
    }

    async fn rehash_upload(&self, uid: &UploadId, digest: &Digest) -> Result<Digest> {
        let mut hasher = digest.algorithm().hasher();
        let mut stream = self.storage.upload_read(uid, None).await?;
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(berth_storage::StorageError::from)?);
        }
        Ok(hasher.finish())
    }

    async fn discard_upload(&self, uid: &UploadId) -> Result<()> {
        self.storage.upload_delete(uid).await?;
        self.storage.doc_delete(&layout::upload(uid)?).await?;
        self.forget_session(uid);
        Ok(())
    }

    pub async fn upload_cancel(&self, repo: &RepositoryName, id: &str) -> Result<()> {
        let uid = self.owned_upload(repo, id).await?;
        let session = self.session(&uid);
        let _session = session.lock().await;
        self.discard_upload(&uid).await
    }

    /// A whole blob in one request (`POST ?digest=`).
    pub async fn blob_put(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64> {
        let status = self.upload_start(repo).await?;
        let result = self
            .upload_complete(repo, &status.id, digest, Some(body))
            .await;
        if result.is_err() {
            // A failed monolithic upload has no session the client knows of.
            if let Ok(uid) = status.id.parse::<UploadId>() {
                let _ = self.discard_upload(&uid).await;
            }
        }
        result
    }
}
