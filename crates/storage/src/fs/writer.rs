//! Appending to an upload's file: block-aligned batches written with direct
//! I/O where the file system allows it, through a short queue to a writing
//! job on the blocking pool, with background `fdatasync`s so that the sync
//! that publishes a blob has little left to do.

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::batch::{is_aligned, Batcher, BLOCK};
use crate::worker::Worker;
use crate::{Result, StorageError, UploadWriter};

/// The batch size for upload bytes that arrive in pieces of other shapes
/// (a cache fill's download): they are copied into aligned batches this big.
const WRITE_BATCH: usize = 1024 * 1024;

/// The two descriptors of an upload's file. Whole aligned blocks go through
/// `direct` (`O_DIRECT`): the bytes go from our buffer to the device with no
/// copy into the page cache and no writeback work later, which measured as
/// a third of a push's non-hashing CPU. The unaligned head and tail of a
/// request go through `buffered`. `direct` is `None` where the file system
/// refuses direct I/O (tmpfs, some network file systems).
pub(super) struct UploadFile {
    pub(super) buffered: std::fs::File,
    pub(super) direct: Option<std::fs::File>,
}

impl UploadFile {
    /// Write `buf` at `offset`, as much of it directly as alignment allows.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0;
        if let Some(direct) = &self.direct {
            if offset.is_multiple_of(BLOCK as u64) {
                let aligned = buf.len() / BLOCK * BLOCK;
                while done < aligned {
                    match direct.write_at(&buf[done..aligned], offset + done as u64) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        // A short direct write ends on a block boundary or
                        // not at all; whatever is left goes the buffered way.
                        Ok(n) => done += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Refused (the file system or device wants another
                        // alignment): stop trying, buffered writes still work.
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            tracing::debug!("direct I/O refused, using buffered writes: {e}");
                            self.direct = None;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                    if done % BLOCK != 0 {
                        break;
                    }
                }
            }
        }
        write_all_at(&self.buffered, &buf[done..], offset + done as u64)
    }
}

fn write_all_at(file: &std::fs::File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends to an upload's file. A chunk that is already a block-aligned
/// batch (the registry shapes request bodies so; see [`crate::batch`]) is
/// written as it is; anything else is first copied into an aligned batch of
/// our own (a memory copy is far cheaper than the page-cache copy that
/// direct I/O saves). Batches go through a short queue to a writing job on
/// the blocking pool ([`Worker`]), so that receiving (and hashing) go on
/// while the device writes: with one write in flight and none queued, a
/// 256 MiB push waited on the disk between batches.
pub(super) struct FsUploadWriter {
    worker: Worker<Appending, Bytes>,
    batcher: Batcher,
    /// Bytes handed to the worker so far: the offset the next batch lands at.
    written: u64,
    /// Whether the worker may write directly (whole blocks skip the page cache).
    direct: bool,
    /// The file again, to sync what went through the page cache.
    sync_file: std::fs::File,
    /// Bytes written through the page cache since the last background
    /// `fdatasync` began (direct writes need none).
    unsynced: u64,
    /// A background `fdatasync` of what was written so far: it starts the
    /// disk writing while the upload still streams in, so that the `fsync`
    /// that publishes the blob has little left to do. Its error is ours
    /// (a failed fsync may not be reported twice, so it is never dropped).
    syncing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The file's length as written so far (see [`Appending::landed`]).
    landed: tokio::sync::watch::Receiver<u64>,
}

/// The writing job's state.
struct Appending {
    file: UploadFile,
    offset: u64,
    /// The write that failed; nothing is written after it.
    error: Option<std::io::Error>,
    /// `offset` for whoever follows the upload as it is written (a cache
    /// fill's clients), told after each write lands.
    landed: tokio::sync::watch::Sender<u64>,
}

fn append(state: &mut Appending, batch: Bytes) -> bool {
    match state.file.write_at(&batch, state.offset) {
        Ok(()) => {
            state.offset += batch.len() as u64;
            state.landed.send_replace(state.offset);
            true
        }
        Err(e) => {
            state.error = Some(e);
            false
        }
    }
}

/// Batches waiting for the writing job, besides the one being written.
const WRITE_QUEUE: usize = 2;
/// Start a background `fdatasync` after this many buffered bytes.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;

impl FsUploadWriter {
    pub(super) fn new(file: UploadFile, size: u64) -> std::io::Result<Self> {
        let sync_file = file.buffered.try_clone()?;
        let direct = file.direct.is_some();
        let (landed, landed_rx) = tokio::sync::watch::channel(size);
        let state = Appending {
            file,
            offset: size,
            error: None,
            landed,
        };
        Ok(FsUploadWriter {
            worker: Worker::new(state, WRITE_QUEUE, append),
            batcher: Batcher::new(size, WRITE_BATCH),
            written: size,
            direct,
            sync_file,
            unsynced: 0,
            syncing: None,
            landed: landed_rx,
        })
    }

    /// Wait for every queued batch; the first failed write's error is ours.
    async fn drain(&mut self) -> Result<()> {
        let state = self.worker.settle().await.map_err(|_| lost())?;
        match state.error.take() {
            Some(e) => Err(e.into()),
            // Reported once; the worker stays stopped.
            None if state.offset != self.written => {
                Err(std::io::Error::other("an earlier write to this upload failed").into())
            }
            None => Ok(()),
        }
    }

    /// Collect the background sync: when it is done, or (`wait`) always.
    async fn reap_sync(&mut self, wait: bool) -> Result<()> {
        if let Some(job) = self.syncing.take() {
            if !wait && !job.is_finished() {
                self.syncing = Some(job);
                return Ok(());
            }
            job.await.map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// Begin a background sync if enough was written and none is running.
    async fn maybe_sync(&mut self) -> Result<()> {
        self.reap_sync(false).await?;
        if self.unsynced < SYNC_EVERY || self.syncing.is_some() {
            return Ok(());
        }
        let file = self.sync_file.try_clone()?;
        self.unsynced = 0;
        self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        Ok(())
    }

    /// Queue `batch` for writing.
    async fn submit(&mut self, batch: Bytes) -> Result<()> {
        self.maybe_sync().await?;
        if !self.direct || !is_aligned(&batch, self.written) {
            self.unsynced += batch.len() as u64;
        }
        self.written += batch.len() as u64;
        match self.worker.send(batch).await {
            Ok(true) => Ok(()),
            // Stopped by a failed write: report it now.
            Ok(false) => self.drain().await,
            Err(_) => Err(lost()),
        }
    }
}

fn lost() -> StorageError {
    std::io::Error::other("the upload's writing job was lost").into()
}

#[async_trait]
impl UploadWriter for FsUploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.batcher.is_empty() && is_aligned(&chunk, self.written) {
            self.batcher.advance(chunk.len() as u64);
            return self.submit(chunk).await;
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            self.batcher.reserve().await?;
            let n = self.batcher.fill(rest)?;
            rest = &rest[n..];
            if self.batcher.is_full() {
                if let Some(batch) = self.batcher.take() {
                    self.submit(batch).await?;
                }
            }
        }
        Ok(())
    }

    fn landed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.landed.clone())
    }

    async fn push(&mut self) -> Result<()> {
        match self.batcher.take() {
            Some(batch) => self.submit(batch).await,
            None => Ok(()),
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(batch) = self.batcher.take() {
            self.submit(batch).await?;
        }
        self.drain().await
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.flush().await?;
        self.reap_sync(true).await?;
        Ok(self.written)
    }
}
