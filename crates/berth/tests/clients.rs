//! Real clients against a real `berth serve`: skopeo pushes and pulls
//! umoci-built images (OCI and Docker schema2, multi-layer, multi-arch) and
//! the bytes must come back identical.

mod common;

use common::*;

/// `skopeo copy` with plain HTTP on both sides.
fn copy(scratch: &std::path::Path, extra: &[&str], src: &str, dst: &str) -> Output {
    run(skopeo(scratch)
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(extra)
        .args([src, dst]))
}

fn inspect_raw(scratch: &std::path::Path, reference: &str) -> Vec<u8> {
    run(skopeo(scratch).args(["inspect", "--raw", "--tls-verify=false", reference])).stdout
}

#[test]
fn skopeo_push_pull_multilayer_oci_image_roundtrips_byte_for_byte() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 3, 1, "amd64");
    let (src_digest, src_bytes) = src.manifest("v1");
    let manifest: serde_json::Value = serde_json::from_slice(&src_bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "umoci built {manifest}");

    let dest = format!("docker://{}/team/app:v1", server.host());
    copy(scratch.path(), &[], &src.oci_ref("v1"), &dest);

    // The manifest is stored byte for byte.
    let raw = inspect_raw(scratch.path(), &dest);
    assert_eq!(sha256(&raw), src_digest, "pushed manifest changed");
    assert_eq!(raw, src_bytes);

    // And so is every blob, under the digest it was pushed as.
    for d in layers.iter().chain(std::iter::once(&manifest["config"])) {
        let digest = d["digest"].as_str().unwrap();
        let resp = curl(
            "GET",
            &format!("{}/v2/team/app/blobs/{digest}", server.url()),
        )
        .send();
        resp.expect_status(200);
        assert_eq!(sha256(&resp.body), digest);
        assert_eq!(resp.body, src.blob(digest));
    }

    // skopeo's own view of the image.
    let info = run(skopeo(scratch.path()).args(["inspect", "--tls-verify=false", &dest])).stdout;
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["Digest"], src_digest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    let tags = run(skopeo(scratch.path()).args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/team/app", server.host()),
    ]))
    .stdout;
    let tags: serde_json::Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    // Pull it back into another layout: same manifest, same blobs.
    let back = Layout {
        dir: scratch.path().join("back"),
    };
    copy(scratch.path(), &[], &dest, &back.oci_ref("v1"));
    let (back_digest, back_bytes) = back.manifest("v1");
    assert_eq!(back_digest, src_digest);
    assert_eq!(back_bytes, src_bytes);
    for d in layers {
        assert!(
            back.has_blob(d["digest"].as_str().unwrap()),
            "layer {d} not pulled"
        );
    }

    // Registry to registry on the same server (skopeo tries a cross-repo mount).
    let other = format!("docker://{}/other/app:copied", server.host());
    copy(scratch.path(), &[], &dest, &other);
    assert_eq!(sha256(&inspect_raw(scratch.path(), &other)), src_digest);
}

#[test]
fn skopeo_delete_then_manifest_unknown() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 1, 2, "amd64");
    let (digest, _) = src.manifest("v1");
    let dest = format!("docker://{}/team/gone:v1", server.host());
    copy(scratch.path(), &[], &src.oci_ref("v1"), &dest);

    run(skopeo(scratch.path()).args(["delete", "--tls-verify=false", &dest]));

    for reference in ["v1", digest.as_str()] {
        curl(
            "GET",
            &format!("{}/v2/team/gone/manifests/{reference}", server.url()),
        )
        .header("Accept", OCI_MANIFEST)
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");
        let head = curl(
            "HEAD",
            &format!("{}/v2/team/gone/manifests/{reference}", server.url()),
        )
        .send();
        head.expect_status(404);
    }
    // skopeo agrees it is gone.
    let out = run_unchecked(skopeo(scratch.path()).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &dest,
    ]));
    assert!(
        !out.status.success(),
        "inspect of a deleted image succeeded\n{}",
        out.describe()
    );
}

