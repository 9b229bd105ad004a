//! Storage for berth: the durable layer under the registry.
//!
//! The [`Storage`] trait is deliberately small and registry-agnostic, in the
//! spirit of Distribution's storage driver, so that an object store (S3) can
//! implement it without the HTTP or registry layers changing:
//!
//! - **Blobs**: immutable, content-addressed by [`Digest`]. A blob is either
//!   absent or complete; there is no way to observe a partial one.
//! - **Uploads**: append-only staging areas identified by an [`UploadId`]. The
//!   caller (the registry layer) hashes the bytes as they stream through and
//!   asks the backend to [`Storage::upload_publish`] once the digest verified.
//!   How publication is made atomic (rename, multipart completion, copy) is
//!   the backend's business, not part of the contract.
//! - **Documents**: small values (tags, manifest revisions, links, referrer
//!   entries) under `/`-separated keys, each replaced atomically, listable by
//!   prefix. The registry layer owns the key layout.
//!
//! Backends: [`fs::FsStorage`] (local disk, the embedded default) and
//! `s3::S3Storage` (an S3-compatible bucket several replicas share; the
//! `s3` feature).
#![forbid(unsafe_code)]

pub mod active;
pub mod batch;
pub mod fs;
mod key;
mod pool;
pub use pool::{
    memory_budget_free, set_connection_budget, set_memory_budget, try_charge_connection,
    ConnectionCharge, DEFAULT_MEMORY_BUDGET,
};
pub mod root_lock;
#[cfg(feature = "s3")]
pub mod s3;
pub mod worker;

use std::pin::Pin;

use async_trait::async_trait;
use berth_reference::Digest;
use bytes::Bytes;
use futures::Stream;

pub use key::{DocKey, KeyError};

/// A stream of blob bytes. I/O errors mid-stream abort the consumer; they are
/// never turned into silently short content.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Identifier of an upload session; a UUID, so it is safe as a path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn new_random() -> Self {
        UploadId(uuid::Uuid::new_v4())
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl std::str::FromStr for UploadId {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(UploadId)
            .map_err(|_| StorageError::UploadNotFound)
    }
}

/// An inclusive-exclusive byte range `start..end` within a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob not found")]
    BlobNotFound,
    #[error("upload session not found")]
    UploadNotFound,
    #[error("upload is at offset {actual}, not {expected}")]
    UploadOffsetMismatch { expected: u64, actual: u64 },
    #[error("requested range is outside the blob")]
    RangeNotSatisfiable,
    #[error("no space left on the storage device")]
    StorageFull,
    #[error("invalid storage key: {0}")]
    Key(#[from] KeyError),
    #[error("storage I/O error: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC and EDQUOT: tell the client the registry is full rather than
        // reporting an opaque I/O failure.
        match e.raw_os_error() {
            Some(28) | Some(122) => StorageError::StorageFull,
            _ => StorageError::Io(e),
        }
    }
}

/// A stored blob's size and when it was written (for GC's grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStat {
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// An upload session as storage sees it: for expiring idle sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub id: UploadId,
    pub size: u64,
    /// When bytes were last appended (or the session created).
    pub modified: std::time::SystemTime,
}

/// How full the device under a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes the device holds in all.
    pub total: u64,
    /// Bytes still free for this process to write.
    pub available: u64,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Appends bytes to an upload session. Dropping it without [`finish`] leaves
/// whatever was written durable-or-not, but never visible as a blob.
///
/// [`finish`]: UploadWriter::finish
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Make everything written so far readable through [`Storage::upload_read`]
    /// (a cache fill lets other readers follow a download this way).
    async fn flush(&mut self) -> Result<()>;
    /// How much of the session is readable through [`Storage::upload_read`],
    /// updated as writes land, so that a follower need not wait for a
    /// [`flush`]; `None` when the backend cannot tell (then use `flush`).
    ///
    /// [`flush`]: UploadWriter::flush
    fn landed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Send what is buffered on its way to storage without waiting for it
    /// to land (see [`landed`]); by default a [`flush`].
    ///
    /// [`landed`]: UploadWriter::landed
    /// [`flush`]: UploadWriter::flush
    async fn push(&mut self) -> Result<()> {
        self.flush().await
    }
    /// The fewest bytes worth writing between two [`flush`]es: each flush of
    /// an object-store session ends one object (a part of at least 5 MiB is
    /// what lets publication concatenate them server-side); 0 when any
    /// interval will do.
    ///
    /// [`flush`]: UploadWriter::flush
    fn flush_granularity(&self) -> u64 {
        0
    }
    /// Flushes everything written and returns the session's new total size.
    async fn finish(self: Box<Self>) -> Result<u64>;
}

