//! Upload sessions when storage fails under a chunk.
//!
//! A chunk is answered only once its bytes are written out. These tests put
//! a storage backend under the registry that loses one request's writes (as
//! a full disk would) and check that this request fails, that the session
//! then reports the offset storage really holds, and that the client can
//! resume from there to a verified blob.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use berth_reference::{Digest, RepositoryName};
use berth_registry::{ByteStream, Registry, RegistryError};
use berth_storage::fs::FsStorage;
use berth_storage::{
    ByteRange, DocKey, Result as StorageResult, Storage, StorageError, UploadId, UploadWriter,
};
use bytes::Bytes;

/// The fs backend, except that while `fail` is set an upload writer keeps
/// nothing and its `finish` reports a full disk.
struct LosingStorage {
    inner: FsStorage,
    fail: Arc<AtomicBool>,
}

struct LosingWriter {
    inner: Box<dyn UploadWriter>,
    fail: bool,
}

#[async_trait]
impl UploadWriter for LosingWriter {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        if self.fail {
            return Ok(());
        }
        self.inner.write(chunk).await
    }
    async fn flush(&mut self) -> StorageResult<()> {
        self.inner.flush().await
    }
    async fn finish(self: Box<Self>) -> StorageResult<u64> {
        let size = self.inner.finish().await?;
        if self.fail {
            return Err(StorageError::StorageFull);
        }
        Ok(size)
    }
}

#[async_trait]
impl Storage for LosingStorage {
    async fn blob_size(&self, d: &Digest) -> StorageResult<Option<u64>> {
        self.inner.blob_size(d).await
    }
    async fn blob_read(&self, d: &Digest, r: Option<ByteRange>) -> StorageResult<ByteStream> {
        self.inner.blob_read(d, r).await
    }
    async fn blob_put(&self, d: &Digest, b: Bytes) -> StorageResult<()> {
        self.inner.blob_put(d, b).await
    }
    async fn blob_delete(&self, d: &Digest) -> StorageResult<bool> {
        self.inner.blob_delete(d).await
    }
    async fn blob_quarantine(&self, d: &Digest) -> StorageResult<bool> {
        self.inner.blob_quarantine(d).await
    }
    async fn blob_stat(&self, d: &Digest) -> StorageResult<Option<berth_storage::BlobStat>> {
        self.inner.blob_stat(d).await
    }
    async fn upload_list(&self) -> StorageResult<Vec<berth_storage::UploadInfo>> {
        self.inner.upload_list().await
    }
    async fn blob_list(&self) -> StorageResult<Vec<Digest>> {
        self.inner.blob_list().await
    }
    async fn upload_create(&self) -> StorageResult<UploadId> {
        self.inner.upload_create().await
    }
    async fn upload_size(&self, id: &UploadId) -> StorageResult<Option<u64>> {
        self.inner.upload_size(id).await
    }
    async fn upload_writer(
        &self,
        id: &UploadId,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        Ok(Box::new(LosingWriter {
            inner: self.inner.upload_writer(id, offset).await?,
            fail: self.fail.load(Ordering::SeqCst),
        }))
    }
    async fn upload_read(&self, id: &UploadId, r: Option<ByteRange>) -> StorageResult<ByteStream> {
        self.inner.upload_read(id, r).await
    }
    async fn upload_publish(&self, id: &UploadId, d: &Digest) -> StorageResult<u64> {
        self.inner.upload_publish(id, d).await
    }
    async fn upload_delete(&self, id: &UploadId) -> StorageResult<bool> {
        self.inner.upload_delete(id).await
    }
    async fn doc_get(&self, k: &DocKey) -> StorageResult<Option<Bytes>> {
        self.inner.doc_get(k).await
    }
    async fn doc_put(&self, k: &DocKey, v: Bytes) -> StorageResult<()> {
        self.inner.doc_put(k, v).await
    }
    async fn doc_delete(&self, k: &DocKey) -> StorageResult<bool> {
        self.inner.doc_delete(k).await
    }
    async fn doc_list(&self, k: &DocKey) -> StorageResult<Vec<String>> {
        self.inner.doc_list(k).await
    }
}

fn body(data: &[u8]) -> ByteStream {
    let frames: Vec<std::io::Result<Bytes>> = data
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(frames))
}

async fn registry() -> (tempfile::TempDir, Registry, Arc<AtomicBool>) {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let storage = LosingStorage {
        inner: FsStorage::open(dir.path()).await.unwrap(),
        fail: fail.clone(),
    };
    (dir, Registry::new(Arc::new(storage)), fail)
}

