//! The local-disk backend, berth's embedded default.
//!
//! Layout under the root:
//! - `blobs/<alg>/<first two hex>/<hex>`: published blobs, never partially written;
//! - `uploads/<uuid>`: the bytes of an upload session (sessions survive restarts);
//! - `docs/<key>`: small documents;
//! - `tmp/`: files being written; emptied at start-up, so a crash leaves nothing;
//! - `quarantine/<alg>/<hex>.<uuid>`: blobs scrub found damaged, kept aside;
//! - `run/`: the root's lock and the admin socket (see `root_lock`).
//!
//! Everything becomes visible by `rename(2)` from `tmp/` or `uploads/` on the
//! same file system, after an `fsync`: a reader sees all of a file or none.
//!
//! Appending to an upload's file (direct I/O, the writing job, background
//! syncs) is in [`writer`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_reference::{Algorithm, Digest};
use bytes::Bytes;
use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

mod writer;

use crate::active::{Active, ActiveCount};
use crate::pool::SMALL;
use crate::{ByteRange, ByteStream, DocKey, Result, Storage, StorageError, UploadId, UploadWriter};
use writer::{FsUploadWriter, UploadFile};

/// Read size when streaming uploads still being written out.
const READ_CHUNK: usize = 256 * 1024;
/// Blob reads: the read-ahead memory all concurrent blob downloads share.
/// One download reads 1 MiB at a time (fewer blocking-pool hops: a single
/// GET ran at 0.66-0.86x nginx's sendfile with 256 KiB chunks, 0.90-0.94x
/// with 1 MiB), many share the budget (64 get 256 KiB each, more get less;
/// see [`chunk_size`]), so that memory stays under ~1 MiB per connection
/// (64 downloads of 1 MiB chunks peaked at 130 MiB resident; of 256 KiB,
/// at 50). Every chunk is also taken against the memory budget.
const READ_AHEAD_BUDGET: u64 = 16 * 1024 * 1024;
const BLOB_CHUNK_MAX: u64 = 1024 * 1024;
/// The smallest chunk, when the memory budget is nearly spent.
const PRESSED_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    /// Write whole blocks of uploads with `O_DIRECT` (see [`UploadFile`]).
    direct_io: bool,
    /// Blob downloads streaming right now (they share the read-ahead budget).
    active_reads: ActiveCount,
}

/// A file opened for reading and its size; `None` when it is absent
/// (blocking: call it on the blocking pool).
fn open_sized(path: &Path) -> std::io::Result<Option<(std::fs::File, u64)>> {
    let Some(f) = not_found_as_none(std::fs::File::open(path))? else {
        return Ok(None);
    };
    let size = f.metadata()?.len();
    Ok(Some((f, size)))
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
        Ok(FsStorage {
            root,
            direct_io: true,
            active_reads: ActiveCount::default(),
        })
    }

    /// Write uploads through the page cache only (`false`), or whole blocks
    /// directly to the device where the file system allows (`true`, the
    /// default). Both must behave the same; the contract tests run both.
    pub fn with_direct_io(mut self, direct_io: bool) -> Self {
        self.direct_io = direct_io;
        self
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
    ///
    /// Done with blocking `std::fs` calls in one job: every `write` and the
    /// `fsync` report their own errors (tokio's `File` reports a buffered
    /// write's error only on `flush`, so a full disk once renamed an empty
    /// file into place). Nothing is renamed unless every byte was written
    /// and synced.
    async fn write_atomically(&self, dest: &Path, bytes: Bytes) -> Result<()> {
        let tmp = self.tmp_path();
        let dest = dest.to_path_buf();
        let job = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let result = (|| {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                drop(f);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&tmp, &dest)
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        });
        Ok(job.await.map_err(std::io::Error::other)??)
    }

    /// Whether `path` holds exactly `bytes` (a small object already stored).
    async fn holds(path: &Path, bytes: &Bytes) -> Result<bool> {
        match not_found_as_none(fs::read(path).await)? {
            Some(stored) => Ok(stored == bytes.as_ref()),
            None => Ok(false),
        }
    }

    /// Stream a published (so immutable) file, or a range of it.
    async fn open_range(&self, path: &Path, range: Option<ByteRange>) -> Result<ByteStream> {
        let path = path.to_path_buf();
        // Open, size and seek in one trip to the blocking pool.
        let opened = tokio::task::spawn_blocking(move || -> Result<(std::fs::File, u64)> {
            use std::io::Seek;
            let Some((mut f, size)) = open_sized(&path)? else {
                return Err(StorageError::BlobNotFound);
            };
            let len = match range {
                None => size,
                Some(r) => {
                    if r.start > r.end || r.end > size {
                        return Err(StorageError::RangeNotSatisfiable);
                    }
                    f.seek(std::io::SeekFrom::Start(r.start))?;
                    r.len()
                }
            };
            Ok((f, len))
        })
        .await
        .map_err(std::io::Error::other)?;
        let (file, len) = opened?;
        Ok(file_stream(file, len, self.active_reads.enter()))
    }
}

