//! Signatures, attestations and SBOMs travel with images (issue 12): `berth
//! copy`, `bundle create`/`load` and `berth cache` carry an image's OCI
//! referrers and cosign's tags (`sha256-<hex>.sig`, ...) by default, and
//! leave them with `--no-referrers`.
//!
//! Two real source registries: a berth (which has the referrers API) and
//! Debian's Distribution 2.8 (which has not: there the referrers are found
//! through the spec's `sha256-<hex>` tag, as oras and cosign leave them).
//! The artifacts are what those tools push: an SBOM manifest whose
//! `subject` is the image, and a cosign simple-signing manifest under
//! `sha256-<hex>.sig`. Destinations are queried through their own API.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const SBOM_TYPE: &str = "application/spdx+json";
const COSIGN_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// `base` is `http://host:port` of any registry.
fn put_blob(base: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let post = curl("POST", &format!("{base}/v2/{repo}/blobs/uploads/")).send();
    post.expect_status(202);
    let put = with_query(&post.location(base), &format!("digest={digest}"));
    curl("PUT", &put)
        .body(bytes.to_vec())
        .send()
        .expect_status(201);
    digest
}

fn put_manifest_at(base: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    curl("PUT", &format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", media_type)
        .body(bytes.to_vec())
        .send()
        .expect_status(201);
}

fn get_status(base: &str, repo: &str, reference: &str) -> u16 {
    curl("GET", &format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .status
}

/// What `referrers` lists for `subject` at `base`: (digest, artifactType).
fn listed(base: &str, repo: &str, subject: &str) -> Vec<(String, String)> {
    let r = curl("GET", &format!("{base}/v2/{repo}/referrers/{subject}")).send();
    r.expect_status(200);
    r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

struct Attached {
    image: String,
    sbom: String,
    sig_tag: String,
}

/// An image at `repo:v1` with an SBOM (by `subject`) and a cosign
/// signature; with `tag_schema`, the referrers index is also written under
/// the `sha256-<hex>` tag, for a registry without the referrers API.
fn image_with_artifacts(base: &str, repo: &str, tag_schema: bool) -> Attached {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = pseudo_random(3000, 77);
    put_blob(base, repo, config);
    put_blob(base, repo, &layer);
    let image = image_manifest(
        descriptor(OCI_CONFIG, config),
        vec![descriptor(OCI_LAYER, &layer)],
        None,
    );
    put_manifest_at(base, repo, "v1", OCI_MANIFEST, &image);
    let image_digest = sha256(&image);
    let hex = image_digest.trim_start_matches("sha256:").to_string();

    let empty = b"{}";
    put_blob(base, repo, empty);
    let sbom_doc = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    put_blob(base, repo, sbom_doc);
    let sbom = image_manifest(
        descriptor(OCI_EMPTY, empty),
        vec![descriptor(SBOM_TYPE, sbom_doc)],
        Some(json!({
            "artifactType": SBOM_TYPE,
            "subject": {"mediaType": OCI_MANIFEST, "digest": image_digest, "size": image.len()},
        })),
    );
    let sbom_digest = sha256(&sbom);
    put_manifest_at(base, repo, &sbom_digest, OCI_MANIFEST, &sbom);

    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{image_digest}"}},"type":"cosign container image signature"}}}}"#
    );
    put_blob(base, repo, payload.as_bytes());
    let mut sig_layer = descriptor(COSIGN_LAYER, payload.as_bytes());
    sig_layer["annotations"] =
        json!({"dev.cosignproject.cosign/signature": "MEUCIQD0c2lnbmF0dXJl"});
    let sig = image_manifest(descriptor(OCI_CONFIG, config), vec![sig_layer], None);
    let sig_tag = format!("sha256-{hex}.sig");
    put_manifest_at(base, repo, &sig_tag, OCI_MANIFEST, &sig);

    if tag_schema {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(), "artifactType": SBOM_TYPE}],
        }))
        .unwrap();
        put_manifest_at(base, repo, &format!("sha256-{hex}"), OCI_INDEX, &index);
    }
    Attached {
        image: image_digest,
        sbom: sbom_digest,
        sig_tag,
    }
}

fn berth(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(args))
}

