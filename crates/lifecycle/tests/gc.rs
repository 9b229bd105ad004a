//! Garbage collection and upload expiry on a real registry over the local
//! disk backend: what goes, what stays, and GC racing concurrent pushers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_lifecycle::{Lifecycle, LifecycleConfig};
use berth_reference::{Digest, ManifestRef, RepositoryName};
use berth_registry::{ByteStream, Registry, RegistryError};
use berth_storage::fs::FsStorage;
use bytes::Bytes;

fn body(data: &[u8]) -> ByteStream {
    let data = Bytes::copy_from_slice(data);
    Box::pin(futures::stream::iter(vec![Ok(data)]))
}

fn bytes_of(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": Digest::sha256_of(b).to_string(), "size": b.len()});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

async fn setup(grace: Duration) -> (tempfile::TempDir, Arc<Registry>, Lifecycle) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).await.unwrap();
    let registry = Arc::new(Registry::new(Arc::new(storage)));
    let lifecycle = Lifecycle::new(
        registry.clone(),
        LifecycleConfig {
            gc_grace: grace,
            upload_ttl: Duration::from_secs(3600),
            gc_interval: None,
            ..LifecycleConfig::default()
        },
    );
    (dir, registry, lifecycle)
}

/// Push an image the way clients do: skip blobs the repository already
/// has, upload the rest, then the manifest. A manifest refused because GC
/// took a blob in between is pushed again, blobs first.
async fn push_image(
    registry: &Registry,
    repo: &RepositoryName,
    tag: &str,
    blobs: &[&[u8]],
) -> Vec<u8> {
    let m = manifest(blobs[0], &blobs[1..]);
    for attempt in 0..50 {
        for b in blobs {
            let d = Digest::sha256_of(b);
            if registry.blob_size(repo, &d).await.is_err() {
                registry.blob_put(repo, &d, body(b)).await.unwrap();
            }
        }
        let reference = ManifestRef::Tag(tag.parse().unwrap());
        match registry
            .manifest_put(repo, &reference, Some(OCI), Bytes::from(m.clone()))
            .await
        {
            Ok(_) => return m,
            Err(RegistryError::ManifestBlobUnknown(_)) if attempt < 49 => continue,
            Err(e) => panic!("manifest push failed: {e:?}"),
        }
    }
    unreachable!()
}

async fn readable(registry: &Registry, repo: &RepositoryName, data: &[u8]) -> bool {
    let d = Digest::sha256_of(data);
    match registry.blob_read(repo, &d, None).await {
        Ok(s) => berth_storage::fs::collect(s).await.is_ok_and(|v| v == data),
        Err(_) => false,
    }
}

