//! Host-header routing (issue 12, item 5), for the DNS-spoofed setups of
//! seed 004: `/etc/hosts` on the nodes points `docker.io`,
//! `registry-1.docker.io` and `k8s.gcr.io` at the local registry, and
//! clients ask it for `/v2/pause/...` with `Host: k8s.gcr.io`. berth serves
//! such a request from that upstream's mirror.
//!
//! The spoof is made the way nodes make it: skopeo runs in a mount namespace
//! whose `/etc/hosts` maps those names to 127.0.0.1 (`unshare -m` and a bind
//! mount; tests run as root), so the names resolve to loopback only and the
//! upstreams are one Distribution registry given with `--upstream`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `skopeo inspect` of `reference` with `hosts` as /etc/hosts: the digest.
fn spoofed_inspect(scratch: &Path, hosts: &Path, reference: &str) -> Output {
    require_tool("unshare");
    require_tool("skopeo");
    let auth = scratch.join("auth.json");
    std::fs::write(&auth, "{}").unwrap();
    run_unchecked(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$HOSTS\" /etc/hosts && exec skopeo --insecure-policy inspect \
                 --no-tags --tls-verify=false --format '{{.Digest}}' \"$REF\"",
            )
            .env("HOSTS", hosts)
            .env("REF", reference)
            .env("REGISTRY_AUTH_FILE", &auth),
    )
}

#[test]
fn spoofed_registry_names_are_served_from_their_mirrors() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let up = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    let image = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "pause",
            data: b"spoofed\n",
        }])],
    );
    up.push(s, &layout.oci_ref("v1"), "pause:3.9", None);
    up.push(s, &layout.oci_ref("v1"), "library/app:v1", None);
    let flags = |extra: &[&str]| -> Vec<String> {
        let mut f = vec![
            format!("--upstream=k8s.gcr.io={}", up.url()),
            format!("--upstream=docker.io={}", up.url()),
        ];
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    };
    let berth = Server::start_with(&flags(&[]));
    let port = berth.addr().port();
    let hosts = s.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost k8s.gcr.io registry-1.docker.io docker.io\n",
    )
    .unwrap();

    for (reference, repo) in [
        (
            format!("docker://k8s.gcr.io:{port}/pause:3.9"),
            "k8s.gcr.io/pause",
        ),
        (
            format!("docker://registry-1.docker.io:{port}/library/app:v1"),
            "docker.io/library/app",
        ),
    ] {
        let out = spoofed_inspect(s, &hosts, &reference);
        assert!(out.status.success(), "{}\n{}", out.describe(), berth.log());
        assert_eq!(
            out.stdout_str().trim(),
            image.manifest_digest,
            "{reference}"
        );
        let tags = curl("GET", &format!("{}/v2/{repo}/tags/list", berth.url())).send();
        tags.expect_status(200);
    }
    // What berth's own name asks for stays local: nothing was pushed there.
    curl("GET", &format!("{}/v2/pause/manifests/3.9", berth.url()))
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");
    // A host only an allow glob covers is not routed (it may be berth's own
    // name); nor is anything with --no-host-routing.
    let globbed = Server::start_with(&flags(&["--allow-upstream=*.corp.example"]));
    let r = curl("GET", &format!("{}/v2/pause/manifests/3.9", globbed.url()))
        .header("Host", "berth.corp.example")
        .send();
    r.expect_error(404, "MANIFEST_UNKNOWN");
    let off = Server::start_with(&flags(&["--no-host-routing"]));
    let out = spoofed_inspect(
        s,
        &hosts,
        &format!("docker://k8s.gcr.io:{}/pause:3.9", off.addr().port()),
    );
    assert!(!out.status.success(), "{}", out.describe());
}

/// Docker, as on seed 004's nodes: its daemon resolves `k8s.gcr.io` to the
/// local registry (a mount namespace with a spoofed /etc/hosts) and pulls
/// `k8s.gcr.io:PORT/pause:3.9` from berth, which routes it by Host.
#[test]
fn docker_pulls_a_spoofed_name_through_host_routing() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let up = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    let image = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "pause",
            data: b"spoofed for docker\n",
        }])],
    );
    up.push(s, &layout.oci_ref("v1"), "pause:3.9", None);
    let berth = Server::start_with(&[format!("--upstream=k8s.gcr.io={}", up.url())]);
    let port = berth.addr().port();
    let hosts = s.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost k8s.gcr.io\n").unwrap();
    let daemon = Dockerd::start_with(
        &format!(r#"{{"insecure-registries": ["k8s.gcr.io:{port}"]}}"#),
        Some(&hosts),
    );
    let name = format!("k8s.gcr.io:{port}/pause:3.9");
    let out = run_unchecked(daemon.docker().args(["pull", &name]));
    assert!(
        out.status.success(),
        "{}\n--- dockerd\n{}\n--- berth\n{}",
        out.describe(),
        daemon.log(),
        berth.log()
    );
    let digests = run(daemon.docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &name,
    ]))
    .stdout_str();
    assert!(digests.contains(&image.manifest_digest), "{digests}");
    assert!(
        berth
            .log()
            .contains("path=/v2/pause/manifests/3.9 status=200"),
        "{}",
        berth.log()
    );
}
