//! Lifecycle jobs on replicas sharing one S3 bucket (a real Garage): garbage
//! collection fenced against other replicas' pushes and against each other,
//! eviction keeping the bucket under the cache cap with one evictor at a
//! time, scrub on S3, and the lifecycle lease that makes every job of one
//! replica skip while another replica runs one. The upstream is another
//! berth; clients are curl and `berth gc`/`berth scrub` against the running
//! replicas. Everything listens on 127.0.0.1; every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn berth_gc(root: &std::path::Path) -> serde_json::Value {
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("gc")
        .arg("--root")
        .arg(root)
        .args(["--output", "json"]));
    serde_json::from_str(&out.stdout_str())
        .unwrap_or_else(|e| panic!("berth gc printed no JSON report ({e})\n{}", out.describe()))
}

/// The bucket under `prefix`, as a replica sees it: for planting what a
/// collector on another replica would leave (its marker, a deletion).
fn bucket(prefix: &str) -> (tokio::runtime::Runtime, berth_storage::s3::S3Storage) {
    let g = garage();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut cfg = berth_storage::s3::S3Config::new(&g.bucket);
    cfg.endpoint = Some(g.endpoint());
    cfg.region = g.region.clone();
    cfg.path_style = true;
    cfg.prefix = prefix.to_string();
    cfg.access_key_id = Some(g.key_id.clone());
    cfg.secret_access_key = Some(berth_storage::s3::Secret(g.secret.clone()));
    let s = rt
        .block_on(berth_storage::s3::S3Storage::open(cfg))
        .expect("open the bucket");
    (rt, s)
}

