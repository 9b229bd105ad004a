//! The storage contract, written once against `dyn Storage` so that every
//! backend (the local disk, and S3 on a real Garage) runs the same checks.

mod common;

use std::sync::Arc;

use berth_reference::Digest;
use berth_storage::fs::{collect, FsStorage};
use berth_storage::{ByteRange, DocKey, Storage, StorageError};
use bytes::Bytes;
use common::s3;

fn fresh_prefix() -> String {
    format!("contract/{}", uuid::Uuid::new_v4().simple())
}

/// Every backend, and the fs backend both with direct I/O (the default)
/// and through the page cache only, which is what it falls back to where
/// the file system refuses direct I/O.
async fn backends() -> Vec<(tempfile::TempDir, Arc<dyn Storage>)> {
    let mut out: Vec<(tempfile::TempDir, Arc<dyn Storage>)> = Vec::new();
    for direct_io in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::open(dir.path())
            .await
            .unwrap()
            .with_direct_io(direct_io);
        out.push((dir, Arc::new(fs)));
    }
    out.push((
        tempfile::tempdir().unwrap(),
        Arc::new(s3(&fresh_prefix()).await),
    ));
    out
}

#[tokio::test]
async fn upload_publish_read_delete() {
    for (_dir, s) in backends().await {
        let id = s.upload_create().await.unwrap();
        assert_eq!(s.upload_size(&id).await.unwrap(), Some(0));
        let mut w = s.upload_writer(&id, 0).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 6);
        let mut w = s.upload_writer(&id, 6).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 11);
        let d = Digest::sha256_of(b"hello world");
        assert_eq!(
            s.blob_size(&d).await.unwrap(),
            None,
            "nothing visible before publish"
        );
        assert_eq!(s.upload_publish(&id, &d).await.unwrap(), 11);
        assert_eq!(
            s.upload_size(&id).await.unwrap(),
            None,
            "session ends on publish"
        );
        assert_eq!(s.blob_size(&d).await.unwrap(), Some(11));
        let all = collect(s.blob_read(&d, None).await.unwrap()).await.unwrap();
        assert_eq!(all, b"hello world");
        let part = collect(
            s.blob_read(&d, Some(ByteRange { start: 6, end: 11 }))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(part, b"world");
        assert!(matches!(
            s.blob_read(&d, Some(ByteRange { start: 6, end: 12 })).await,
            Err(StorageError::RangeNotSatisfiable)
        ));
        assert_eq!(s.blob_list().await.unwrap(), vec![d.clone()]);
        let small = Digest::sha256_of(b"{}");
        s.blob_put(&small, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(s.blob_bytes_total().await.unwrap(), 11 + 2);
        assert!(s.blob_delete(&small).await.unwrap());
        assert_eq!(s.blob_bytes_total().await.unwrap(), 11);
        assert!(s.blob_delete(&d).await.unwrap());
        assert!(!s.blob_delete(&d).await.unwrap());
        assert_eq!(s.blob_bytes_total().await.unwrap(), 0);
        assert!(matches!(
            s.blob_read(&d, None).await,
            Err(StorageError::BlobNotFound)
        ));
    }
}

#[tokio::test]
async fn writer_refuses_wrong_offset_and_unknown_session() {
    for (_dir, s) in backends().await {
        let id = s.upload_create().await.unwrap();
        assert!(matches!(
            s.upload_writer(&id, 5).await,
            Err(StorageError::UploadOffsetMismatch {
                expected: 5,
                actual: 0
            })
        ));
        assert!(s.upload_delete(&id).await.unwrap());
        assert!(matches!(
            s.upload_writer(&id, 0).await,
            Err(StorageError::UploadNotFound)
        ));
    }
}