/// A pending read of the next chunk of a [`file_stream`].
type ChunkRead = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Bytes)>>;

/// A download's share of the read-ahead budget: 1 MiB alone, 256 KiB among
/// 64, and less beyond, down to [`PRESSED_CHUNK`] (a thousand clients that
/// stopped reading then hold a chunk or two each, not the whole memory
/// budget, and a new download still finds room). The read-ahead budget is
/// at most a quarter of the memory budget.
fn chunk_size(download: &Active) -> u64 {
    let budget = READ_AHEAD_BUDGET.min(crate::pool::memory_budget_total() as u64 / 4);
    (budget / download.count() as u64).clamp(PRESSED_CHUNK as u64, BLOB_CHUNK_MAX)
}

/// Read the next chunk (at most `chunk` of the `remaining` bytes) on the
/// blocking pool, straight into the buffer that will be sent, once the
/// memory budget has room for it (the chunk holds its share until the
/// connection has sent it).
fn read_chunk(file: std::fs::File, remaining: u64, chunk: u64) -> ChunkRead {
    let want = remaining.min(chunk).min(SMALL.size() as u64) as usize;
    // Under memory pressure chunks shrink, so that the budget is spread
    // over every download instead of waiting for whoever holds it. With
    // room now (the usual case) the read starts at once, without a hop.
    match crate::pool::try_reserve_up_to(want, PRESSED_CHUNK) {
        Some((reservation, n)) => read_blocking(file, n, Some(reservation)),
        None => tokio::spawn(async move {
            let (reservation, n) = crate::pool::reserve_up_to(want, PRESSED_CHUNK).await;
            read_blocking(file, n, reservation)
                .await
                .map_err(std::io::Error::other)?
        }),
    }
}

/// Read `n` bytes of `file` on the blocking pool into a buffer holding
/// `reservation`.
fn read_blocking(
    mut file: std::fs::File,
    n: usize,
    reservation: Option<crate::pool::Reservation>,
) -> ChunkRead {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = SMALL.get_reserved(reservation)?;
        let mut filled = 0;
        while filled < n {
            match file.read(&mut buf.as_mut_slice()[filled..n]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((file, buf.freeze(filled)))
    })
}

/// The next `len` bytes of `file` as a stream. Each chunk is read directly
/// into the buffer that is sent (tokio's file API read into a buffer of its
/// own and copied), and the next read already runs while the previous chunk
/// is being sent, so disk (or page cache) and network overlap. A file that
/// turns out shorter than `len` is an error, never a short body.
fn file_stream(file: std::fs::File, len: u64, active: Active) -> ByteStream {
    let first = (len > 0).then(|| read_chunk(file, len, chunk_size(&active)));
    Box::pin(futures::stream::unfold(
        (first, len, active),
        |(pending, remaining, active): (Option<ChunkRead>, u64, Active)| async move {
            let result = match pending?.await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let (file, chunk) = match result {
                Ok((_, chunk)) if chunk.is_empty() => {
                    let e = std::io::Error::new(ErrorKind::UnexpectedEof, "blob file is short");
                    return Some((Err(e), (None, 0, active)));
                }
                Ok(v) => v,
                Err(e) => return Some((Err(e), (None, 0, active))),
            };
            let remaining = remaining - chunk.len() as u64;
            let next = (remaining > 0).then(|| read_chunk(file, remaining, chunk_size(&active)));
            Some((Ok(chunk), (next, remaining, active)))
        },
    ))
}

impl FsStorage {
    /// An upload's writer, writing whole blocks around the page cache when
    /// `direct_io` (and the file system allows it).
    async fn open_writer(
        &self,
        id: &UploadId,
        offset: u64,
        direct_io: bool,
    ) -> Result<Box<dyn UploadWriter>> {
        let path = self.upload_path(id);
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Option<UploadFile>> {
            use std::os::unix::fs::OpenOptionsExt;
            let Some(buffered) =
                not_found_as_none(std::fs::OpenOptions::new().write(true).open(&path))?
            else {
                return Ok(None);
            };
            // A file system without direct I/O refuses the open (EINVAL);
            // buffered writes alone are then the way.
            let direct = direct_io
                .then(|| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(&path)
                        .ok()
                })
                .flatten();
            Ok(Some(UploadFile { buffered, direct }))
        })
        .await
        .map_err(std::io::Error::other)??;
        let Some(file) = opened else {
            return Err(StorageError::UploadNotFound);
        };
        let size = file.buffered.metadata()?.len();
        if size != offset {
            return Err(StorageError::UploadOffsetMismatch {
                expected: offset,
                actual: size,
            });
        }
        Ok(Box::new(FsUploadWriter::new(file, size)?))
    }

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

