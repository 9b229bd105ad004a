//! An interrupted blob transfer into an OCI layout resumes from the bytes
//! already written (a ranged read of the source), and the result verifies.

use std::sync::Mutex;

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::Digest;
use berth_transfer::{
    BlobRead, Destination, LayoutDest, ManifestBlob, Result, Source, TransferError,
};
use berth_upstream::UpstreamError;
use bytes::Bytes;

struct Flaky {
    data: Vec<u8>,
    /// Offsets asked for, in order.
    asked: Mutex<Vec<u64>>,
    /// Bytes served before the first read breaks.
    break_after: usize,
}

#[async_trait]
impl Source for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn root(&self) -> Result<ManifestBlob> {
        unreachable!()
    }
    async fn manifest(&self, _d: &Reference) -> Result<ManifestBlob> {
        unreachable!()
    }
    async fn blob(&self, _d: &Reference, offset: u64) -> Result<BlobRead> {
        let first = {
            let mut a = self.asked.lock().unwrap();
            a.push(offset);
            a.len() == 1
        };
        let start = offset as usize;
        let items: Vec<Result<Bytes>> = if first {
            let mut v: Vec<Result<Bytes>> = self.data[..self.break_after]
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            v.push(Err(TransferError::registry(
                "reading blob",
                UpstreamError::Transport {
                    message: "connection reset".into(),
                    source: None,
                },
            )));
            v
        } else {
            self.data[start..]
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect()
        };
        Ok(BlobRead {
            offset,
            stream: Box::pin(futures::stream::iter(items)),
        })
    }
}

#[tokio::test]
async fn interrupted_blob_resumes_from_what_was_written() {
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let desc = Reference {
        digest: Digest::sha256_of(&data),
        size: data.len() as u64,
        media_type: "application/octet-stream".into(),
    };
    let src = Flaky {
        data: data.clone(),
        asked: Mutex::new(Vec::new()),
        break_after: 300_000,
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = LayoutDest::create(dir.path(), Some("t".into()))
        .await
        .unwrap();
    assert!(!dest.has_blob(&desc).await.unwrap());
    let seen = std::sync::atomic::AtomicU64::new(0);
    dest.put_blob(&desc, &src, &|n| {
        seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(*src.asked.lock().unwrap(), vec![0, 300_000]);
    assert!(dest.has_blob(&desc).await.unwrap());
    let path = dir.path().join("blobs/sha256").join(desc.digest.hex());
    assert_eq!(std::fs::read(path).unwrap(), data);
    dest.commit().await.unwrap();
    assert!(!dir.path().join(".berth-ingest").exists());
}
