//! The cost of pushing very large manifests and indexes (issue 11): the
//! check that everything referenced is present must be linear, and cheap
//! per descriptor, however often a manifest names the same content.
//!
//! CPU is the process's user+system time from `/proc/self/stat` around the
//! push (storage work runs on tokio's blocking pool, so the calling
//! thread's time alone would miss it). Everything runs in one test so that
//! no other test of this binary shares the process while it is measured.
//! Test builds are unoptimised: the bounds are generous multiples of what
//! a release build needs, and what was measured is printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_reference::{Digest, ManifestRef, RepositoryName};
use berth_registry::{Registry, RegistryError};
use berth_storage::fs::FsStorage;
use bytes::Bytes;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// User + system CPU time of this process so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command (which may hold spaces) start after its ')'.
    let after = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    Duration::from_millis(ticks * 10)
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

fn image(config: (&Digest, u64), layers: &[(Digest, u64)]) -> Bytes {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s)| descriptor(LAYER, d, *s))
        .collect();
    Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config.0, config.1),
            "layers": layers,
        }))
        .expect("serialise"),
    )
}

async fn push_blob(reg: &Registry, repo: &RepositoryName, bytes: Vec<u8>) -> (Digest, u64) {
    let d = Digest::sha256_of(&bytes);
    let size = bytes.len() as u64;
    reg.storage()
        .blob_put(&d, Bytes::from(bytes))
        .await
        .expect("store blob");
    reg.link_blob(repo, &d).await.expect("link blob");
    (d, size)
}

/// Push `bytes` as a manifest; the result and the CPU and wall time taken.
async fn timed_put(
    reg: &Registry,
    repo: &RepositoryName,
    tag: &str,
    media_type: &str,
    bytes: Bytes,
) -> (Result<Digest, RegistryError>, Duration, Duration) {
    let reference = ManifestRef::Tag(tag.parse().expect("tag"));
    let (cpu, wall) = (process_cpu(), Instant::now());
    let r = reg
        .manifest_put(repo, &reference, Some(media_type), bytes)
        .await
        .map(|p| p.digest);
    (r, process_cpu() - cpu, wall.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_manifests_and_indexes_validate_in_linear_time() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp root");
    let reg = Registry::new(Arc::new(
        FsStorage::open(dir.path()).await.expect("open storage"),
    ));
    let repo: RepositoryName = "team/big".parse().expect("repo");
    let config = push_blob(&reg, &repo, b"{}".to_vec()).await;
    let few: Vec<(Digest, u64)> = {
        let mut v = Vec::new();
        for i in 0..4u32 {
            v.push(push_blob(&reg, &repo, format!("layer {i}").into_bytes()).await);
        }
        v
    };

    // 25,000 layers naming four blobs (the hostile shape: any client can
    // repeat a layer it pushed once).
    let layers: Vec<(Digest, u64)> = (0..25_000).map(|i| few[i % 4].clone()).collect();
    let manifest = image((&config.0, config.1), &layers);
    let (r, cpu, wall) = timed_put(&reg, &repo, "dup", OCI_MANIFEST, manifest.clone()).await;
    r.expect("a 25,000-layer manifest of pushed blobs is valid");
    eprintln!(
        "25,000 layers over 4 blobs ({} KiB): {cpu:?} CPU, {wall:?} wall (debug build)",
        manifest.len() / 1024
    );
    assert!(
        cpu < Duration::from_millis(400),
        "a 25,000-layer manifest took {cpu:?} of CPU to push"
    );

    // Distinct blobs: one lookup each, and the membership from one listing.
    let mut distinct = Vec::new();
    for i in 0..2_000u32 {
        distinct.push(push_blob(&reg, &repo, format!("distinct layer {i}").into_bytes()).await);
    }
    let manifest = image((&config.0, config.1), &distinct);
    let (r, cpu_2k, wall) = timed_put(&reg, &repo, "distinct", OCI_MANIFEST, manifest).await;
    r.expect("2,000 distinct pushed layers are valid");
    eprintln!("2,000 distinct layers: {cpu_2k:?} CPU, {wall:?} wall (debug build)");
    assert!(
        cpu_2k < Duration::from_millis(1_500),
        "2,000 distinct layers took {cpu_2k:?}"
    );

    // A missing blob among 25,000 references is found, and named.
    let missing = Digest::sha256_of(b"never pushed");
    let mut with_missing = layers.clone();
    with_missing.push((missing.clone(), 3));
    let (r, cpu, _) = timed_put(
        &reg,
        &repo,
        "missing",
        OCI_MANIFEST,
        image((&config.0, config.1), &with_missing),
    )
    .await;
    assert!(
        matches!(&r, Err(RegistryError::ManifestBlobUnknown(d)) if *d == missing),
        "{r:?}"
    );
    assert!(cpu < Duration::from_millis(400), "{cpu:?}");
    // A wrong size is still caught, even on the 25,000th mention.
    let mut wrong_size = layers.clone();
    let last = wrong_size.len() - 1;
    wrong_size[last].1 += 1;
    let (r, _, _) = timed_put(
        &reg,
        &repo,
        "wrong",
        OCI_MANIFEST,
        image((&config.0, config.1), &wrong_size),
    )
    .await;
    assert!(matches!(r, Err(RegistryError::ManifestInvalid(_))), "{r:?}");

    // An index of 25,000 entries over the two manifests pushed above.
    let children: Vec<(Digest, u64)> = {
        let mut v = Vec::new();
        for tag in ["dup", "distinct"] {
            let m = reg
                .manifest_get(&repo, &ManifestRef::Tag(tag.parse().expect("tag")))
                .await
                .expect("pushed manifest");
            v.push((m.digest, m.bytes.len() as u64));
        }
        v
    };
    let entries: Vec<_> = (0..25_000)
        .map(|i| {
            let (d, s) = &children[i % 2];
            descriptor(OCI_MANIFEST, d, *s)
        })
        .collect();
    let index = Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))
        .expect("serialise index"),
    );
    let (r, cpu, wall) = timed_put(&reg, &repo, "index", OCI_INDEX, index.clone()).await;
    r.expect("an index of pushed manifests is valid");
    eprintln!(
        "index of 25,000 entries ({} KiB): {cpu:?} CPU, {wall:?} wall (debug build)",
        index.len() / 1024
    );
    assert!(cpu < Duration::from_millis(600), "{cpu:?}");
    assert!(started.elapsed() < Duration::from_secs(120));
}
