//! The web UI (`/ui`) against a running berth with access control and a
//! pull-through mirror of another berth on loopback:
//!
//! - in headless Chromium driven by Playwright (`tests/ui/browse.cjs`):
//!   an anonymous visitor sees the public mirror and not the team's
//!   repositories; a user signed in through the browser's Basic prompt sees
//!   what they may pull, a multi-platform index's platforms, an image's
//!   layers, referrers and signatures, pull commands for docker, podman, ctr
//!   and crictl, and the cache page's figures; no page runs a script; each
//!   page is screenshotted and the screenshots are checked here;
//! - with curl: what the browser cannot see (a repository the caller may
//!   not pull is the same 404 as a missing one, wrong passwords, the
//!   security headers, escaping, a repository name that is not one).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::*;
use serde_json::json;

const PASSWORD: &str = "ui-Pass-7";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn put_blob_as(base: &str, auth: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    curl(
        "POST",
        &format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"),
    )
    .header("Authorization", auth)
    .body(bytes.to_vec())
    .send()
    .expect_status(201);
    digest
}

fn put_manifest_as(
    base: &str,
    auth: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) {
    curl("PUT", &format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Authorization", auth)
        .header("Content-Type", media_type)
        .body(bytes.to_vec())
        .send()
        .expect_status(201);
}

/// An image of `arch` with two layers in `repo`; its manifest.
fn image(
    base: &str,
    auth: &str,
    repo: &str,
    arch: &str,
    seed: u64,
    extra: Option<serde_json::Value>,
) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux", "created": "2026-11-30T12:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("config");
    put_blob_as(base, auth, repo, &config);
    let layers: Vec<_> = (0..2)
        .map(|i| {
            let layer = pseudo_random(4000 + i * 1000, seed + i as u64);
            put_blob_as(base, auth, repo, &layer);
            descriptor(OCI_LAYER, &layer)
        })
        .collect();
    image_manifest(descriptor(OCI_CONFIG, &config), layers, extra)
}

/// `team/web`: `multi` (an index of amd64 and arm64), `v1` with an SBOM
/// referrer, a cosign tag signature and a hostile annotation; `team/secret`.
fn fill(base: &str, auth: &str) {
    let amd = image(base, auth, "team/web", "amd64", 1, None);
    let arm = image(base, auth, "team/web", "arm64", 2, None);
    put_manifest_as(base, auth, "team/web", &sha256(&amd), OCI_MANIFEST, &amd);
    put_manifest_as(base, auth, "team/web", &sha256(&arm), OCI_MANIFEST, &arm);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(&amd), "size": amd.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": sha256(&arm), "size": arm.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .expect("index");
    put_manifest_as(base, auth, "team/web", "multi", OCI_INDEX, &index);

    let v1 = image(
        base,
        auth,
        "team/web",
        "amd64",
        3,
        Some(
            json!({"annotations": {"org.opencontainers.image.description": "<script>alert(1)</script>"}}),
        ),
    );
    put_manifest_as(base, auth, "team/web", "v1", OCI_MANIFEST, &v1);
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": sha256(&v1), "size": v1.len()});
    let empty = b"{}";
    put_blob_as(base, auth, "team/web", empty);
    let sbom_type = "application/spdx+json";
    let doc = br#"{"spdxVersion":"SPDX-2.3","name":"web"}"#;
    put_blob_as(base, auth, "team/web", doc);
    let sbom = image_manifest(
        descriptor(OCI_EMPTY, empty),
        vec![descriptor(sbom_type, doc)],
        Some(json!({"artifactType": sbom_type, "subject": subject})),
    );
    put_manifest_as(base, auth, "team/web", &sha256(&sbom), OCI_MANIFEST, &sbom);
    let sig = image(base, auth, "team/web", "amd64", 4, None);
    let hex = sha256(&v1).trim_start_matches("sha256:").to_string();
    put_manifest_as(
        base,
        auth,
        "team/web",
        &format!("sha256-{hex}.sig"),
        OCI_MANIFEST,
        &sig,
    );

    let secret = image(base, auth, "team/secret", "amd64", 5, None);
    put_manifest_as(base, auth, "team/secret", "v1", OCI_MANIFEST, &secret);
}

