//! Air gaps whose registry is not berth (issue 12): `bundle load --to
//! REGISTRY/PREFIX` into a plain registry (Debian's Distribution, standing
//! in for a Harbor project), and nodes pointed at it with
//! `runtime-config --override-path`, which real clients then follow:
//! containerd's `ctr` (hosts.toml `override_path`) and skopeo
//! (registries.conf, as CRI-O and Podman read it). The image names a
//! registry that resolves nowhere, so only the configured mirror can serve
//! it, and the plain registry's own access log shows what was asked.

mod common;

use std::process::Command;

use common::*;

const SOURCE: &str = "registry.airgap.test";

fn berth(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(args))
}

#[test]
fn a_bundle_loaded_under_a_prefix_is_pulled_through_override_path() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    // The connected side: the image in its registry, then in a bundle.
    let source = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    let image = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "hello.txt",
            data: b"hello from across the gap\n",
        }])],
    );
    source.push(s, &layout.oci_ref("v1"), "team/app:v1", None);
    let list = s.join("images.txt");
    std::fs::write(&list, format!("{SOURCE}/team/app:v1\n")).unwrap();
    let bundle = s.join("bundle.tar");
    berth(&[
        "bundle",
        "create",
        list.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "--upstream",
        &format!("{SOURCE}={}", source.url()),
    ]);
    drop(source);

    // The air-gapped side: a plain registry, images under a project.
    let site = Distribution::start();
    let out = berth(&[
        "bundle",
        "load",
        bundle.to_str().unwrap(),
        "--to",
        &format!("{}/airgap", site.host()),
    ]);
    let target = format!("{}/airgap/{SOURCE}/team/app:v1", site.host());
    assert!(
        out.stderr.contains(&target),
        "no {target}\n{}",
        out.describe()
    );
    let r = curl(
        "GET",
        &format!("{}/v2/airgap/{SOURCE}/team/app/manifests/v1", site.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    r.expect_status(200);
    r.expect_header("Docker-Content-Digest", &image.manifest_digest);
    // A URL names the same thing; a path that is no repository name is refused.
    berth(&[
        "bundle",
        "load",
        bundle.to_str().unwrap(),
        "--to",
        &format!("{}/second", site.url()),
    ]);
    assert_eq!(
        site.requests("PUT", &format!("/v2/second/{SOURCE}/team/app/manifests/v1")),
        1
    );
    let bad = run_unchecked(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "bundle",
        "load",
        bundle.to_str().unwrap(),
        "--to",
        &format!("{}/Bad//x", site.host()),
    ]));
    assert!(!bad.status.success(), "{}", bad.describe());
    assert!(
        bad.stderr.contains("the path after the registry"),
        "{}",
        bad.describe()
    );

    // containerd, through hosts.toml with override_path.
    let hosts = s.join("certs.d");
    berth(&[
        "runtime-config",
        "containerd",
        "--mirror",
        &site.url(),
        "--registries",
        SOURCE,
        "--override-path",
        "airgap/{registry}",
        "--dest",
        hosts.to_str().unwrap(),
    ]);
    let containerd = Containerd::start();
    run(containerd
        .ctr()
        .args(["content", "fetch", "--hosts-dir"])
        .arg(&hosts)
        .arg(format!("{SOURCE}/team/app:v1")));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(listed.contains(&image.manifest_digest), "{listed}");
    assert!(
        site.requests("GET", &format!("/v2/airgap/{SOURCE}/team/app/manifests/v1")) >= 1
            || site.requests(
                "HEAD",
                &format!("/v2/airgap/{SOURCE}/team/app/manifests/v1")
            ) >= 1,
        "containerd did not ask the prefixed name:\n{}",
        site.request_lines().join("\n")
    );

    // skopeo, through registries.conf with the prefix as the location.
    let conf = s.join("registries.conf");
    berth(&[
        "runtime-config",
        "crio",
        "--mirror",
        &site.url(),
        "--registries",
        SOURCE,
        "--override-path",
        "airgap/{registry}",
        "--dest",
        conf.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains(&format!("location = \"{}/airgap/{SOURCE}\"", site.host())),
        "{text}"
    );
    let mut cmd = skopeo(s);
    cmd.arg("--registries-conf").arg(&conf).args([
        "inspect",
        "--no-tags",
        "--format",
        "{{.Digest}}",
        &format!("docker://{SOURCE}/team/app:v1"),
    ]);
    assert_eq!(run(&mut cmd).stdout_str().trim(), image.manifest_digest);
}