#[tokio::test]
async fn unreferenced_blobs_go_referenced_stay_and_deletes_free_space() {
    let (_dir, registry, lifecycle) = setup(Duration::ZERO).await;
    let repo: RepositoryName = "team/app".parse().unwrap();
    let (config, layer, shared) = (bytes_of(1, 300), bytes_of(2, 50_000), bytes_of(3, 70_000));
    let m1 = push_image(&registry, &repo, "v1", &[&config, &layer, &shared]).await;
    let other: RepositoryName = "team/other".parse().unwrap();
    let config2 = bytes_of(4, 310);
    let m2 = push_image(&registry, &other, "v1", &[&config2, &shared]).await;
    let orphan = bytes_of(5, 40_000);
    registry
        .blob_put(&repo, &Digest::sha256_of(&orphan), body(&orphan))
        .await
        .unwrap();

    // A dry run says what would go and deletes nothing.
    let dry = lifecycle.collect(true).await.unwrap();
    assert_eq!(dry.gc.blobs_deleted, 1, "{dry:?}");
    assert_eq!(dry.gc.bytes_freed, orphan.len() as u64);
    assert!(readable(&registry, &repo, &orphan).await);

    let run = lifecycle.collect(false).await.unwrap();
    assert_eq!(run.gc.blobs_deleted, 1, "{run:?}");
    assert_eq!(run.gc.deleted, vec![Digest::sha256_of(&orphan).to_string()]);
    assert!(
        !readable(&registry, &repo, &orphan).await,
        "the orphan is gone"
    );
    for b in [&config, &layer, &shared] {
        assert!(readable(&registry, &repo, b).await, "referenced blobs stay");
    }

    // Deleting the first image frees its own blobs, not the shared layer.
    registry
        .manifest_delete(&repo, &ManifestRef::Digest(Digest::sha256_of(&m1)))
        .await
        .unwrap();
    let run = lifecycle.collect(false).await.unwrap();
    assert_eq!(
        run.gc.blobs_deleted, 3,
        "config, layer and the manifest itself: {run:?}"
    );
    assert_eq!(
        run.gc.bytes_freed,
        (config.len() + layer.len() + m1.len()) as u64
    );
    assert!(
        readable(&registry, &other, &shared).await,
        "still used by team/other"
    );
    let got = registry
        .manifest_get(&other, &ManifestRef::Tag("v1".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(got.bytes.as_ref(), m2.as_slice());

    // A blob DELETE unlinks it; the next collection frees it.
    let lone = bytes_of(6, 1000);
    let lone_repo: RepositoryName = "team/lone".parse().unwrap();
    registry
        .blob_put(&lone_repo, &Digest::sha256_of(&lone), body(&lone))
        .await
        .unwrap();
    registry
        .blob_delete(&lone_repo, &Digest::sha256_of(&lone))
        .await
        .unwrap();
    let run = lifecycle.collect(false).await.unwrap();
    assert_eq!(run.gc.blobs_deleted, 1);
    assert!(registry
        .storage()
        .blob_size(&Digest::sha256_of(&lone))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn the_grace_period_keeps_a_push_in_progress() {
    let (_dir, registry, lifecycle) = setup(Duration::from_secs(3600)).await;
    let repo: RepositoryName = "team/app".parse().unwrap();
    let layer = bytes_of(7, 10_000);
    registry
        .blob_put(&repo, &Digest::sha256_of(&layer), body(&layer))
        .await
        .unwrap();
    let run = lifecycle.collect(false).await.unwrap();
    assert_eq!(run.gc.blobs_deleted, 0);
    assert_eq!(run.gc.blobs_young, 1);
    assert!(readable(&registry, &repo, &layer).await);
}

#[tokio::test]
async fn idle_uploads_expire_and_busy_ones_stay() {
    let (_dir, registry, _) = setup(Duration::ZERO).await;
    let lifecycle = Lifecycle::new(
        registry.clone(),
        LifecycleConfig {
            gc_grace: Duration::ZERO,
            upload_ttl: Duration::from_secs(1),
            gc_interval: None,
            ..LifecycleConfig::default()
        },
    );
    let repo: RepositoryName = "team/app".parse().unwrap();
    let old = registry.upload_start(&repo).await.unwrap();
    registry
        .upload_append(&repo, &old.id, Some(0), body(&bytes_of(8, 100_000)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fresh = registry.upload_start(&repo).await.unwrap();
    let run = lifecycle.collect(false).await.unwrap();
    assert_eq!(run.uploads.open, 2);
    assert_eq!(run.uploads.expired, 1, "{run:?}");
    assert_eq!(run.uploads.bytes_freed, 100_000);
    assert!(matches!(
        registry.upload_status(&repo, &old.id).await,
        Err(RegistryError::BlobUploadUnknown)
    ));
    assert_eq!(
        registry
            .upload_status(&repo, &fresh.id)
            .await
            .unwrap()
            .offset,
        0
    );
}

/// GC in a loop with no grace at all, against 8 pushers of images that
/// share layers, for a bounded time: every image whose manifest push
/// succeeded has every blob, and GC did delete things meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_racing_eight_pushers_never_loses_a_blob_of_a_pushed_image() {
    let (_dir, registry, lifecycle) = setup(Duration::ZERO).await;
    let shared: Vec<Vec<u8>> = (0..4).map(|i| bytes_of(100 + i, 20_000)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let (lifecycle, stop) = (lifecycle.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut deleted) = (0, 0);
            while !stop.load(Ordering::SeqCst) && runs < 10_000 {
                let r = lifecycle.collect(false).await.unwrap();
                runs += 1;
                deleted += r.gc.blobs_deleted;
            }
            (runs, deleted)
        })
    };
    let mut pushers = Vec::new();
    for p in 0..8u64 {
        let (registry, shared) = (registry.clone(), shared.clone());
        pushers.push(tokio::spawn(async move {
            let repo: RepositoryName = format!("race/p{p}").parse().unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
            let mut pushed = 0u64;
            while tokio::time::Instant::now() < deadline && pushed < 400 {
                let config = bytes_of(1000 * p + pushed, 200);
                let own = bytes_of(500_000 + 1000 * p + pushed, 3000);
                let a = &shared[(p + pushed) as usize % 4];
                let b = &shared[(p + pushed + 1) as usize % 4];
                let tag = format!("t{pushed}");
                push_image(&registry, &repo, &tag, &[&config, a, &own, b]).await;
                // Older images lose their tag, so GC has work to do.
                if pushed > 0 {
                    let d = registry
                        .manifest_get(
                            &repo,
                            &ManifestRef::Tag(format!("t{}", pushed - 1).parse().unwrap()),
                        )
                        .await
                        .unwrap()
                        .digest;
                    registry
                        .manifest_delete(&repo, &ManifestRef::Digest(d))
                        .await
                        .unwrap();
                }
                for blob in [&config, a, &own, b] {
                    assert!(
                        readable(&registry, &repo, blob).await,
                        "pusher {p} image {pushed} lacks a blob"
                    );
                }
                pushed += 1;
            }
            (repo, pushed)
        }));
    }
    let mut images = Vec::new();
    for t in pushers {
        images.push(t.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let (runs, deleted) = gc.await.unwrap();
    assert!(runs > 3, "GC ran {runs} times");
    assert!(
        deleted > 0,
        "GC deleted nothing: the race was not exercised"
    );
    // The last image of each pusher survives one more collection intact.
    lifecycle.collect(false).await.unwrap();
    for (repo, pushed) in images {
        assert!(pushed > 5, "{repo} pushed only {pushed} images");
        let tag = format!("t{}", pushed - 1);
        let m = registry
            .manifest_get(&repo, &ManifestRef::Tag(tag.parse().unwrap()))
            .await
            .unwrap();
        let parsed = berth_manifest::Manifest::parse(&m.bytes, Some(&m.media_type)).unwrap();
        for blob in parsed.blobs {
            assert!(registry.blob_size(&repo, &blob.digest).await.is_ok());
        }
    }
}

#[tokio::test]
async fn retention_keeps_patterns_and_the_most_recent_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).await.unwrap();
    let registry = Arc::new(Registry::new(Arc::new(storage)));
    let rule = berth_lifecycle::RetentionRule {
        repositories: vec!["team/**".parse().unwrap()],
        keep_last: Some(2),
        keep_tags: vec!["v*".into()],
        pulled_within: None,
        delete_untagged: true,
    };
    let lifecycle = Lifecycle::new(
        registry.clone(),
        LifecycleConfig {
            gc_grace: Duration::ZERO,
            gc_interval: None,
            retention: vec![rule],
            ..LifecycleConfig::default()
        },
    );
    let repo: RepositoryName = "team/app".parse().unwrap();
    let other: RepositoryName = "other/app".parse().unwrap();
    let mut manifests = HashMap::new();
    for (i, tag) in ["v1", "dev-a", "dev-b", "dev-c"].iter().enumerate() {
        let config = bytes_of(300 + i as u64, 200);
        let layer = bytes_of(400 + i as u64, 5000);
        manifests.insert(
            *tag,
            push_image(&registry, &repo, tag, &[&config, &layer]).await,
        );
        push_image(&registry, &other, tag, &[&config, &layer]).await;
        // Push times are kept in seconds: make the order unambiguous.
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    // A pull makes dev-a the most recently used tag.
    registry
        .manifest_get(&repo, &ManifestRef::Tag("dev-a".parse().unwrap()))
        .await
        .unwrap();
    // An untagged manifest, and a signature-like referrer of v1.
    let (c, l) = (bytes_of(500, 100), bytes_of(501, 100));
    for b in [&c, &l] {
        registry
            .blob_put(&repo, &Digest::sha256_of(b), body(b))
            .await
            .unwrap();
    }
    let untagged = manifest(&c, &[&l]);
    let untagged_digest = Digest::sha256_of(&untagged);
    registry
        .manifest_put(
            &repo,
            &ManifestRef::Digest(untagged_digest.clone()),
            Some(OCI),
            Bytes::from(untagged.clone()),
        )
        .await
        .unwrap();
    let v1 = Digest::sha256_of(&manifests["v1"]);
    let mut signature: serde_json::Value = serde_json::from_slice(&manifest(&c, &[&l])).unwrap();
    signature["subject"] = serde_json::json!({
        "mediaType": OCI, "digest": v1.to_string(), "size": manifests["v1"].len()
    });
    let signature = serde_json::to_vec(&signature).unwrap();
    let signature_digest = Digest::sha256_of(&signature);
    registry
        .manifest_put(
            &repo,
            &ManifestRef::Digest(signature_digest.clone()),
            Some(OCI),
            Bytes::from(signature),
        )
        .await
        .unwrap();

    let dry = lifecycle.collect(true).await.unwrap();
    assert_eq!(
        dry.retention.tags_deleted,
        vec!["team/app:dev-b".to_string()],
        "{dry:?}"
    );
    let mut would_go = dry.retention.manifests_deleted.clone();
    would_go.sort();
    let tags = |r: &RepositoryName| {
        let registry = registry.clone();
        let r = r.clone();
        async move {
            let mut t: Vec<String> = registry
                .tag_targets(&r)
                .await
                .unwrap()
                .into_iter()
                .map(|(t, _)| t.to_string())
                .collect();
            t.sort();
            t
        }
    };
    assert_eq!(
        tags(&repo).await,
        ["dev-a", "dev-b", "dev-c", "v1"],
        "a dry run deletes nothing"
    );

    let run = lifecycle.collect(false).await.unwrap();
    assert_eq!(
        run.retention.tags_deleted,
        vec!["team/app:dev-b".to_string()]
    );
    let mut gone = run.retention.manifests_deleted.clone();
    gone.sort();
    let mut expected = vec![
        format!("team/app@{untagged_digest}"),
        format!("team/app@{}", Digest::sha256_of(&manifests["dev-b"])),
    ];
    expected.sort();
    assert_eq!(gone, expected, "{run:?}");
    assert_eq!(would_go, expected, "the dry run said as much: {dry:?}");
    assert_eq!(tags(&repo).await, ["dev-a", "dev-c", "v1"]);
    assert_eq!(
        tags(&other).await.len(),
        4,
        "repositories no rule matches keep everything"
    );
    assert!(
        registry
            .manifest_get(&repo, &ManifestRef::Digest(signature_digest))
            .await
            .is_ok(),
        "a referrer of a kept manifest stays"
    );
    // dev-b's manifest and blobs are other/app's too, and the untagged
    // manifest's blobs the signature's: GC frees only the untagged
    // manifest's own bytes.
    assert_eq!(run.gc.blobs_deleted, 1, "{run:?}");
    assert_eq!(run.gc.deleted, vec![untagged_digest.to_string()]);
}

/// A manifest deleted, then pushed again while a collection runs: the mark
/// did not see it, but the push recorded its own digest, so the sweep keeps
/// the manifest's bytes (stored long ago, unreferenced at the mark).
#[tokio::test]
async fn a_manifest_pushed_again_during_gc_keeps_its_bytes() {
    let (_dir, registry, _) = setup(Duration::ZERO).await;
    let repo: RepositoryName = "team/app".parse().unwrap();
    let (config, layer) = (bytes_of(60, 200), bytes_of(61, 3000));
    let m = push_image(&registry, &repo, "v1", &[&config, &layer]).await;
    let digest = Digest::sha256_of(&m);
    registry
        .manifest_delete(&repo, &ManifestRef::Digest(digest.clone()))
        .await
        .unwrap();
    let guard = registry
        .gc_begin()
        .await
        .unwrap()
        .expect("no other collector");
    // ...the mark runs here, and sees no revision of the manifest...
    registry
        .manifest_put(
            &repo,
            &ManifestRef::Tag("v1".parse().unwrap()),
            Some(OCI),
            Bytes::from(m.clone()),
        )
        .await
        .unwrap();
    let size = m.len() as u64;
    let freed = registry
        .gc_delete_blob(&guard, &digest, size, &[])
        .await
        .unwrap();
    assert_eq!(freed, None, "the re-pushed manifest's bytes were deleted");
    drop(guard);
    let got = registry
        .manifest_get(&repo, &ManifestRef::Tag("v1".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(got.bytes.as_ref(), m.as_slice());
}
