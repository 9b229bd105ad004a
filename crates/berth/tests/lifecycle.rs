//! Storage lifecycle against a running `berth serve` (issue 15): `berth gc`
//! through the server's admin socket while it serves, and directly on a
//! root nobody serves; the root lock; scheduled collection expiring
//! abandoned uploads; skopeo pushes racing collections with no grace.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn berth_gc(root: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("gc")
        .arg("--root")
        .arg(root)
        .args(["--output", "json"])
        .args(extra));
    serde_json::from_str(&out.stdout_str())
        .unwrap_or_else(|e| panic!("berth gc printed no JSON report ({e})\n{}", out.describe()))
}

fn get(server: &Server, path: &str) -> Resp {
    curl("GET", &format!("{}{path}", server.url()))
        .header("Accept", OCI_MANIFEST)
        .send()
}

#[test]
fn gc_while_serving_frees_deleted_content_and_keeps_what_is_referenced() {
    let server = Server::start_with(&["--gc-grace=0s".into(), "--gc-interval=off".into()]);
    let (kept_digest, kept) = push_small_image(&server, "team/app", "v1", 1);
    let (gone_digest, gone) = push_small_image(&server, "team/old", "v1", 2);
    let orphan = pseudo_random(300_000, 3);
    let orphan_digest = push_blob(&server, "team/app", &orphan);
    curl(
        "DELETE",
        &format!("{}/v2/team/old/manifests/{gone_digest}", server.url()),
    )
    .send()
    .expect_status(202);
    let gone_manifest: serde_json::Value = serde_json::from_slice(&gone).unwrap();
    let gone_layer = gone_manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let gone_layer_size = gone_manifest["layers"][0]["size"].as_u64().unwrap();
    let gone_config_size = gone_manifest["config"]["size"].as_u64().unwrap();
    let before = blob_bytes(&server.root);

    // A dry run reports and deletes nothing.
    let dry = berth_gc(&server.root, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["gc"]["blobs_deleted"], 4, "{dry:#}");
    assert_eq!(blob_bytes(&server.root), before);
    assert!(server.holds_blob(&orphan_digest));

    // The real run, through the admin socket of the running server.
    let run = berth_gc(&server.root, &[]);
    let freed = orphan.len() as u64 + gone.len() as u64 + gone_layer_size + gone_config_size;
    assert_eq!(run["gc"]["blobs_deleted"], 4, "{run:#}");
    assert_eq!(run["gc"]["bytes_freed"], freed);
    assert_eq!(
        blob_bytes(&server.root),
        before - freed,
        "du shrank by what was freed"
    );
    for d in [&orphan_digest, &gone_layer, &gone_digest] {
        assert!(!server.holds_blob(d), "{d} still stored");
    }
    get(&server, &format!("/v2/team/old/blobs/{gone_layer}")).expect_error(404, "BLOB_UNKNOWN");

    // What is referenced still pulls completely.
    let m = get(&server, "/v2/team/app/manifests/v1");
    m.expect_status(200);
    assert!(m.body == kept);
    assert_eq!(
        m.header("Docker-Content-Digest"),
        Some(kept_digest.as_str())
    );
    let kept_manifest: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    for d in [
        &kept_manifest["config"]["digest"],
        &kept_manifest["layers"][0]["digest"],
    ] {
        let d = d.as_str().unwrap();
        let b = get(&server, &format!("/v2/team/app/blobs/{d}"));
        b.expect_status(200);
        assert_eq!(sha256(&b.body), d);
    }
    assert_eq!(server.metric("berth_gc_runs_total"), 1.0);
    assert_eq!(server.metric("berth_gc_bytes_freed_total"), freed as f64);
    // What is stored, as /metrics tells it after the collection (measured
    // just after it answered).
    let after = blob_bytes(&server.root) as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("berth_storage_pinned_bytes") != after && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.metric("berth_storage_stored_bytes"), after);
    assert_eq!(
        server.metric("berth_storage_upstream_bytes{upstream=\"local\"}"),
        after
    );
    assert_eq!(server.metric("berth_storage_pinned_bytes"), after);
}

#[test]
fn gc_on_a_stopped_root_and_the_root_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut server = Server::start_on(&root);
    push_small_image(&server, "team/app", "v1", 4);
    let orphan = pseudo_random(100_000, 5);
    let orphan_digest = push_blob(&server, "team/app", &orphan);

    // A second server on the same root is refused while the first runs.
    let out = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(&root),
    );
    assert!(
        !out.status.success(),
        "a second server started on a held root"
    );
    assert!(
        out.describe()
            .contains("another berth process is using the storage root"),
        "{}",
        out.describe()
    );

    server.terminate(Duration::from_secs(30));
    // Nobody serves it: `berth gc` works on the files, with its own grace.
    let run = berth_gc(&root, &["--gc-grace=0s"]);
    assert_eq!(run["gc"]["blobs_deleted"], 1, "{run:#}");
    let server = Server::start_on(&root);
    assert!(!server.holds_blob(&orphan_digest));
    get(&server, "/v2/team/app/manifests/v1").expect_status(200);
}