/// The durable store under one registry. See the crate docs for the contract.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Size of a blob, or `None` when absent.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Stream a blob, or a range of it.
    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream>;
    /// The blob as an open local file and its size, for sending it by
    /// `sendfile`; `None` when the backend keeps no local files (an object
    /// store) or the blob is absent. Callers fall back to [`blob_read`].
    ///
    /// [`blob_read`]: Storage::blob_read
    async fn blob_file(&self, _digest: &Digest) -> Result<Option<(std::fs::File, u64)>> {
        Ok(None)
    }
    /// A URL where clients may fetch the blob themselves, straight from the
    /// store (a presigned S3 GET), when the backend offers such redirects
    /// and they are enabled; `None` to serve the bytes through berth.
    async fn blob_redirect_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }
    /// Store a small blob whose digest the caller has verified (manifests).
    async fn blob_put(&self, digest: &Digest, bytes: Bytes) -> Result<()>;
    /// Remove a blob; `false` if it was not there.
    async fn blob_delete(&self, digest: &Digest) -> Result<bool>;
    /// Every stored blob (for garbage collection and scrubbing).
    async fn blob_list(&self) -> Result<Vec<Digest>>;
    /// Move a blob that failed verification out of the store, keeping its
    /// bytes for inspection; `false` if it was not there.
    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool>;
    /// Size and modification time of a blob, or `None` when absent.
    async fn blob_stat(&self, digest: &Digest) -> Result<Option<BlobStat>>;
    /// Bytes of every stored blob together (eviction's measure of the
    /// store). The default stats each blob; an object store sums one
    /// listing instead of asking once per blob.
    async fn blob_bytes_total(&self) -> Result<u64> {
        let mut total = 0u64;
        for d in self.blob_list().await? {
            if let Some(stat) = self.blob_stat(&d).await? {
                total += stat.size;
            }
        }
        Ok(total)
    }

    /// Open a new, empty upload session.
    async fn upload_create(&self) -> Result<UploadId>;
    /// Bytes received so far, or `None` if there is no such session.
    async fn upload_size(&self, id: &UploadId) -> Result<Option<u64>>;
    /// Start appending at `offset`, which must equal the current size.
    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>>;
    /// [`upload_writer`] for bytes that are read back while they are being
    /// written (a cache fill's followers): the local-disk backend keeps them
    /// in the page cache rather than writing around it.
    ///
    /// [`upload_writer`]: Storage::upload_writer
    async fn upload_writer_followed(
        &self,
        id: &UploadId,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>> {
        self.upload_writer(id, offset).await
    }
    /// The upload's bytes as an open local file, for following a download
    /// still being written by `sendfile`; `None` when the backend keeps no
    /// local files or there is no such session. The file stays the blob's
    /// once published (the local-disk backend renames it into place).
    async fn upload_file(&self, _id: &UploadId) -> Result<Option<std::fs::File>> {
        Ok(None)
    }
    /// Read back what an upload holds, or part of it (to re-hash a session
    /// after a restart, or to follow a download still being written). A range
    /// past what has been flushed yields the bytes there are.
    async fn upload_read(&self, id: &UploadId, range: Option<ByteRange>) -> Result<ByteStream>;
    /// Atomically make the upload's bytes the blob `digest` and end the
    /// session. The caller has verified the digest.
    async fn upload_publish(&self, id: &UploadId, digest: &Digest) -> Result<u64>;
    /// End a session, discarding its bytes.
    async fn upload_delete(&self, id: &UploadId) -> Result<bool>;
    /// Every upload session storage holds (for expiry of idle ones).
    async fn upload_list(&self) -> Result<Vec<UploadInfo>>;

    async fn doc_get(&self, key: &DocKey) -> Result<Option<Bytes>>;
    /// Replace a document atomically: readers see the old or the new value.
    async fn doc_put(&self, key: &DocKey, value: Bytes) -> Result<()>;
    /// Remove a document (and, for a prefix, everything beneath it).
    async fn doc_delete(&self, key: &DocKey) -> Result<bool>;
    /// Names of the immediate children of `prefix`, sorted.
    async fn doc_list(&self, prefix: &DocKey) -> Result<Vec<String>>;

    /// End partial writes begun longer than `older_than` ago that no writer
    /// will finish (a killed process's multipart uploads in an object
    /// store, which the store would otherwise keep and bill). Returns how
    /// many; the local disk has none (its temporaries go at open).
    async fn abandoned_writes_sweep(&self, _older_than: std::time::Duration) -> Result<usize> {
        Ok(0)
    }

    /// How full the device is, where the backend can tell (an object store
    /// cannot): the cache streams uncached rather than fill a full disk, and
    /// eviction keeps usage under its watermark.
    async fn space(&self) -> Result<Option<Space>> {
        Ok(None)
    }
}
