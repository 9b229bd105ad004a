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

/// A request's last writes, still reaching storage after its response.
pub(crate) struct PendingWrites {
    job: tokio::task::JoinHandle<berth_storage::Result<u64>>,
    /// The session's size once they have landed.
    size: u64,
}

/// Wait for the previous request's writes to reach storage. If they failed,
/// or storage holds other than the bytes received, the running hash no
/// longer matches what is stored and is dropped (the upload is re-hashed
/// from storage if it completes), and the error is this request's.
async fn settle(session: &mut Session) -> Result<()> {
    let Some(pending) = session.writing.take() else {
        return Ok(());
    };
    let result = match pending.job.await {
        Ok(result) => result.map_err(RegistryError::from),
        Err(e) => Err(RegistryError::from(StorageError::from(
            std::io::Error::other(e),
        ))),
    };
    let failure = match result {
        Ok(size) if size == pending.size => return Ok(()),
        Ok(size) => RegistryError::BlobUploadInvalid(format!(
            "storage holds {size} bytes of the {} received",
            pending.size
        )),
        Err(e) => e,
    };
    session.hasher = None;
    Err(failure)
}

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
    fn session(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Session>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    fn forget_session(&self, id: &UploadId) {
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

    /// Wait until every upload's last writes have reached storage (before
    /// the process exits: a chunk already answered must not be lost).
    pub async fn settle_uploads(&self) {
        let sessions: Vec<_> = {
            let map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for session in sessions {
            let mut session = session.lock().await;
            if let Err(e) = settle(&mut session).await {
                tracing::warn!("an upload's last writes failed: {e}");
            }
        }
    }

    pub async fn upload_status(&self, repo: &RepositoryName, id: &str) -> Result<UploadStatus> {
        let uid = self.owned_upload(repo, id).await?;
        // While a chunk is streaming in, report what storage holds; between
        // chunks, first let the last one's writes land. If they failed, the
        // offset storage really holds is the answer the client needs to
        // resume, so the failure is only logged here.
        let session = self.session(&uid);
        if let Ok(mut session) = session.try_lock() {
            if let Err(e) = settle(&mut session).await {
                tracing::warn!(upload = %uid, "an upload's last writes failed: {e}");
            }
        }
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
        // Where this body starts: after the previous request's bytes, which
        // may still be reaching storage (see `Session::writing`).
        let current = match &session.writing {
            Some(pending) => pending.size,
            None => self
                .storage
                .upload_size(uid)
                .await?
                .ok_or(RegistryError::BlobUploadUnknown)?,
        };
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
        // Opened when the first batch is ready: by then the previous
        // request's writes have had the time it took to arrive to land.
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
                        None => match self.open_writer(uid, session, current).await {
                            Ok(w) => writer.insert(w),
                            Err(e) => {
                                hasher = None;
                                failure = Some(e);
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
        if failure.is_none() {
            // The body is in: answer now, and let the last batches reach the
            // disk meanwhile (a 16 MiB chunk waited 1.3-3 ms for them, a
            // fifth of its time). A write that fails is reported to the
            // session's next request, and the session keeps the offset
            // storage really has, so the client can resume from there.
            let size = current + given;
            session.hashed = size;
            session.writing = Some(PendingWrites {
                job: tokio::spawn(writer.finish()),
                size,
            });
            return Ok(size);
        }
        // Flush what arrived even when the client went away, so that the
        // session's offset and its hash agree and the client can resume.
        let total = match writer.finish().await {
            Ok(total) => total,
            Err(e) => {
                session.hasher = None;
                return Err(failure.unwrap_or(e.into()));
            }
        };
        session.hashed = total;
        match failure {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// A writer at `offset`, once the previous request's writes have landed.
    async fn open_writer(
        &self,
        uid: &UploadId,
        session: &mut Session,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>> {
        settle(session).await?;
        Ok(self.storage.upload_writer(uid, offset).await?)
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
        // Publishing needs every byte in storage.
        settle(&mut session).await?;
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
        let mut session = session.lock().await;
        // Writes still landing would go to a file about to be removed; any
        // error they meet no longer matters.
        let _ = settle(&mut session).await;
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