#[test]
fn scheduled_collection_ends_abandoned_uploads() {
    let server = Server::start_with(&[
        "--gc-interval=1s".into(),
        "--upload-ttl=2s".into(),
        "--gc-grace=1h".into(),
    ]);
    let post = curl(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/", server.url()),
    )
    .send();
    post.expect_status(202);
    let upload = post.location(&server.url());
    curl("PATCH", &upload)
        .header("Content-Range", "0-1048575")
        .body(pseudo_random(1 << 20, 6))
        .send()
        .expect_status(202);
    assert_eq!(server.upload_files().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.upload_files().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.upload_files().is_empty(),
        "the abandoned upload is still stored: {:?}",
        server.upload_files()
    );
    curl("GET", &upload)
        .send()
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert!(server.metric("berth_gc_uploads_expired_total") >= 1.0);
    assert!(server.metric("berth_gc_upload_bytes_freed_total") >= (1 << 20) as f64);
}

/// The race a fence alone cannot close, step by step: a client HEADs a blob
/// that nothing references any more (its manifest was deleted, and it is
/// older than the grace period), finds it and skips the upload; GC runs;
/// then the client pushes the manifest. The HEAD kept the blob for the
/// grace period, so the manifest is accepted and the image pulls whole.
#[test]
fn a_blob_head_keeps_the_blob_until_its_manifest_arrives() {
    let server = Server::start_with(&["--gc-grace=2s".into(), "--gc-interval=off".into()]);
    let (digest, manifest) = push_small_image(&server, "team/app", "v1", 11);
    curl(
        "DELETE",
        &format!("{}/v2/team/app/manifests/{digest}", server.url()),
    )
    .send()
    .expect_status(202);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blobs: Vec<String> = [&parsed["config"], &parsed["layers"][0]]
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    for b in &blobs {
        curl("HEAD", &format!("{}/v2/team/app/blobs/{b}", server.url()))
            .send()
            .expect_status(200);
    }
    let run = berth_gc(&server.root, &[]);
    assert_eq!(
        run["gc"]["blobs_deleted"], 1,
        "only the manifest itself goes: {run:#}"
    );
    put_manifest(&server, "team/app", "v1", OCI_MANIFEST, &manifest).expect_status(201);
    for b in &blobs {
        let got = get(&server, &format!("/v2/team/app/blobs/{b}"));
        got.expect_status(200);
        assert_eq!(&sha256(&got.body), b);
    }
    // Without a HEAD, the same blobs do go once their grace is over.
    curl(
        "DELETE",
        &format!("{}/v2/team/app/manifests/{digest}", server.url()),
    )
    .send()
    .expect_status(202);
    std::thread::sleep(Duration::from_secs(3));
    let run = berth_gc(&server.root, &[]);
    assert_eq!(run["gc"]["blobs_deleted"], 3, "{run:#}");
}

/// skopeo pushes while `berth gc` runs over and over with a short grace
/// period and orphans to free: every push succeeds and pulls back whole.
#[test]
fn skopeo_pushes_racing_gc_lose_nothing() {
    // A HEAD keeps a blob for at least half the grace period: 4 s between
    // skopeo's HEAD and its manifest, even on a loaded machine.
    const GRACE: Duration = Duration::from_secs(8);
    let server = Server::start_with(&["--gc-grace=8s".into(), "--gc-interval=off".into()]);
    let scratch = tempfile::tempdir().unwrap();
    let layout = Layout::init(&scratch.path().join("layout"));
    for i in 0..4 {
        layout.build(&format!("v{i}"), 2, 40 + i, "amd64");
    }
    let push = |tag: &str, dest: &str| {
        run(skopeo(scratch.path()).args([
            "copy",
            "--dest-tls-verify=false",
            &layout.oci_ref(tag),
            &format!("docker://{}/race/app:{dest}", server.host()),
        ]));
    };
    for i in 0..4 {
        push(&format!("v{i}"), &format!("old-v{i}"));
        let m = get(&server, &format!("/v2/race/app/manifests/old-v{i}"));
        let d = m
            .header("Docker-Content-Digest")
            .unwrap_or_default()
            .to_string();
        curl(
            "DELETE",
            &format!("{}/v2/race/app/manifests/{d}", server.url()),
        )
        .send()
        .expect_status(202);
    }
    let orphans: Vec<String> = (0..20)
        .map(|i| push_blob(&server, "race/orphans", &pseudo_random(10_000, 900 + i)))
        .collect();
    std::thread::sleep(GRACE + Duration::from_secs(1));

    let root = server.root.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut runs, mut deleted) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && runs < 500 {
                deleted += berth_gc(&root, &[])["gc"]["blobs_deleted"]
                    .as_u64()
                    .unwrap_or(0);
                runs += 1;
            }
            (runs, deleted)
        })
    };
    for i in 0..4 {
        push(&format!("v{i}"), &format!("new-v{i}"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (runs, deleted) = collector.join().expect("collector thread");
    assert!(runs >= 2, "gc ran only {runs} times");
    assert!(
        deleted >= 20,
        "gc freed only {deleted} blobs: the orphans were not collected"
    );
    for d in &orphans {
        assert!(!server.holds_blob(d));
    }
    for i in 0..4 {
        let dest = scratch.path().join(format!("pulled-{i}"));
        run(skopeo(scratch.path()).args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/race/app:new-v{i}", server.host()),
            &format!("oci:{}:x", dest.display()),
        ]));
    }
}