/// Where scripts/test installs playwright-core.
fn playwright_core() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools/playwright/node_modules/playwright-core");
    assert!(
        dir.join("package.json").exists(),
        "playwright-core is not installed at {} (scripts/test installs it)",
        dir.display()
    );
    dir
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let n =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((n(16), n(20)))
}

struct Setup {
    server: Server,
    _upstream: Server,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp");
    let ht = htpasswd_file(dir.path(), &["admin", "reader"], PASSWORD);
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"[auth]
htpasswd = "{}"

[[policy]]
repositories = ["**", "docker.io/**"]
subjects = ["admin"]
actions = ["pull", "push", "delete"]

[[policy]]
repositories = ["team/web", "docker.io/**"]
subjects = ["reader"]
actions = ["pull"]

[[policy]]
repositories = ["docker.io/**"]
subjects = ["anonymous"]
actions = ["pull"]
"#,
            ht.display()
        ),
    )
    .expect("config");
    let upstream = Server::start();
    push_small_image(&upstream, "library/busybox", "1", 11);
    let server = Server::start_with(&[
        format!("--config={}", config.display()),
        format!("--upstream=docker.io={}", upstream.url()),
    ]);
    let base = server.url();
    fill(&base, &basic("admin", PASSWORD));
    // Pull the mirrored image twice, anonymously: a miss, then hits.
    for _ in 0..2 {
        let m = curl(
            "GET",
            &format!("{base}/v2/docker.io/library/busybox/manifests/1"),
        )
        .header("Accept", OCI_MANIFEST)
        .send();
        m.expect_status(200);
        let doc: serde_json::Value = serde_json::from_slice(&m.body).expect("manifest json");
        let mut digests = vec![doc["config"]["digest"]
            .as_str()
            .expect("config")
            .to_string()];
        for l in doc["layers"].as_array().expect("layers") {
            digests.push(l["digest"].as_str().expect("layer").to_string());
        }
        for d in digests {
            curl(
                "GET",
                &format!("{base}/v2/docker.io/library/busybox/blobs/{d}"),
            )
            .send()
            .expect_status(200);
        }
    }
    // A collection measures storage use for the cache page.
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["gc", "--root"])
        .arg(&server.root));
    Setup {
        server,
        _upstream: upstream,
        _dir: dir,
    }
}

#[test]
fn chromium_browses_the_ui_as_anonymous_and_as_a_user() {
    require_tool("node");
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is needed (scripts/test installs it)"
    );
    let core = playwright_core();
    let s = setup();
    let shots = tempfile::tempdir().expect("screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/browse.cjs");
    let out = run_unchecked(
        Command::new("node")
            .arg(&script)
            .arg(s.server.url())
            .arg(shots.path())
            .arg("reader")
            .arg(PASSWORD)
            .arg("team/secret")
            .env("PLAYWRIGHT_CORE", &core),
    );
    let report: serde_json::Value = out
        .stdout_str()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from the browser run\n{}", out.describe()));
    assert!(
        out.status.success() && report["failures"].as_array().is_some_and(|f| f.is_empty()),
        "browser checks failed: {:#}\n{}",
        report["failures"],
        out.describe()
    );
    // Every page was captured, full width, and is not blank.
    let taken: Vec<&str> = report["screenshots"]
        .as_array()
        .expect("screenshots")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for name in [
        "anonymous-repositories",
        "repositories",
        "repository",
        "index",
        "image",
        "manifest-with-referrers",
        "cache",
    ] {
        let path = shots.path().join(format!("{name}.png"));
        assert!(
            taken.contains(&path.to_str().unwrap_or_default()),
            "{name} not taken"
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h) = png_size(&bytes).unwrap_or_else(|| panic!("{name} is not a PNG"));
        assert!(w >= 800 && h >= 300, "{name}: {w}x{h}");
        assert!(
            bytes.len() > 15_000,
            "{name}: only {} bytes, a blank page?",
            bytes.len()
        );
    }
    if let Ok(keep) = std::env::var("BERTH_UI_SCREENSHOTS") {
        for e in std::fs::read_dir(shots.path()).expect("list").flatten() {
            let _ = std::fs::copy(e.path(), Path::new(&keep).join(e.file_name()));
        }
    }
}

