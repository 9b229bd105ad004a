//! The local-disk backend, berth's embedded default.
//!
//! Layout under the root:
//! - `blobs/<alg>/<first two hex>/<hex>`: published blobs, never partially written;
//! - `uploads/<uuid>`: the bytes of an upload session (sessions survive restarts);
//! - `docs/<key>`: small documents;
//! - `tmp/`: files being written; emptied at start-up, so a crash leaves nothing.
//!
//! Everything becomes visible by `rename(2)` from `tmp/` or `uploads/` on the
//! same file system, after an `fsync`: a reader sees all of a file or none.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_reference::{Algorithm, Digest};
use bytes::Bytes;
use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use crate::{ByteRange, ByteStream, DocKey, Result, Storage, StorageError, UploadId, UploadWriter};

/// Read size when streaming blobs out: large enough that per-read overhead
/// (a blocking-pool hop in tokio's file API) stays negligible.
const READ_CHUNK: usize = 256 * 1024;
/// Write buffer for uploads: coalesces the small frames HTTP bodies arrive in.
const WRITE_BUFFER: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

fn not_found_as_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl FsStorage {
    /// Open (creating if needed) a store at `root`, discarding any temporary
    /// files a previous process left behind.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in ["blobs", "uploads", "docs"] {
            fs::create_dir_all(root.join(dir)).await?;
        }
        let tmp = root.join("tmp");
        if fs::try_exists(&tmp).await? {
            fs::remove_dir_all(&tmp).await?;
        }
        fs::create_dir_all(&tmp).await?;
        Ok(FsStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn doc_path(&self, key: &DocKey) -> PathBuf {
        let mut p = self.root.join("docs");
        p.extend(key.components());
        p
    }

    fn tmp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Write `bytes` to a temporary file, sync it, and rename it to `dest`.
    async fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp_path();
        let result = async {
            let mut f = fs::File::create(&tmp).await?;
            f.write_all(bytes).await?;
            f.sync_all().await?;
            drop(f);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).await?;
            }
            fs::rename(&tmp, dest).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        Ok(result?)
    }

    async fn open_range(path: &Path, range: Option<ByteRange>) -> Result<ByteStream> {
        let mut f = match not_found_as_none(fs::File::open(path).await)? {
            Some(f) => f,
            None => return Err(StorageError::BlobNotFound),
        };
        let size = f.metadata().await?.len();
        let stream: ByteStream = match range {
            None => Box::pin(ReaderStream::with_capacity(f, READ_CHUNK)),
            Some(r) => {
                if r.start > r.end || r.end > size {
                    return Err(StorageError::RangeNotSatisfiable);
                }
                f.seek(std::io::SeekFrom::Start(r.start)).await?;
                Box::pin(ReaderStream::with_capacity(f.take(r.len()), READ_CHUNK))
            }
        };
        Ok(stream)
    }
}

impl FsStorage {
    /// Like `open_range`, but for a file that may still be growing: a range
    /// beyond its current end is not an error, it just yields fewer bytes.
    async fn open_growing(path: &Path, range: Option<ByteRange>) -> Result<ByteStream> {
        let mut f = match not_found_as_none(fs::File::open(path).await)? {
            Some(f) => f,
            None => return Err(StorageError::UploadNotFound),
        };
        Ok(match range {
            None => Box::pin(ReaderStream::with_capacity(f, READ_CHUNK)),
            Some(r) => {
                f.seek(std::io::SeekFrom::Start(r.start)).await?;
                Box::pin(ReaderStream::with_capacity(f.take(r.len()), READ_CHUNK))
            }
        })
    }
}

struct FsUploadWriter {
    file: BufWriter<fs::File>,
    size: u64,
}

#[async_trait]
impl UploadWriter for FsUploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.file.write_all(&chunk).await?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.file.flush().await?;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.file.flush().await?;
        Ok(self.size)
    }
}

