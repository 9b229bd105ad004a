//! `kill -9` at random points of cache fills, garbage collections and
//! evictions (issue 15), 20 trials each, bounded in time: after each
//! restart every stored blob hashes to its name, no temporary file is left,
//! and every image that is still tagged pulls completely.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Every file under `root/blobs` hashes to its name; `tmp/` is empty.
fn assert_store_sound(root: &Path) {
    let mut stack = vec![root.join("blobs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).expect("read blob");
            assert_eq!(
                sha256(&bytes),
                format!("sha256:{name}"),
                "partial or corrupt blob {}",
                path.display()
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .into_iter()
        .flatten()
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A small deterministic generator for the kill delays.
fn delays(seed: u64) -> impl Iterator<Item = Duration> {
    let mut x = seed | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(Duration::from_micros(x % 40_000))
    })
}

/// GET a manifest by tag and every blob it references; `false` on any miss.
fn pulls_whole(server: &Server, repo: &str, tag: &str) -> bool {
    let m = curl(
        "GET",
        &format!("{}/v2/{repo}/manifests/{tag}", server.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    if m.status != 200 {
        return false;
    }
    let v: serde_json::Value = match serde_json::from_slice(&m.body) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let mut digests = vec![v["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()];
    for l in v["layers"].as_array().into_iter().flatten() {
        digests.push(l["digest"].as_str().unwrap_or_default().to_string());
    }
    digests.iter().all(|d| {
        let b = curl("GET", &format!("{}/v2/{repo}/blobs/{d}", server.url())).send();
        b.status == 200 && &sha256(&b.body) == d
    })
}

fn tags(server: &Server, repo: &str) -> Vec<String> {
    let r = curl("GET", &format!("{}/v2/{repo}/tags/list", server.url())).send();
    if r.status != 200 {
        return Vec::new();
    }
    serde_json::from_value(r.json()["tags"].clone()).unwrap_or_default()
}

#[test]
fn kill9_during_cache_fills() {
    let upstream = Server::start();
    for i in 0..20u64 {
        let layer = pseudo_random(3 << 20, 700 + i);
        let config = serde_json::to_vec(
            &serde_json::json!({"architecture": "amd64", "os": "linux", "n": i}),
        )
        .unwrap();
        push_blob(&upstream, "app/fill", &config);
        push_blob(&upstream, "app/fill", &layer);
        let m = image_manifest(
            descriptor(OCI_CONFIG, &config),
            vec![descriptor(OCI_LAYER, &layer)],
            None,
        );
        put_manifest(&upstream, "app/fill", &format!("t{i}"), OCI_MANIFEST, &m).expect_status(201);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let flag = format!("--upstream=registry.up.test={}", upstream.url());
    let deadline = Instant::now() + Duration::from_secs(240);
    for (trial, delay) in (0..20u64).zip(delays(11)) {
        assert!(Instant::now() < deadline, "trials took over 240 s");
        let mut server = Server::start_on_with(&root, std::slice::from_ref(&flag));
        // A pull of image `trial` in the background, killed at a random point.
        let url = server.url();
        let puller = std::thread::spawn(move || {
            let _ = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "20",
                    "-H",
                    &format!("Accept: {OCI_MANIFEST}"),
                ])
                .arg(format!(
                    "{url}/v2/registry.up.test/app/fill/manifests/t{trial}"
                ))
                .status();
        });
        std::thread::sleep(delay / 4);
        let m = curl(
            "GET",
            &format!(
                "{}/v2/registry.up.test/app/fill/manifests/t{trial}",
                server.url()
            ),
        )
        .header("Accept", OCI_MANIFEST)
        .send();
        let layer = serde_json::from_slice::<serde_json::Value>(&m.body)
            .ok()
            .and_then(|v| v["layers"][0]["digest"].as_str().map(str::to_string));
        let getter = layer.map(|d| {
            let url = format!("{}/v2/registry.up.test/app/fill/blobs/{d}", server.url());
            std::thread::spawn(move || {
                let _ = Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "--max-time", "20"])
                    .arg(url)
                    .status();
            })
        });
        std::thread::sleep(delay);
        server.kill9();
        let _ = puller.join();
        if let Some(g) = getter {
            let _ = g.join();
        }
        let server = Server::start_on_with(&root, std::slice::from_ref(&flag));
        assert_store_sound(&root);
        assert!(
            pulls_whole(&server, "registry.up.test/app/fill", &format!("t{trial}")),
            "trial {trial}: the image does not pull after kill -9 mid-fill"
        );
    }
}

#[test]
fn kill9_during_garbage_collection() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let flags = ["--gc-grace=0s".to_string(), "--gc-interval=off".to_string()];
    let server = Server::start_on_with(&root, &flags);
    let mut digests = Vec::new();
    for i in 0..60u64 {
        digests.push(push_small_image(&server, "team/gc", &format!("t{i}"), 900 + i).0);
    }
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(240);
    for (trial, delay) in (0..20usize).zip(delays(12)) {
        assert!(Instant::now() < deadline, "trials took over 240 s");
        let mut server = Server::start_on_with(&root, &flags);
        // Untag two more images, then collect and kill at a random point.
        for d in &digests[trial * 2..trial * 2 + 2] {
            curl(
                "DELETE",
                &format!("{}/v2/team/gc/manifests/{d}", server.url()),
            )
            .send();
        }
        let gc = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["gc", "--output", "json", "--root"])
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn berth gc");
        std::thread::sleep(delay / 2);
        server.kill9();
        let mut gc = gc;
        let _ = gc.wait();
        let server = Server::start_on_with(&root, &flags);
        assert_store_sound(&root);
        let left = tags(&server, "team/gc");
        assert_eq!(
            left.len(),
            60 - 2 * (trial + 1),
            "trial {trial}: tags {left:?}"
        );
        for t in &left {
            assert!(
                pulls_whole(&server, "team/gc", t),
                "trial {trial}: {t} lost a blob"
            );
        }
    }
}

#[test]
fn kill9_during_eviction() {
    let upstream = Server::start();
    let mut images = Vec::new();
    for i in 0..8u64 {
        let (_, m) = {
            let config = serde_json::to_vec(
                &serde_json::json!({"architecture": "amd64", "os": "linux", "e": i}),
            )
            .unwrap();
            let layer = pseudo_random(2 << 20, 800 + i);
            push_blob(&upstream, "app/evict", &config);
            push_blob(&upstream, "app/evict", &layer);
            let m = image_manifest(
                descriptor(OCI_CONFIG, &config),
                vec![descriptor(OCI_LAYER, &layer)],
                None,
            );
            put_manifest(&upstream, "app/evict", &format!("t{i}"), OCI_MANIFEST, &m)
                .expect_status(201);
            ((), m)
        };
        images.push(m);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let flags = [
        format!("--upstream=registry.up.test={}", upstream.url()),
        "--cache-max-size=5MiB".to_string(),
        "--cache-min-age=0s".to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(240);
    for (trial, delay) in (0..20usize).zip(delays(13)) {
        assert!(Instant::now() < deadline, "trials took over 240 s");
        let mut server = Server::start_on_with(&root, &flags);
        // Pull three images (over the cap): eviction runs; kill it midway.
        for k in 0..3 {
            pulls_whole(
                &server,
                "registry.up.test/app/evict",
                &format!("t{}", (trial + k) % 8),
            );
        }
        std::thread::sleep(Duration::from_millis(1500) + delay * 20);
        server.kill9();
        let server = Server::start_on_with(&root, &flags);
        assert_store_sound(&root);
        // Every image still pulls (from what is held, or fetched again).
        for i in 0..8 {
            assert!(
                pulls_whole(&server, "registry.up.test/app/evict", &format!("t{i}")),
                "trial {trial}: t{i} does not pull after kill -9 during eviction"
            );
        }
        drop(server);
    }
    let _ = images;
}