#[test]
fn the_ui_shows_each_caller_only_what_they_may_pull() {
    let s = setup();
    let base = s.server.url();
    let get = |path: &str, auth: Option<&str>| {
        let mut r = curl("GET", &format!("{base}{path}"));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    let admin = basic("admin", PASSWORD);
    let reader = basic("reader", PASSWORD);

    // A repository one may not pull is the same 404 as a missing one.
    let hidden = get("/ui/repo/team/secret", Some(&reader));
    let missing = get("/ui/repo/team/nothing-here", Some(&reader));
    assert_eq!(hidden.status, 404);
    assert_eq!(missing.status, 404);
    assert_eq!(hidden.body, missing.body);
    assert_eq!(get("/ui/repo/team/secret", None).status, 404);
    assert_eq!(
        get("/ui/repo/team/secret/-/manifest/v1", Some(&reader)).status,
        404
    );
    let r = get("/ui/repo/team/secret/-/manifest/v1", Some(&admin));
    r.expect_status(200);
    let home = get("/ui", Some(&reader)).body_str();
    assert!(
        home.contains("team/web") && !home.contains("team/secret"),
        "{home}"
    );
    assert!(get("/ui", Some(&admin)).body_str().contains("team/secret"));
    let anonymous = get("/ui", None).body_str();
    assert!(!anonymous.contains("team/"), "{anonymous}");

    // Wrong password: a fresh Basic prompt, not a page.
    let wrong = get("/ui", Some(&basic("reader", "nope")));
    assert_eq!(wrong.status, 401);
    assert!(wrong
        .header("www-authenticate")
        .is_some_and(|c| c.starts_with("Basic realm=\"berth\"")));
    let cache = get("/ui/cache", None);
    assert_eq!(cache.status, 401, "{}", cache.describe());
    get("/ui/cache", Some(&reader)).expect_status(200);
    let login = get("/ui/login", None);
    assert_eq!(login.status, 401);
    let login = get("/ui/login", Some(&reader));
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), Some("/ui/"));

    // What was pushed is text, never markup.
    let page = get("/ui/repo/team/web/-/manifest/v1", Some(&reader)).body_str();
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");

    // Every page forbids scripts and framing and is not cached.
    for path in [
        "/ui",
        "/ui/repo/team/web",
        "/ui/cache",
        "/ui/repo/team/nothing",
    ] {
        let r = get(path, Some(&reader));
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("script-src"),
            "{path}: {csp}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}"
        );
    }
    let css = get("/ui/style.css", None);
    css.expect_status(200);
    assert!(css
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/css")));

    // Names that are not repository names, and references that are not
    // references: 404 pages, no error.
    for path in [
        "/ui/repo/Team/Web",
        "/ui/repo/team/web/-/manifest/not%20a%20tag",
        "/ui/repo/team/web/-/manifest/sha256:1234",
        "/ui/repo/..%2F..%2Fetc/passwd",
        "/ui/repo/",
    ] {
        let r = get(path, Some(&admin));
        assert_eq!(r.status, 404, "{path}: {}", r.describe());
    }
    // The pages only read: the UI contacts no upstream.
    let before = s.server.metric("berth_cache_upstream_requests_total");
    for path in [
        "/ui",
        "/ui/repo/docker.io/library/busybox",
        "/ui/repo/docker.io/library/busybox/-/manifest/1",
        "/ui/cache",
    ] {
        get(path, Some(&admin)).expect_status(200);
    }
    assert_eq!(
        s.server.metric("berth_cache_upstream_requests_total"),
        before
    );
}