#[test]
fn skopeo_docker_schema2_roundtrip() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 2, 3, "amd64");
    let dest = format!("docker://{}/team/docker:v1", server.host());
    copy(
        scratch.path(),
        &["--format", "v2s2"],
        &src.oci_ref("v1"),
        &dest,
    );

    let raw = inspect_raw(scratch.path(), &dest);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{manifest}");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    let digest = sha256(&raw);

    // Served with its own media type and digest.
    let get = curl(
        "GET",
        &format!("{}/v2/team/docker/manifests/v1", server.url()),
    )
    .header("Accept", &format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"))
    .send();
    get.expect_status(200)
        .expect_header("Content-Type", DOCKER_MANIFEST)
        .expect_header("Docker-Content-Digest", &digest);
    assert_eq!(get.body, raw);

    // Pulled back unchanged (the dir: transport keeps the manifest as is).
    let back = scratch.path().join("back");
    copy(
        scratch.path(),
        &[],
        &dest,
        &format!("dir:{}", back.display()),
    );
    let pulled = std::fs::read(back.join("manifest.json")).unwrap();
    assert_eq!(sha256(&pulled), digest);
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let bytes = std::fs::read(back.join(hex)).unwrap();
        assert_eq!(sha256(&bytes), layer["digest"].as_str().unwrap());
    }
}

#[test]
fn skopeo_copy_all_multi_arch_index() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let src = Layout::init(&scratch.path().join("src"));
    src.build("amd64", 1, 10, "amd64");
    src.build("arm64", 2, 11, "arm64");
    let (index_digest, index_bytes) =
        src.make_index("multi", &[("amd64", "amd64"), ("arm64", "arm64")]);

    let dest = format!("docker://{}/team/multi:v1", server.host());
    copy(scratch.path(), &["--all"], &src.oci_ref("multi"), &dest);

    let raw = inspect_raw(scratch.path(), &dest);
    assert_eq!(sha256(&raw), index_digest, "index changed on the way");
    assert_eq!(raw, index_bytes);
    let get = curl(
        "GET",
        &format!("{}/v2/team/multi/manifests/v1", server.url()),
    )
    .header("Accept", &format!("{OCI_INDEX}, {OCI_MANIFEST}"))
    .send();
    get.expect_status(200)
        .expect_header("Content-Type", OCI_INDEX)
        .expect_header("Docker-Content-Digest", &index_digest);

    // Each platform's manifest is there by digest, and skopeo picks the right one.
    for (tag, arch) in [("amd64", "amd64"), ("arm64", "arm64")] {
        let (digest, bytes) = src.manifest(tag);
        let resp = curl(
            "GET",
            &format!("{}/v2/team/multi/manifests/{digest}", server.url()),
        )
        .header("Accept", OCI_MANIFEST)
        .send();
        resp.expect_status(200);
        assert_eq!(resp.body, bytes);
        let info = run(skopeo(scratch.path()).args([
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            "inspect",
            "--tls-verify=false",
            &dest,
        ]))
        .stdout;
        let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
        // `Digest` is the index's; the platform chosen shows in Architecture and Layers.
        assert_eq!(info["Digest"], index_digest.as_str(), "{info}");
        assert_eq!(info["Architecture"], arch, "{info}");
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let layers: Vec<&serde_json::Value> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["digest"])
            .collect();
        let seen: Vec<&serde_json::Value> = info["Layers"].as_array().unwrap().iter().collect();
        assert_eq!(seen, layers, "{arch}");
    }

    // The whole index comes back.
    let back = Layout {
        dir: scratch.path().join("back"),
    };
    copy(scratch.path(), &["--all"], &dest, &back.oci_ref("multi"));
    assert_eq!(back.manifest("multi").0, index_digest);
    for tag in ["amd64", "arm64"] {
        assert!(back.has_blob(&src.manifest(tag).0));
    }
}
