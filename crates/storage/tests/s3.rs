//! What the S3 backend promises beyond the shared contract: sessions that
//! any replica continues, parts never visible before completion, stale
//! multipart uploads reclaimed, listings past one page, presigned GETs, and
//! settings refused before any request. All against a real Garage.

mod common;

use std::time::Duration;

use berth_reference::Digest;
use berth_storage::fs::collect;
use berth_storage::s3::{S3Storage, Secret};
use berth_storage::{ByteRange, DocKey, Storage, StorageError};
use bytes::Bytes;
use common::{garage, s3_config as config};
use futures::StreamExt;

const MIB: usize = 1024 * 1024;

fn prefix() -> String {
    format!("s3test/{}/", uuid::Uuid::new_v4().simple())
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8)
        .collect()
}

/// Two stores on one bucket and prefix are two replicas: a session opened
/// on one is appended to, read and published through the other, and the
/// blob is at once readable from both.
#[tokio::test]
async fn a_session_moves_between_replicas() {
    let p = prefix();
    let a = S3Storage::open(config(&p)).await.unwrap();
    let b = S3Storage::open(config(&p)).await.unwrap();
    let body = data(13 * MIB + 17, 1);
    let id = a.upload_create().await.unwrap();
    let mut w = b.upload_writer(&id, 0).await.unwrap();
    w.write(Bytes::copy_from_slice(&body[..6 * MIB]))
        .await
        .unwrap();
    assert_eq!(w.finish().await.unwrap(), 6 * MIB as u64);
    assert_eq!(a.upload_size(&id).await.unwrap(), Some(6 * MIB as u64));
    let mut w = a.upload_writer(&id, 6 * MIB as u64).await.unwrap();
    for piece in body[6 * MIB..].chunks(300_001) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert_eq!(w.finish().await.unwrap(), body.len() as u64);
    let back = collect(b.upload_read(&id, None).await.unwrap())
        .await
        .unwrap();
    assert!(back == body, "read back through the other replica");
    let d = Digest::sha256_of(&body);
    assert_eq!(b.blob_size(&d).await.unwrap(), None);
    // Two segments of at least 5 MiB: concatenated server-side.
    assert_eq!(b.upload_publish(&id, &d).await.unwrap(), body.len() as u64);
    assert_eq!(a.upload_size(&id).await.unwrap(), None);
    for s in [&a, &b] {
        let got = collect(s.blob_read(&d, None).await.unwrap()).await.unwrap();
        assert!(got == body);
        let r = ByteRange {
            start: 5 * MIB as u64 - 3,
            end: 11 * MIB as u64 + 5,
        };
        let part = collect(s.blob_read(&d, Some(r)).await.unwrap())
            .await
            .unwrap();
        assert!(part == body[r.start as usize..r.end as usize]);
    }
    assert!(a.upload_list().await.unwrap().is_empty());
}