/// Garbage collection on replicas: a run through one replica frees what
/// nothing references and removes its marker; while another replica's
/// collection is announced, a second run is skipped, and a manifest push
/// waits for it to end, then is refused (and not visible) when that
/// collection deleted a blob it references, or stored when it did not.
#[test]
fn collections_on_replicas_are_fenced_against_pushes_and_each_other() {
    use berth_storage::{DocKey, Storage};
    let prefix = fresh_s3_prefix();
    let grace = ["--gc-grace=0s".to_string(), "--gc-interval=off".to_string()];
    let a = Server::start_s3(&prefix, "", &grace);
    let b = Server::start_s3(&prefix, "", &grace);
    let (rt, store) = bucket(&format!("{prefix}/"));

    // A real run frees a deleted image's blobs and leaves no marker.
    let (gone, _) = push_small_image(&a, "team/old", "v1", 5);
    curl(
        "DELETE",
        &format!("{}/v2/team/old/manifests/{gone}", a.url()),
    )
    .send()
    .expect_status(202);
    let report = berth_gc(&b.root);
    assert_eq!(report["gc"]["skipped"], false, "{report:#}");
    assert!(
        report["gc"]["blobs_deleted"].as_u64() >= Some(3),
        "{report:#}"
    );
    let markers = DocKey::new(["_lifecycle", "gc"]).unwrap();
    assert!(rt.block_on(store.doc_list(&markers)).unwrap().is_empty());

    // Another replica's collection, announced for 60 s.
    let marker = markers.join("elsewhere").unwrap();
    let until = a_minute_from_now();
    rt.block_on(store.doc_put(&marker, until.to_string().into()))
        .unwrap();
    let report = berth_gc(&a.root);
    assert_eq!(report["gc"]["skipped"], true, "{report:#}");

    // A push referencing a blob that collection then deletes.
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let layer = pseudo_random(20_000, 6);
    push_blob(&a, "team/app", &config);
    let layer_digest = push_blob(&a, "team/app", &layer);
    let manifest = image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
        None,
    );
    let url = a.url();
    let body = manifest.clone();
    let started = Instant::now();
    let push = std::thread::spawn(move || {
        curl("PUT", &format!("{url}/v2/team/app/manifests/v1"))
            .header("Content-Type", OCI_MANIFEST)
            .body(body)
            .send()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !push.is_finished(),
        "the push did not wait for the collection"
    );
    let layer_d: berth_reference::Digest = layer_digest.parse().unwrap();
    assert!(rt.block_on(store.blob_delete(&layer_d)).unwrap());
    rt.block_on(store.doc_delete(&marker)).unwrap();
    let refused = push.join().expect("push thread");
    refused.expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert!(started.elapsed() >= Duration::from_secs(2));
    for s in [&a, &b] {
        let r = curl("GET", &format!("{}/v2/team/app/manifests/v1", s.url()))
            .header("Accept", OCI_MANIFEST)
            .send();
        assert_eq!(r.status, 404, "the undone push is visible on {}", s.url());
    }

    // The same with nothing deleted: stored once the collection ends.
    push_blob(&a, "team/app", &layer);
    rt.block_on(store.doc_put(&marker, until.to_string().into()))
        .unwrap();
    let url = b.url();
    let push = std::thread::spawn(move || {
        curl("PUT", &format!("{url}/v2/team/app/manifests/v1"))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest)
            .send()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(!push.is_finished());
    rt.block_on(store.doc_delete(&marker)).unwrap();
    push.join().expect("push thread").expect_status(201);
    assert!(manifest_digest(&a.url(), "team/app", "v1").is_some());
}

/// `berth scrub` on a replica whose storage is S3 finds a blob whose bytes
/// in the bucket no longer match its digest, quarantines it, and the blob
/// is never served again.
#[test]
fn scrub_on_s3_quarantines_damaged_blobs() {
    use berth_storage::Storage;
    let prefix = fresh_s3_prefix();
    let server = Server::start_s3(&prefix, "", &[]);
    let (_, manifest) = push_small_image(&server, "team/app", "v1", 8);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let verb = |root: &std::path::Path| {
        let out = run_unchecked(
            std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg("scrub")
                .arg("--root")
                .arg(root)
                .args(["--output", "json"]),
        );
        let report: serde_json::Value = serde_json::from_str(&out.stdout_str())
            .unwrap_or_else(|e| panic!("no JSON report ({e})\n{}", out.describe()));
        (out.status.success(), report)
    };
    let (ok, clean) = verb(&server.root);
    assert!(ok, "{clean:#}");
    assert!(clean["blobs_checked"].as_u64() >= Some(2), "{clean:#}");
    // Damage the layer in the bucket.
    let (rt, store) = bucket(&format!("{prefix}/"));
    let d: berth_reference::Digest = layer.parse().unwrap();
    rt.block_on(store.blob_put(&d, bytes::Bytes::from_static(b"not the layer")))
        .unwrap();
    let (ok, found) = verb(&server.root);
    assert!(!ok, "scrub exits non-zero on damage: {found:#}");
    assert_eq!(
        found["corrupt"],
        serde_json::json!([layer.clone()]),
        "{found:#}"
    );
    assert_eq!(found["quarantined"], 1);
    curl(
        "GET",
        &format!("{}/v2/team/app/blobs/{layer}", server.url()),
    )
    .send()
    .expect_error(404, "BLOB_UNKNOWN");
}

const MIB: u64 = 1 << 20;

/// The end of a lease, or a collection's announcement, planted for another
/// replica: 60 s from now, in seconds since the epoch.
fn a_minute_from_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60
}

/// Announce a lifecycle job of another replica for 60 s (what
/// `berth_lifecycle`'s lease writes); the key to remove it by.
fn plant_lease(
    rt: &tokio::runtime::Runtime,
    store: &berth_storage::s3::S3Storage,
) -> berth_storage::DocKey {
    use berth_storage::Storage;
    let key = berth_storage::DocKey::new(["_lifecycle", "jobs", "elsewhere"]).unwrap();
    let until = a_minute_from_now();
    rt.block_on(store.doc_put(&key, format!("{until} evict").into()))
        .unwrap();
    key
}

fn berth_scrub(root: &std::path::Path) -> serde_json::Value {
    let out = run_unchecked(
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("scrub")
            .arg("--root")
            .arg(root)
            .args(["--output", "json"]),
    );
    serde_json::from_str(&out.stdout_str()).unwrap_or_else(|e| {
        panic!(
            "berth scrub printed no JSON report ({e})\n{}",
            out.describe()
        )
    })
}