#[tokio::test]
async fn documents() {
    for (_dir, s) in backends().await {
        let k = DocKey::new(["repositories", "a/b", "_tags", "v1"]).unwrap();
        assert_eq!(s.doc_get(&k).await.unwrap(), None);
        s.doc_put(&k, Bytes::from_static(b"one")).await.unwrap();
        s.doc_put(&k, Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(s.doc_get(&k).await.unwrap().as_deref(), Some(&b"two"[..]));
        let k2 = DocKey::new(["repositories", "a/b", "_tags", "v0"]).unwrap();
        s.doc_put(&k2, Bytes::new()).await.unwrap();
        let tags = DocKey::new(["repositories", "a/b", "_tags"]).unwrap();
        assert_eq!(s.doc_list(&tags).await.unwrap(), vec!["v0", "v1"]);
        assert_eq!(
            s.doc_get(&tags).await.unwrap(),
            None,
            "a prefix holds no value"
        );
        assert!(s.doc_delete(&k).await.unwrap());
        assert_eq!(s.doc_list(&tags).await.unwrap(), vec!["v0"]);
        let repo = DocKey::new(["repositories", "a/b"]).unwrap();
        assert!(s.doc_delete(&repo).await.unwrap());
        assert!(s.doc_list(&tags).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn concurrent_publish_of_same_blob_is_safe() {
    for (_dir, s) in backends().await {
        let body = vec![7u8; 1 << 20];
        let d = Digest::sha256_of(&body);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            let body = Bytes::from(body.clone());
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                let id = s.upload_create().await.unwrap();
                let mut w = s.upload_writer(&id, 0).await.unwrap();
                w.write(body).await.unwrap();
                w.finish().await.unwrap();
                s.upload_publish(&id, &d).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let got = collect(s.blob_read(&d, None).await.unwrap()).await.unwrap();
        assert_eq!(Digest::sha256_of(&got), d);
    }
}

#[tokio::test]
async fn restart_discards_temporaries_and_keeps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::open(dir.path()).await.unwrap();
    let id = s.upload_create().await.unwrap();
    let mut w = s.upload_writer(&id, 0).await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.finish().await.unwrap();
    std::fs::write(dir.path().join("tmp").join("half-written"), b"x").unwrap();
    drop(s);
    let s = FsStorage::open(dir.path()).await.unwrap();
    assert_eq!(s.upload_size(&id).await.unwrap(), Some(7));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert!(s.blob_list().await.unwrap().is_empty());
}

#[tokio::test]
async fn flushed_upload_bytes_are_readable_while_it_grows() {
    for (_dir, s) in backends().await {
        let id = s.upload_create().await.unwrap();
        let mut w = s.upload_writer(&id, 0).await.unwrap();
        w.write(Bytes::from_static(b"abcdef")).await.unwrap();
        w.flush().await.unwrap();
        let part = collect(
            s.upload_read(&id, Some(ByteRange { start: 2, end: 100 }))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(part, b"cdef", "a range past the end yields what is there");
        w.write(Bytes::from_static(b"gh")).await.unwrap();
        w.finish().await.unwrap();
        let all = collect(s.upload_read(&id, None).await.unwrap())
            .await
            .unwrap();
        assert_eq!(all, b"abcdefgh");
    }
}

/// Uploads resumed at offsets that are not block-aligned, written in pieces
/// of every shape (tiny frames, whole aligned batches, odd sizes), with
/// flushes in between, keep every byte in order.
#[tokio::test]
async fn uploads_of_awkward_shapes_keep_every_byte() {
    use berth_storage::batch::Batcher;
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    // (bytes in this request, piece size, whether pieces are pre-batched)
    let requests = [
        (5_000usize, 7usize, false),
        (1_048_576, 1_048_576, true),
        (3_000, 4_096, false),
        (2_000_000, 300_001, true),
        (5_000_000, 65_536, false),
    ];
    for (_dir, s) in backends().await {
        let id = s.upload_create().await.unwrap();
        let mut at = 0usize;
        for (i, &(len, piece, batched)) in requests.iter().enumerate() {
            let end = (at + len).min(data.len());
            let mut w = s.upload_writer(&id, at as u64).await.unwrap();
            if batched {
                // The registry's way: aligned batches, shared not copied.
                let mut b = Batcher::new(at as u64, piece);
                let mut rest = &data[at..end];
                while !rest.is_empty() {
                    let n = b.fill(rest).unwrap();
                    rest = &rest[n..];
                    if b.is_full() {
                        w.write(b.take().unwrap()).await.unwrap();
                    }
                }
                if let Some(last) = b.take() {
                    w.write(last).await.unwrap();
                }
            } else {
                for (j, p) in data[at..end].chunks(piece).enumerate() {
                    w.write(Bytes::copy_from_slice(p)).await.unwrap();
                    if j % 5 == 4 {
                        w.flush().await.unwrap();
                    }
                }
            }
            assert_eq!(w.finish().await.unwrap(), end as u64, "request {i}");
            at = end;
            let stored = collect(s.upload_read(&id, None).await.unwrap())
                .await
                .unwrap();
            assert!(stored == data[..at], "request {i}: stored bytes differ");
        }
        let d = Digest::sha256_of(&data);
        assert_eq!(s.upload_publish(&id, &d).await.unwrap(), data.len() as u64);
        let got = collect(s.blob_read(&d, None).await.unwrap()).await.unwrap();
        assert!(got == data);
    }
}

/// Publishing a blob that is already stored ends the session and leaves
/// the stored blob as it was.
#[tokio::test]
async fn publishing_a_stored_blob_again_ends_the_session() {
    for (_dir, s) in backends().await {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 199) as u8).collect();
        let d = Digest::sha256_of(&body);
        for round in 0..2 {
            let id = s.upload_create().await.unwrap();
            let mut w = s.upload_writer(&id, 0).await.unwrap();
            w.write(Bytes::from(body.clone())).await.unwrap();
            w.finish().await.unwrap();
            assert_eq!(s.upload_publish(&id, &d).await.unwrap(), body.len() as u64);
            assert_eq!(s.upload_size(&id).await.unwrap(), None, "round {round}");
            let got = collect(s.blob_read(&d, None).await.unwrap()).await.unwrap();
            assert!(got == body, "round {round}");
        }
        assert_eq!(s.blob_list().await.unwrap(), vec![d]);
    }
}
