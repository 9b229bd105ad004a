//! Following a download still being written, as a local file and the
//! positions up to which it may be read: what lets the API send a fill's
//! bytes to its followers by `sendfile` as they land, instead of reading
//! them back into memory for each follower (see `berth_api::zero_copy`).
//!
//! The same rules as the copying follower (`fill::follow`) hold: only bytes
//! the writer has announced are offered, the last byte of the range asked
//! for only once the blob is verified and published, and a failed download
//! ends the stream with an error (the client sees a short body).

use std::future::Future;
use std::io;

use berth_reference::Digest;
use berth_registry::RegistryError;
use berth_storage::ByteRange;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;

use std::sync::Arc;

use crate::fill::{BlobLocation, Fill, Progress};
use crate::Cache;

/// A fill's file and how far it may be read, for one client's range.
pub struct FileFollow {
    /// The upload's file (the blob's once published: the same file).
    pub file: std::fs::File,
    /// The range of the blob this client asked for.
    pub start: u64,
    pub end: u64,
    /// Rising positions up to which `file` holds the blob's bytes; the
    /// last is `end`. An error when the download fails.
    pub available: BoxStream<'static, io::Result<u64>>,
}

impl Cache {
    /// For a blob being filled (`location`) whose size the upstream
    /// announced: a future giving its file and the availability of `range`
    /// (or the whole blob), or `None` from it on a backend that keeps no
    /// local files. `None` here or there: follow by copying instead
    /// ([`Cache::blob_stream`]). (The future holds nothing of `location`,
    /// which need not be Sync.)
    pub fn follow_file(
        &self,
        location: &BlobLocation,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Option<impl Future<Output = Result<Option<FileFollow>, RegistryError>> + Send + 'static>
    {
        let (fill, size) = match location {
            BlobLocation::Filling {
                fill,
                size: Some(size),
            } => (fill.0.clone(), *size),
            _ => return None,
        };
        let (cache, digest) = (self.clone(), digest.clone());
        Some(async move { cache.follow_fill_file(fill, size, &digest, range).await })
    }

    async fn follow_fill_file(
        &self,
        fill: Arc<Fill>,
        size: u64,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<Option<FileFollow>, RegistryError> {
        let storage = self.inner.registry.storage();
        let mut progress = fill.progress.clone();
        // The file: the upload's while it runs, the blob's once done.
        let file = loop {
            let state = progress.borrow_and_update().clone();
            match state {
                Progress::Starting => {}
                // No file: published or abandoned meanwhile; the next state says.
                Progress::Running { upload, .. } => {
                    if let Some(f) = storage.upload_file(&upload).await? {
                        break f;
                    }
                }
                Progress::Done { .. } => match storage.blob_file(digest).await? {
                    Some((f, _)) => break f,
                    None => return Ok(None),
                },
                // The copying follower reports the failure.
                Progress::Failed(_) => return Ok(None),
            }
            if progress.changed().await.is_err() {
                // The download task ended; its last state was seen above
                // unless it changed just now: let the copying follower say.
                return Ok(None);
            }
        };
        let (start, end) = range.map_or((0, size), |r| (r.start, r.end));
        if start >= end {
            // Nothing to send; the copying follower answers once verified.
            return Ok(None);
        }
        Ok(Some(FileFollow {
            file,
            start,
            end,
            available: availability(progress, size, end),
        }))
    }
}

/// Positions up to which the fill's file may be read, capped at `end`.
fn availability(
    progress: watch::Receiver<Progress>,
    size: u64,
    end: u64,
) -> BoxStream<'static, io::Result<u64>> {
    struct State {
        rx: watch::Receiver<Progress>,
        offered: u64,
        finished: bool,
    }
    let start = State {
        rx: progress,
        offered: 0,
        finished: false,
    };
    futures::stream::unfold(start, move |mut st| async move {
        if st.finished {
            return None;
        }
        let mut sender_gone = false;
        loop {
            let state = st.rx.borrow_and_update().clone();
            let ready = match state {
                Progress::Starting => 0,
                // The last byte asked for (and the blob's final byte) waits
                // for the digest check and publication: a body that looks
                // complete holds only verified bytes.
                Progress::Running { written, .. } => written
                    .min(size.saturating_sub(1))
                    .min(end.saturating_sub(1)),
                Progress::Done { .. } => size,
                Progress::Failed(f) => {
                    st.finished = true;
                    let e = io::Error::other(format!("upstream download failed: {f:?}"));
                    return Some((Err(e), st));
                }
            };
            let ready = ready.min(end);
            if ready > st.offered {
                st.offered = ready;
                st.finished = ready >= end;
                return Some((Ok(ready), st));
            }
            if sender_gone {
                st.finished = true;
                let e = io::Error::other("upstream download ended without a result");
                return Some((Err(e), st));
            }
            if st.rx.changed().await.is_err() {
                // No more changes: the state read next is the last one.
                sender_gone = true;
            }
        }
    })
    .boxed()
}