/// Three caching replicas on one bucket pull eight images of 8 MiB (four
/// times the 16 MiB cap) from an upstream berth: `a` and `b` are capped,
/// `c` is not (so the bytes it stores are seen by the others only when they
/// measure the bucket). Pulls alternate between `a` and `c`. After each the
/// bucket is back under the cap within a bound, whichever replica stored
/// the image.
/// While another replica holds the lifecycle lease, neither evicts, and
/// `berth gc` and `berth scrub` are skipped; once it is released the cap
/// holds again. With the upstream stopped the newest image still pulls
/// through both, the shared layer stays, and the oldest image is gone.
#[test]
fn eviction_on_replicas_keeps_the_bucket_under_the_cap_one_job_at_a_time() {
    use berth_storage::Storage;
    const CAP: u64 = 16 * MIB;
    const IMAGE: u64 = 8 * MIB;
    let upstream = Server::start();
    let shared = pseudo_random(MIB as usize, 11);
    let images = push_images_sharing_a_layer(&upstream, "app/web", 8, IMAGE, &shared, 400);
    let prefix = fresh_s3_prefix();
    let args = [
        format!("--upstream=registry.up.test={}", upstream.url()),
        format!("--cache-max-size={CAP}"),
        "--cache-min-age=1s".to_string(),
        "--cache-high-watermark=off".to_string(),
        "--gc-interval=off".to_string(),
    ];
    let a = Server::start_s3(&prefix, "", &args);
    let b = Server::start_s3(&prefix, "", &args);
    let c = Server::start_s3(
        &prefix,
        "",
        &[args[0].clone(), "--gc-interval=off".to_string()],
    );
    let (rt, store) = bucket(&format!("{prefix}/"));
    let stored = || {
        rt.block_on(store.blob_bytes_total())
            .expect("list the bucket")
    };
    let repo = "registry.up.test/app/web";
    let under_cap_within = |bound: Duration, after: &str| {
        let deadline = Instant::now() + bound;
        while stored() > CAP && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            stored() <= CAP,
            "{} bytes in the bucket {bound:?} after {after}: over the cap",
            stored()
        );
    };

    let mut peak = 0;
    for (i, image) in images[..6].iter().enumerate() {
        let through = if i % 2 == 0 { &a } else { &c };
        assert!(pull_whole(through, repo, image), "pull {}", image.tag);
        peak = peak.max(stored());
        // At once by a capped replica that stored it; within the 10 s of
        // the capped replicas' re-measuring when `c` did.
        under_cap_within(Duration::from_secs(20), &format!("pulling {}", image.tag));
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(peak > CAP, "the cap was never passed: nothing was tested");
    let evictions =
        a.metric("berth_cache_evictions_total") + b.metric("berth_cache_evictions_total");
    assert!(evictions >= 3.0, "{evictions} evictions");
    assert_eq!(c.metric("berth_cache_evictions_total"), 0.0, "c has no cap");

    // Another replica's lifecycle job: nobody evicts, collects or scrubs.
    let lease = plant_lease(&rt, &store);
    assert!(pull_whole(&a, repo, &images[6]), "pull v6");
    assert!(pull_whole(&c, repo, &images[7]), "pull v7");
    let over = stored();
    assert!(over > CAP, "two more images did not pass the cap");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        stored(),
        over,
        "a replica evicted while another held the lease"
    );
    let gc = berth_gc(&a.root);
    assert_eq!(gc["skipped"], true, "{gc:#}");
    assert_eq!(gc["gc"]["skipped"], true, "{gc:#}");
    let scrub = berth_scrub(&b.root);
    assert_eq!(scrub["skipped"], true, "{scrub:#}");
    assert_eq!(scrub["blobs_checked"], 0, "{scrub:#}");
    // Released: the cap holds again.
    rt.block_on(store.doc_delete(&lease)).unwrap();
    under_cap_within(Duration::from_secs(30), "the lease was released");
    let scrub = berth_scrub(&b.root);
    assert_eq!(scrub["skipped"], false, "{scrub:#}");
    assert!(scrub["blobs_checked"].as_u64() >= Some(3), "{scrub:#}");
    let jobs = berth_storage::DocKey::new(["_lifecycle", "jobs"]).unwrap();
    assert!(
        rt.block_on(store.doc_list(&jobs)).unwrap().is_empty(),
        "a finished job left its lease"
    );

    // Upstream gone: the newest image pulls through both replicas, the
    // shared layer stays, the oldest image is gone.
    drop(upstream);
    for s in [&a, &b, &c] {
        assert!(
            pull_whole(s, repo, &images[7]),
            "the newest image through {}",
            s.url()
        );
    }
    let shared_digest: berth_reference::Digest = sha256(&shared).parse().unwrap();
    assert!(rt
        .block_on(store.blob_size(&shared_digest))
        .unwrap()
        .is_some());
    assert!(
        !pull_whole(&a, repo, &images[0]),
        "the oldest image was evicted"
    );
}