#[tokio::test]
async fn a_chunk_whose_writes_fail_is_refused_and_the_upload_resumes() {
    let (_dir, registry, fail) = registry().await;
    let repo: RepositoryName = "app/web".parse().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
    let (a, b, c) = (1_000_000, 2_000_000, data.len());

    let id = registry.upload_start(&repo).await.unwrap().id;
    let s = registry
        .upload_append(&repo, &id, Some(0), body(&data[..a]))
        .await
        .unwrap();
    assert_eq!(s.offset, a as u64);

    // The second chunk's writes are lost: the request itself fails.
    fail.store(true, Ordering::SeqCst);
    let err = registry
        .upload_append(&repo, &id, Some(a as u64), body(&data[a..b]))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::StorageFull), "{err:?}");
    fail.store(false, Ordering::SeqCst);

    // The session says where storage really is...
    let s = registry.upload_status(&repo, &id).await.unwrap();
    assert_eq!(s.offset, a as u64);
    // ...a chunk at the acknowledged offset's successor is refused...
    let err = registry
        .upload_append(&repo, &id, Some(b as u64), body(&data[b..c]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::RangeInvalid { offset } if offset == a as u64),
        "{err:?}"
    );
    // ...and the client resumes from there to a verified blob.
    registry
        .upload_append(&repo, &id, Some(a as u64), body(&data[a..b]))
        .await
        .unwrap();
    let digest = Digest::sha256_of(&data);
    let size = registry
        .upload_complete(&repo, &id, &digest, Some(body(&data[b..c])))
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    let stored = registry.blob_read(&repo, &digest, None).await.unwrap();
    let stored = berth_storage::fs::collect(stored).await.unwrap();
    assert!(stored == data, "the stored blob is the pushed bytes");
}

#[tokio::test]
async fn completing_after_a_failed_chunk_publishes_nothing() {
    let (_dir, registry, fail) = registry().await;
    let repo: RepositoryName = "app/web".parse().unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 247) as u8).collect();
    let id = registry.upload_start(&repo).await.unwrap().id;
    fail.store(true, Ordering::SeqCst);
    let err = registry
        .upload_append(&repo, &id, Some(0), body(&data))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::StorageFull), "{err:?}");
    fail.store(false, Ordering::SeqCst);
    let digest = Digest::sha256_of(&data);
    let err = registry
        .upload_complete(&repo, &id, &digest, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestInvalid { .. }),
        "{err:?}"
    );
    assert!(
        registry.blob_size(&repo, &digest).await.is_err(),
        "nothing published"
    );
}

#[tokio::test]
async fn a_monolithic_push_whose_writes_fail_publishes_nothing() {
    let (_dir, registry, fail) = registry().await;
    let repo: RepositoryName = "app/web".parse().unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let digest = Digest::sha256_of(&data);
    fail.store(true, Ordering::SeqCst);
    let err = registry
        .blob_put(&repo, &digest, body(&data))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::StorageFull), "{err:?}");
    fail.store(false, Ordering::SeqCst);
    assert!(registry.blob_size(&repo, &digest).await.is_err());
    registry
        .blob_put(&repo, &digest, body(&data))
        .await
        .unwrap();
    let stored = registry.blob_read(&repo, &digest, None).await.unwrap();
    assert!(berth_storage::fs::collect(stored).await.unwrap() == data);
}

/// Uploads whose clients stall mid-body hold no thread: with more of them
/// than the runtime has blocking threads (512), a blob can still be pushed
/// and read (its file I/O runs on those threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_do_not_starve_the_blocking_pool() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).await.unwrap();
    let registry = Arc::new(Registry::new(Arc::new(storage)));
    let repo: RepositoryName = "app/slow".parse().unwrap();
    const STALLED: usize = 600;
    const FIRST: usize = 256 * 1024;
    const IDLE: usize = 100;
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    // Idle uploads first, so that the stalled ones below get the smallest
    // batches (256 KiB: many uploads share the batch budget) and their
    // first chunk is a whole batch, handed to the writer.
    for _ in 0..IDLE {
        let id = registry.upload_start(&repo).await.unwrap().id;
        let (registry, repo) = (registry.clone(), repo.clone());
        tasks.push(tokio::spawn(async move {
            let body: ByteStream = Box::pin(futures::stream::pending());
            let _ = registry.upload_append(&repo, &id, Some(0), body).await;
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for _ in 0..STALLED {
        let id = registry.upload_start(&repo).await.unwrap().id;
        ids.push(id.clone());
        let (registry, repo) = (registry.clone(), repo.clone());
        tasks.push(tokio::spawn(async move {
            // One batch's worth, then nothing more, ever.
            let body: ByteStream = Box::pin(
                futures::stream::iter(vec![Ok(Bytes::from(vec![1u8; FIRST]))])
                    .chain(futures::stream::pending()),
            );
            let _ = registry.upload_append(&repo, &id, Some(0), body).await;
        }));
    }
    // Wait until every stalled upload has had its first batch written
    // (status reads storage on the blocking pool, so it starves too).
    let written = async {
        for id in &ids {
            while registry.upload_status(&repo, id).await.unwrap().offset != FIRST as u64 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), written)
        .await
        .expect("every stalled upload's first batch is written, and status answers");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 239) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let push_and_read = async {
        registry
            .blob_put(&repo, &digest, body(&data))
            .await
            .unwrap();
        let stored = registry.blob_read(&repo, &digest, None).await.unwrap();
        berth_storage::fs::collect(stored).await.unwrap()
    };
    let stored = tokio::time::timeout(std::time::Duration::from_secs(20), push_and_read)
        .await
        .expect("a push and a read finish while 600 uploads are stalled");
    assert!(stored == data);
    for t in tasks {
        t.abort();
    }
}