fn berth_verb(verb: &str, root: &Path) -> (bool, serde_json::Value) {
    let out = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg(verb)
            .arg("--root")
            .arg(root)
            .args(["--output", "json"]),
    );
    let report = serde_json::from_str(&out.stdout_str()).unwrap_or_else(|e| {
        panic!(
            "berth {verb} printed no JSON report ({e})\n{}",
            out.describe()
        )
    });
    (out.status.success(), report)
}

/// Damage a stored blob in place: same length, other bytes.
fn damage(server: &Server, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let path = server.root.join("blobs/sha256").join(&hex[..2]).join(hex);
    let mut bytes = std::fs::read(&path).expect("read blob");
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).expect("damage blob");
}

#[test]
fn scrub_quarantines_damaged_blobs_and_a_mirror_fetches_them_again() {
    let upstream = Server::start();
    let (_, up_manifest) = push_small_image(&upstream, "app/web", "v1", 21);
    let up: serde_json::Value = serde_json::from_slice(&up_manifest).unwrap();
    let up_layer = up["layers"][0]["digest"].as_str().unwrap().to_string();
    let server = Server::start_with(&[format!("--upstream=registry.up.test={}", upstream.url())]);
    let (_, local_manifest) = push_small_image(&server, "team/app", "v1", 22);
    let local: serde_json::Value = serde_json::from_slice(&local_manifest).unwrap();
    let local_layer = local["layers"][0]["digest"].as_str().unwrap().to_string();
    get(&server, "/v2/registry.up.test/app/web/manifests/v1").expect_status(200);
    let cached = get(
        &server,
        &format!("/v2/registry.up.test/app/web/blobs/{up_layer}"),
    );
    cached.expect_status(200);

    // What is stored, for whom.
    let (ok, du) = berth_verb("du", &server.root);
    assert!(ok, "{du:#}");
    assert_eq!(du["total"]["bytes"], blob_bytes(&server.root), "{du:#}");
    assert!(
        du["by_upstream"]["local"]["blobs"].as_u64() >= Some(3),
        "{du:#}"
    );
    assert!(
        du["by_upstream"]["registry.up.test"]["blobs"].as_u64() >= Some(2),
        "{du:#}"
    );
    assert!(
        du["cached"]["bytes"].as_u64() >= Some(cached.body.len() as u64),
        "{du:#}"
    );

    let (ok, clean) = berth_verb("scrub", &server.root);
    assert!(ok, "a clean store scrubs clean: {clean:#}");
    assert_eq!(clean["corrupt"], serde_json::json!([]));
    assert!(clean["blobs_checked"].as_u64() >= Some(5));

    damage(&server, &local_layer);
    damage(&server, &up_layer);
    let (ok, found) = berth_verb("scrub", &server.root);
    assert!(!ok, "scrub exits non-zero when it finds damage");
    let mut corrupt: Vec<String> = serde_json::from_value(found["corrupt"].clone()).unwrap();
    corrupt.sort();
    let mut expected = vec![local_layer.clone(), up_layer.clone()];
    expected.sort();
    assert_eq!(corrupt, expected, "{found:#}");
    assert_eq!(found["quarantined"], 2);
    assert!(server.metric("berth_scrub_corrupt_total") >= 2.0);

    // Never served again: the pushed one is missing until pushed again,
    // the mirrored one comes back from the upstream, byte for byte.
    get(&server, &format!("/v2/team/app/blobs/{local_layer}")).expect_error(404, "BLOB_UNKNOWN");
    let again = get(
        &server,
        &format!("/v2/registry.up.test/app/web/blobs/{up_layer}"),
    );
    again.expect_status(200);
    assert_eq!(sha256(&again.body), up_layer);
    assert!(
        server
            .root
            .join("quarantine/sha256")
            .read_dir()
            .unwrap()
            .count()
            == 2
    );
    let (ok, report) = berth_verb("scrub", &server.root);
    assert!(ok, "{report:#}");
}