/// A writer dropped mid-blob (a failed request) leaves the session as it
/// was and no blob; one that never finished or aborted (a killed replica)
/// leaves a multipart upload that the stale-upload sweep aborts.
#[tokio::test]
async fn unfinished_writers_leave_nothing_visible() {
    let s = S3Storage::open(config(&prefix())).await.unwrap();
    let id = s.upload_create().await.unwrap();
    let mut w = s.upload_writer(&id, 0).await.unwrap();
    w.write(Bytes::from(data(11 * MIB, 2))).await.unwrap();
    drop(w);
    assert_eq!(s.upload_size(&id).await.unwrap(), Some(0));
    assert!(collect(s.upload_read(&id, None).await.unwrap())
        .await
        .unwrap()
        .is_empty());

    let mut w = s.upload_writer(&id, 0).await.unwrap();
    w.write(Bytes::from(data(11 * MIB, 3))).await.unwrap();
    // As if the process died: no destructor runs, the parts stay.
    std::mem::forget(w);
    assert_eq!(s.upload_size(&id).await.unwrap(), Some(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut aborted = 0;
    while aborted == 0 && tokio::time::Instant::now() < deadline {
        aborted += s.abandoned_writes_sweep(Duration::ZERO).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        aborted >= 1,
        "the forgotten writer's multipart upload was aborted"
    );
    assert_eq!(s.abort_stale_multipart(Duration::ZERO).await.unwrap(), 0);
    // Young uploads are left alone.
    let mut w = s.upload_writer(&id, 0).await.unwrap();
    w.write(Bytes::from(data(6 * MIB, 4))).await.unwrap();
    assert_eq!(
        s.abort_stale_multipart(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(w.finish().await.unwrap(), 6 * MIB as u64);
}

/// Listings follow every page: more documents and blobs than one page holds.
#[tokio::test]
async fn listings_past_one_page() {
    let s = S3Storage::open(config(&prefix())).await.unwrap();
    let tags = DocKey::new(["repositories", "big", "_tags"]).unwrap();
    let names: Vec<String> = (0..1010).map(|i| format!("t{i:05}")).collect();
    futures::stream::iter(names.clone())
        .map(|n| {
            let s = s.clone();
            let k = tags.join(&n).unwrap();
            async move { s.doc_put(&k, Bytes::from(n)).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(s.doc_list(&tags).await.unwrap(), names);
    let repo = DocKey::new(["repositories", "big"]).unwrap();
    assert_eq!(s.doc_list(&repo).await.unwrap(), vec!["_tags"]);
    assert!(s.doc_delete(&repo).await.unwrap());
    assert!(s.doc_list(&tags).await.unwrap().is_empty());
    assert!(!s.doc_delete(&repo).await.unwrap());
}

/// With redirects on, a presigned URL serves the blob to a plain client
/// holding no credentials, and only for its lifetime's signature.
#[tokio::test]
async fn presigned_gets_serve_the_blob() {
    let mut cfg = config(&prefix());
    cfg.presign_blob_gets = Some(Duration::from_secs(60));
    let s = S3Storage::open(cfg).await.unwrap();
    let body = data(100_000, 5);
    let d = Digest::sha256_of(&body);
    s.blob_put(&d, Bytes::from(body.clone())).await.unwrap();
    let url = s.blob_presigned_url(&d).await.unwrap().expect("a URL");
    assert!(!url.contains(&garage().secret), "no secret in the URL");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", &url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == body);
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &tampered])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    let off = S3Storage::open(config(&prefix())).await.unwrap();
    assert_eq!(off.blob_presigned_url(&d).await.unwrap(), None);
}

/// Wrong settings fail at open, naming the problem and never the secret.
#[tokio::test]
async fn bad_settings_fail_at_open() {
    let mut wrong_secret = config("");
    wrong_secret.secret_access_key = Some(Secret("0".repeat(64)));
    let e = S3Storage::open(wrong_secret).await.err().expect("refused");
    assert!(!e.to_string().contains(&garage().secret), "{e}");
    let mut no_bucket = config("");
    no_bucket.bucket = "no-such-bucket".into();
    assert!(S3Storage::open(no_bucket).await.is_err());
    for (bucket, prefix) in [("UPPER", ""), ("ok-bucket", "../x"), ("ok-bucket", "a b")] {
        let mut c = config(prefix);
        c.bucket = bucket.into();
        assert!(
            S3Storage::open(c).await.is_err(),
            "{bucket:?} {prefix:?} accepted"
        );
    }
    let mut small = config("");
    small.part_size = MIB;
    assert!(S3Storage::open(small).await.is_err());
}

/// A range past the end of a blob is refused, as on the local disk; a
/// missing blob is BlobNotFound, not an I/O error.
#[tokio::test]
async fn ranges_and_absence() {
    let s = S3Storage::open(config(&prefix())).await.unwrap();
    let body = data(1000, 6);
    let d = Digest::sha256_of(&body);
    assert!(matches!(
        s.blob_read(&d, None).await,
        Err(StorageError::BlobNotFound)
    ));
    s.blob_put(&d, Bytes::from(body)).await.unwrap();
    for (start, end) in [(990, 1001), (1000, 1001), (2000, 3000)] {
        assert!(
            matches!(
                s.blob_read(&d, Some(ByteRange { start, end })).await,
                Err(StorageError::RangeNotSatisfiable)
            ),
            "{start}..{end}"
        );
    }
    assert!(s.blob_quarantine(&d).await.unwrap());
    assert_eq!(s.blob_size(&d).await.unwrap(), None);
    assert!(!s.blob_quarantine(&d).await.unwrap());
}