#[test]
fn copy_carries_referrers_and_cosign_tags() {
    for source_is_berth in [true, false] {
        let (berth_src, dist_src);
        let src_host = if source_is_berth {
            berth_src = Server::start();
            berth_src.host()
        } else {
            dist_src = Distribution::start();
            dist_src.host()
        };
        let a = image_with_artifacts(&format!("http://{src_host}"), "team/app", !source_is_berth);
        let dest = Server::start();
        let out = berth(&[
            "copy",
            &format!("docker://{src_host}/team/app:v1"),
            &format!("docker://{}/copied/app:v1", dest.host()),
        ]);
        assert!(out.stderr.contains("copied with it"), "{}", out.describe());
        assert_eq!(
            listed(&dest.url(), "copied/app", &a.image),
            vec![(a.sbom.clone(), SBOM_TYPE.to_string())],
            "from {}",
            if source_is_berth {
                "berth"
            } else {
                "Distribution"
            }
        );
        assert_eq!(get_status(&dest.url(), "copied/app", &a.sig_tag), 200);
        assert_eq!(get_status(&dest.url(), "copied/app", &a.sbom), 200);

        // Into an OCI layout: cosign's under its tag, the SBOM as an entry
        // without a name (image-layout 1.1), both readable by skopeo.
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("layout");
        berth(&[
            "copy",
            &format!("docker://{src_host}/team/app:v1"),
            &format!("oci:{}:v1", dir.display()),
        ]);
        let index: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap())
                .unwrap();
        let entries = index["manifests"].as_array().unwrap();
        let named = |n: &str| {
            entries
                .iter()
                .any(|e| e["annotations"]["org.opencontainers.image.ref.name"] == n)
        };
        assert!(named("v1") && named(&a.sig_tag), "{index}");
        assert!(
            entries.iter().any(|e| e["digest"] == a.sbom.as_str()
                && e["annotations"]["org.opencontainers.image.ref.name"].is_null()),
            "{index}"
        );
        run(skopeo(scratch.path()).args([
            "inspect",
            "--raw",
            &format!("oci:{}:{}", dir.display(), a.sig_tag),
        ]));

        let bare = Server::start();
        berth(&[
            "copy",
            "--no-referrers",
            &format!("docker://{src_host}/team/app:v1"),
            &format!("docker://{}/copied/app:v1", bare.host()),
        ]);
        assert!(listed(&bare.url(), "copied/app", &a.image).is_empty());
        assert_eq!(get_status(&bare.url(), "copied/app", &a.sig_tag), 404);
    }
}

/// Into the air gap and out: the bundle holds the referrers as entries of
/// their own, `bundle load` pushes them beside the image, and the offline
/// berth lists them and serves the signature.
#[test]
fn bundles_carry_referrers_into_the_air_gap() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let src = Distribution::start();
    let a = image_with_artifacts(&src.url(), "team/app", true);
    let list = s.join("images.txt");
    std::fs::write(&list, "registry.sign.test/team/app:v1\n").unwrap();
    let upstream = format!("registry.sign.test={}", src.url());
    let bundle = s.join("b.tar");
    let out = berth(&[
        "bundle",
        "create",
        list.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "--upstream",
        &upstream,
    ]);
    assert!(
        out.stderr
            .contains(&format!("added registry.sign.test/team/app@{}", a.sbom)),
        "{}",
        out.describe()
    );
    let index: Value = serde_json::from_str(
        &run(Command::new("tar")
            .arg("-xOf")
            .arg(&bundle)
            .arg("index.json"))
        .stdout_str(),
    )
    .unwrap();
    let refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["io.berth.bundle.referrer-of"].as_str())
        .collect();
    assert_eq!(refs.len(), 3, "{index}"); // the SBOM, the tag-schema index, the signature
    let ls = berth(&["bundle", "ls", bundle.to_str().unwrap()]).stdout_str();
    assert!(
        ls.contains("1 image(s) and 3 signature(s), attestation(s) or SBOM(s)"),
        "{ls}"
    );
    assert!(
        ls.contains("(refers to registry.sign.test/team/app:v1)"),
        "{ls}"
    );

    let airgap = Server::start_with(&["--offline".to_string()]);
    berth(&[
        "bundle",
        "load",
        bundle.to_str().unwrap(),
        "--to",
        &airgap.host(),
    ]);
    let repo = "registry.sign.test/team/app";
    assert_eq!(
        listed(&airgap.url(), repo, &a.image),
        vec![(a.sbom.clone(), SBOM_TYPE.to_string())]
    );
    assert_eq!(get_status(&airgap.url(), repo, &a.sig_tag), 200);

    let lean = s.join("lean.tar");
    berth(&[
        "bundle",
        "create",
        "--no-referrers",
        list.to_str().unwrap(),
        "-o",
        lean.to_str().unwrap(),
        "--upstream",
        &upstream,
    ]);
    let index: Value = serde_json::from_str(
        &run(Command::new("tar").arg("-xOf").arg(&lean).arg("index.json")).stdout_str(),
    )
    .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
}

/// A pull-through berth lists its upstream's referrers for a mirror, and
/// `berth cache` makes it keep them: with the upstream gone, they are
/// still listed and served.
#[test]
fn the_cache_lists_and_keeps_the_upstreams_referrers() {
    let up = Server::start();
    let a = image_with_artifacts(&up.url(), "team/app", false);
    let mut up = up;
    let mirror = Server::start_with(&[format!("--upstream=registry.sign.test={}", up.url())]);
    let repo = "registry.sign.test/team/app";
    assert_eq!(
        listed(&mirror.url(), repo, &a.image),
        vec![(a.sbom.clone(), SBOM_TYPE.to_string())],
        "the upstream's referrers are not listed"
    );
    berth(&[
        "cache",
        "registry.sign.test/team/app:v1",
        "--to",
        &mirror.host(),
    ]);
    up.kill9();
    assert_eq!(
        listed(&mirror.url(), repo, &a.image),
        vec![(a.sbom.clone(), SBOM_TYPE.to_string())],
        "not kept"
    );
    assert_eq!(get_status(&mirror.url(), repo, &a.sig_tag), 200);
    assert_eq!(get_status(&mirror.url(), repo, &a.sbom), 200);
}