#[async_trait]
impl Storage for FsStorage {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(not_found_as_none(fs::metadata(self.blob_path(digest)).await)?.map(|m| m.len()))
    }

    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        self.open_range(&self.blob_path(digest), range).await
    }

    async fn blob_file(&self, digest: &Digest) -> Result<Option<(std::fs::File, u64)>> {
        let path = self.blob_path(digest);
        Ok(tokio::task::spawn_blocking(move || open_sized(&path))
            .await
            .map_err(std::io::Error::other)??)
    }

    async fn upload_file(&self, id: &UploadId) -> Result<Option<std::fs::File>> {
        let path = self.upload_path(id);
        let opened = tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(std::io::Error::other)?;
        match opened {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn blob_put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let dest = self.blob_path(digest);
        // Only a complete copy counts as stored: anything else (a store
        // damaged before this check existed) is replaced.
        if Self::holds(&dest, &bytes).await? {
            return Ok(());
        }
        self.write_atomically(&dest, bytes).await
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

    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool> {
        let dir = self
            .root
            .join("quarantine")
            .join(digest.algorithm().as_str());
        fs::create_dir_all(&dir).await?;
        // Same file system: the rename is atomic, readers see it or nothing.
        let dest = dir.join(format!("{}.{}", digest.hex(), uuid::Uuid::new_v4()));
        Ok(not_found_as_none(fs::rename(self.blob_path(digest), dest).await)?.is_some())
    }

    async fn blob_stat(&self, digest: &Digest) -> Result<Option<crate::BlobStat>> {
        let Some(meta) = not_found_as_none(fs::metadata(self.blob_path(digest)).await)? else {
            return Ok(None);
        };
        Ok(Some(crate::BlobStat {
            size: meta.len(),
            modified: meta.modified()?,
        }))
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
        self.open_writer(id, offset, self.direct_io).await
    }

    async fn upload_writer_followed(
        &self,
        id: &UploadId,
        offset: u64,
    ) -> Result<Box<dyn UploadWriter>> {
        // Direct writes go around the page cache, so followers reading the
        // bytes straight back would read them from the device (and a GET of
        // the blob just cached would too).
        self.open_writer(id, offset, false).await
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
        let dest = self.blob_path(digest);
        if not_found_as_none(fs::metadata(&dest).await)?.is_some_and(|m| m.len() == size) {
            // Already stored (pushed before, or by a concurrent session):
            // keep the blob as it is. Renaming over it, or deleting the
            // upload inline, frees the replaced file's blocks before
            // returning (31 ms for 256 MiB here); moving the upload into
            // `tmp/` ends the session at once, and the blocks are freed in
            // the background (or by the next start-up's sweep of `tmp/`).
            drop(f);
            let doomed = self.tmp_path();
            fs::rename(&src, &doomed).await?;
            tokio::task::spawn_blocking(move || std::fs::remove_file(doomed));
            return Ok(size);
        }
        f.sync_all().await?;
        drop(f);
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

    async fn upload_list(&self) -> Result<Vec<crate::UploadInfo>> {
        let dir = self.root.join("uploads");
        let listed =
            tokio::task::spawn_blocking(move || -> std::io::Result<Vec<crate::UploadInfo>> {
                let mut out = Vec::new();
                for e in std::fs::read_dir(dir)? {
                    let e = e?;
                    // Anything that is not a session's file is not ours; skip it.
                    let Some(id) = e
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<UploadId>().ok())
                    else {
                        continue;
                    };
                    // A session ended while we listed is simply not there.
                    let Some(meta) = not_found_as_none(e.metadata())? else {
                        continue;
                    };
                    out.push(crate::UploadInfo {
                        id,
                        size: meta.len(),
                        modified: meta.modified()?,
                    });
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(out)
            })
            .await
            .map_err(std::io::Error::other)??;
        Ok(listed)
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
        self.write_atomically(&self.doc_path(key), value).await
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
        // One blocking job for the whole directory: tokio's `ReadDir` hops to
        // the blocking pool every 32 entries, which dominated listing a
        // repository with thousands of tags.
        let dir = self.doc_path(prefix);
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let Some(rd) = not_found_as_none(std::fs::read_dir(dir))? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for e in rd {
                if let Ok(name) = e?.file_name().into_string() {
                    out.push(name);
                }
            }
            out.sort_unstable();
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(listed)
    }

    async fn space(&self) -> Result<Option<crate::Space>> {
        let root = self.root.clone();
        let st = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&root))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::from)?;
        Ok(Some(crate::Space {
            total: st.f_blocks.saturating_mul(st.f_frsize),
            available: st.f_bavail.saturating_mul(st.f_frsize),
        }))
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