#[async_trait]
impl Storage for FsStorage {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(not_found_as_none(fs::metadata(self.blob_path(digest)).await)?.map(|m| m.len()))
    }

    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        Self::open_range(&self.blob_path(digest), range).await
    }

    async fn blob_put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let dest = self.blob_path(digest);
        if fs::try_exists(&dest).await? {
            return Ok(());
        }
        self.write_atomically(&dest, &bytes).await
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool> {
        Ok(not_found_as_none(fs::remove_file(self.blob_path(digest)).await)?.is_some())
    }

    async fn blob_list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.as_str());
            let Some(mut prefixes) = not_found_as_none(fs::read_dir(&dir).await)? else {
                continue;
            };
            while let Some(prefix) = prefixes.next_entry().await? {
                let mut entries = fs::read_dir(prefix.path()).await?;
                while let Some(e) = entries.next_entry().await? {
                    // Anything that does not parse as a digest is not ours; skip it.
                    if let Some(name) = e.file_name().to_str() {
                        if let Ok(d) = format!("{alg}:{name}").parse() {
                            out.push(d);
                        }
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn upload_create(&self) -> Result<UploadId> {
        let id = UploadId::new_random();
        fs::File::create(self.upload_path(&id)).await?;
        Ok(id)
    }

    async fn upload_size(&self, id: &UploadId) -> Result<Option<u64>> {
        Ok(not_found_as_none(fs::metadata(self.upload_path(id)).await)?.map(|m| m.len()))
    }

    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        let path = self.upload_path(id);
        let file = match not_found_as_none(fs::OpenOptions::new().append(true).open(&path).await)? {
            Some(f) => f,
            None => return Err(StorageError::UploadNotFound),
        };
        let size = file.metadata().await?.len();
        if size != offset {
            return Err(StorageError::UploadOffsetMismatch {
                expected: offset,
                actual: size,
            });
        }
        Ok(Box::new(FsUploadWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            size,
        }))
    }

    async fn upload_read(&self, id: &UploadId, range: Option<ByteRange>) -> Result<ByteStream> {
        Self::open_growing(&self.upload_path(id), range)
            .await
            .map_err(|e| match e {
                StorageError::BlobNotFound => StorageError::UploadNotFound,
                other => other,
            })
    }

    async fn upload_publish(&self, id: &UploadId, digest: &Digest) -> Result<u64> {
        let src = self.upload_path(id);
        let f = match not_found_as_none(fs::File::open(&src).await)? {
            Some(f) => f,
            None => return Err(StorageError::UploadNotFound),
        };
        let size = f.metadata().await?.len();
        f.sync_all().await?;
        drop(f);
        let dest = self.blob_path(digest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).await?;
        }
        // Two sessions publishing the same digest race harmlessly: both
        // files hold the same verified bytes and rename replaces atomically.
        fs::rename(&src, &dest).await?;
        Ok(size)
    }

    async fn upload_delete(&self, id: &UploadId) -> Result<bool> {
        Ok(not_found_as_none(fs::remove_file(self.upload_path(id)).await)?.is_some())
    }

    async fn doc_get(&self, key: &DocKey) -> Result<Option<Bytes>> {
        match fs::read(self.doc_path(key)).await {
            Ok(v) => Ok(Some(Bytes::from(v))),
            // A key that names a directory (a prefix) holds no value.
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::IsADirectory => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn doc_put(&self, key: &DocKey, value: Bytes) -> Result<()> {
        self.write_atomically(&self.doc_path(key), &value).await
    }

    async fn doc_delete(&self, key: &DocKey) -> Result<bool> {
        let path = self.doc_path(key);
        let Some(meta) = not_found_as_none(fs::symlink_metadata(&path).await)? else {
            return Ok(false);
        };
        let r = if meta.is_dir() {
            fs::remove_dir_all(&path).await
        } else {
            fs::remove_file(&path).await
        };
        Ok(not_found_as_none(r)?.is_some())
    }

    async fn doc_list(&self, prefix: &DocKey) -> Result<Vec<String>> {
        let Some(mut rd) = not_found_as_none(fs::read_dir(self.doc_path(prefix)).await)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while let Some(e) = rd.next_entry().await? {
            if let Some(name) = e.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Collect a stream into memory: for tests and small documents only.
pub async fn collect(mut s: ByteStream) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(chunk) = s.next().await {
        v.extend_from_slice(&chunk?);
    }
    Ok(v)
}
