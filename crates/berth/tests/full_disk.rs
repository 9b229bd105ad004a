//! A real full file system under berth (issue 15): its root is a small
//! tmpfs that pushes fill until the kernel says ENOSPC.
//!
//! What must hold: every push the server acknowledged reads back
//! byte-identical; every push it could not store fails with 507
//! STORAGE_FULL and leaves nothing visible (no empty or partial manifest,
//! tag or blob); a cold pull through the cache still succeeds, streamed from
//! the upstream uncached; and once space is free again everything works
//! without a restart, and after one.
//!
//! The tests mount the tmpfs themselves: they run as root (CI too). A
//! refused mount fails the test, it never skips. The upstream of the cache
//! is another berth on ordinary disk.

mod common;

use std::path::Path;

use common::*;

/// Fill what is left of the file system at `dir` with a ballast file until
/// the kernel refuses, so that the next write anywhere on it fails.
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create ballast");
    let block = vec![0xa5u8; 64 * 1024];
    for _ in 0..100_000 {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // Whatever is left is less than a block: take it too, a byte at a time.
    for _ in 0..block.len() {
        if f.write_all(&[0]).and_then(|_| f.flush()).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

/// POST + PUT of a monolithic blob; the last response. A session the PUT
/// could not complete is cancelled, as a client giving up does.
fn try_push_blob(server: &Server, repo: &str, bytes: &[u8]) -> Resp {
    let post = curl(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", server.url()),
    )
    .send();
    if post.status != 202 {
        return post;
    }
    let upload = post.location(&server.url());
    let put_url = with_query(&upload, &format!("digest={}", sha256(bytes)));
    let put = curl("PUT", &put_url).body(bytes.to_vec()).send();
    if put.status != 201 {
        curl("DELETE", &upload).send().expect_status(204);
    }
    put
}

fn get(server: &Server, path: &str) -> Resp {
    curl("GET", &format!("{}{path}", server.url()))
        .header("Accept", OCI_MANIFEST)
        .send()
}

/// An acknowledged object, to be read back byte for byte.
struct Stored {
    path: String,
    bytes: Vec<u8>,
}

fn check_all(server: &Server, stored: &[Stored]) {
    for s in stored {
        let r = get(server, &s.path);
        r.expect_status(200);
        assert!(
            r.body == s.bytes,
            "{} reads back {} bytes, not the {} acknowledged",
            s.path,
            r.body.len(),
            s.bytes.len()
        );
    }
}

#[test]
fn a_full_disk_refuses_cleanly_serves_uncached_and_recovers() {
    let fs = Tmpfs::mount(48);
    let root = fs.path.join("root");
    let upstream = Server::start();
    let (up_digest, up_manifest) = push_small_image(&upstream, "app/web", "v1", 7);
    let big_layer = pseudo_random(1_500_000, 8);
    let big_digest = push_blob(&upstream, "app/web", &big_layer);

    let mut server = Server::start_on_with(
        &root,
        &[format!("--upstream=registry.up.test={}", upstream.url())],
    );
    // Space to give back later: 8 MiB the pushes below cannot take.
    std::fs::write(fs.path.join("spare"), vec![0x5au8; 8 << 20]).expect("write spare");
    let mut stored = Vec::new();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    try_push_blob(&server, "team/fill", config).expect_status(201);

    // Pushes of 3 MiB blobs until the disk refuses one.
    let mut refused = false;
    for i in 0..40u64 {
        let data = pseudo_random(3 << 20, 100 + i);
        let r = try_push_blob(&server, "team/fill", &data);
        match r.status {
            201 => stored.push(Stored {
                path: format!("/v2/team/fill/blobs/{}", sha256(&data)),
                bytes: data,
            }),
            _ => {
                r.expect_error(507, "STORAGE_FULL");
                let head = curl(
                    "HEAD",
                    &format!("{}/v2/team/fill/blobs/{}", server.url(), sha256(&data)),
                )
                .send();
                assert_eq!(head.status, 404, "a refused blob is not visible");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "48 MiB of tmpfs never filled up");
    assert!(stored.len() >= 6, "only {} blobs fit", stored.len());

    // Take the last free bytes, then push manifests and tags: each is
    // acknowledged and complete, or refused and invisible.
    fill_up(&fs.path.join("ballast"));
    let mut manifests_refused = 0;
    let layers: Vec<(String, usize)> = stored
        .iter()
        .take(6)
        .map(|b| {
            (
                b.path.rsplit('/').next().unwrap_or_default().to_string(),
                b.bytes.len(),
            )
        })
        .collect();
    for (i, (layer_digest, size)) in layers.iter().enumerate() {
        let manifest = image_manifest(
            descriptor(OCI_CONFIG, config),
            vec![serde_json::json!({
                "mediaType": OCI_LAYER, "digest": layer_digest, "size": size
            })],
            None,
        );
        let tag = format!("t{i}");
        let r = put_manifest(&server, "team/fill", &tag, OCI_MANIFEST, &manifest);
        if r.status == 201 {
            stored.push(Stored {
                path: format!("/v2/team/fill/manifests/{tag}"),
                bytes: manifest,
            });
        } else {
            r.expect_error(507, "STORAGE_FULL");
            manifests_refused += 1;
            for path in [
                format!("/v2/team/fill/manifests/{tag}"),
                format!("/v2/team/fill/manifests/{}", sha256(&manifest)),
            ] {
                let g = get(&server, &path);
                assert_eq!(
                    g.status,
                    404,
                    "{path} after a refused push: {}",
                    g.describe()
                );
            }
        }
    }
    assert!(
        manifests_refused > 0,
        "the disk was full, yet every manifest fit"
    );

    // A chunk that cannot be written is refused, and the session keeps the
    // offset it really has.
    let post = curl(
        "POST",
        &format!("{}/v2/team/fill/blobs/uploads/", server.url()),
    )
    .send();
    if post.status == 202 {
        let loc = post.location(&server.url());
        let patch = curl("PATCH", &loc)
            .header("Content-Range", "0-1048575")
            .body(pseudo_random(1 << 20, 9))
            .send();
        patch.expect_error(507, "STORAGE_FULL");
        let status = curl("GET", &loc).send();
        status.expect_status(204);
        let range = status.header("Range").unwrap_or("0-0").to_string();
        assert!(
            range == "0-0" || range.starts_with("0-"),
            "status range {range}"
        );
    } else {
        post.expect_error(507, "STORAGE_FULL");
    }

    // A cold pull through the cache on the full disk still works: streamed
    // from the upstream, not stored.
    let m = get(&server, "/v2/registry.up.test/app/web/manifests/v1");
    m.expect_status(200);
    assert!(m.body == up_manifest, "the upstream's manifest, uncached");
    assert_eq!(m.header("Docker-Content-Digest"), Some(up_digest.as_str()));
    let b = get(
        &server,
        &format!("/v2/registry.up.test/app/web/blobs/{big_digest}"),
    );
    b.expect_status(200);
    assert!(b.body == big_layer, "the upstream's blob, byte for byte");
    check_all(&server, &stored);
    let metrics = get(&server, "/metrics").body_str();
    assert!(
        metrics.contains("berth_cache_uncached_serves_total"),
        "uncached serves are counted"
    );

    // Space comes back: everything works again, without a restart.
    std::fs::remove_file(fs.path.join("ballast")).expect("remove ballast");
    std::fs::remove_file(fs.path.join("spare")).expect("remove spare");
    let data = pseudo_random(2 << 20, 999);
    try_push_blob(&server, "team/fill", &data).expect_status(201);
    stored.push(Stored {
        path: format!("/v2/team/fill/blobs/{}", sha256(&data)),
        bytes: data,
    });
    let manifest = image_manifest(
        descriptor(OCI_CONFIG, config),
        vec![descriptor(
            OCI_LAYER,
            &stored.last().map(|s| s.bytes.clone()).unwrap_or_default(),
        )],
        None,
    );
    put_manifest(&server, "team/fill", "after", OCI_MANIFEST, &manifest).expect_status(201);
    stored.push(Stored {
        path: "/v2/team/fill/manifests/after".into(),
        bytes: manifest,
    });
    // The cold pull is cached now: it still answers with the upstream gone.
    get(&server, "/v2/registry.up.test/app/web/manifests/v1").expect_status(200);
    get(
        &server,
        &format!("/v2/registry.up.test/app/web/blobs/{big_digest}"),
    )
    .expect_status(200);
    drop(upstream);
    let m = get(&server, "/v2/registry.up.test/app/web/manifests/v1");
    m.expect_status(200);
    assert!(m.body == up_manifest);
    let b = get(
        &server,
        &format!("/v2/registry.up.test/app/web/blobs/{big_digest}"),
    );
    assert!(b.body == big_layer);
    check_all(&server, &stored);

    // And after a restart.
    server.terminate(std::time::Duration::from_secs(30));
    let server = Server::start_on(&root);
    check_all(&server, &stored);
}
