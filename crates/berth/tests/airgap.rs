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

/// Compressed bundles: `-o FILE.tar.gz` / `.tar.zst` write what gzip and
/// zstd (and GNU tar) read; `bundle ls` and `bundle load` take them as they
/// are, and skopeo reads the image out of the decompressed tar.
#[test]
fn compressed_bundles_are_written_and_read() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let source = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    // Compressible content, so the compressed bundle is visibly smaller.
    let text: Vec<u8> = b"the same line again and again\n".repeat(20_000);
    let image = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "log.txt",
            data: &text,
        }])],
    );
    source.push(s, &layout.oci_ref("v1"), "team/app:v1", None);
    let list = s.join("images.txt");
    std::fs::write(&list, format!("{SOURCE}/team/app:v1\n")).unwrap();
    let upstream = format!("{SOURCE}={}", source.url());
    let mut sizes = Vec::new();
    for (name, check) in [
        ("site.tar", None),
        ("site.tar.gz", Some(("gzip", "-t"))),
        ("site.tar.zst", Some(("zstd", "-tq"))),
    ] {
        let bundle = s.join(name);
        berth(&[
            "bundle",
            "create",
            list.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap(),
            "--upstream",
            &upstream,
        ]);
        sizes.push(std::fs::metadata(&bundle).unwrap().len());
        if let Some((tool, flag)) = check {
            run(Command::new(require_tool(tool)).arg(flag).arg(&bundle));
            let listing = run(Command::new("tar")
                .arg(if tool == "gzip" { "-tzf" } else { "--zstd" })
                .args(if tool == "gzip" { vec![] } else { vec!["-tf"] })
                .arg(&bundle))
            .stdout_str();
            assert!(listing.contains("index.json"), "{listing}");
        }
        let ls = berth(&["bundle", "ls", bundle.to_str().unwrap(), "--output", "json"]);
        let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
        assert_eq!(
            ls["images"][0]["digest"],
            image.manifest_digest.as_str(),
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
        let mut cmd = skopeo(s);
        cmd.args([
            "inspect",
            "--no-tags",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/{SOURCE}/team/app:v1", airgap.host()),
        ]);
        assert_eq!(
            run(&mut cmd).stdout_str().trim(),
            image.manifest_digest,
            "{name}"
        );
    }
    assert!(
        sizes[1] * 5 < sizes[0] && sizes[2] * 5 < sizes[0],
        "{sizes:?}"
    );
    // Decompressed by gzip itself, it is the plain bundle skopeo reads.
    let plain = s.join("unzipped.tar");
    let out = run(Command::new("gzip").arg("-dc").arg(s.join("site.tar.gz")));
    std::fs::write(&plain, &out.stdout).unwrap();
    let mut cmd = skopeo(s);
    cmd.args([
        "inspect",
        "--no-tags",
        "--format",
        "{{.Digest}}",
        &format!("oci-archive:{}:{SOURCE}/team/app:v1", plain.display()),
    ]);
    assert_eq!(run(&mut cmd).stdout_str().trim(), image.manifest_digest);
    // A truncated compressed bundle is refused before anything is pushed.
    let cut = s.join("cut.tar.zst");
    let bytes = std::fs::read(s.join("site.tar.zst")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let airgap = Server::start_with(&["--offline".to_string()]);
    let out = run_unchecked(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "bundle",
        "load",
        cut.to_str().unwrap(),
        "--to",
        &airgap.host(),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot decompress"),
        "{}",
        out.describe()
    );
    let r = curl("GET", &format!("{}/v2/_catalog", airgap.url())).send();
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
}

/// Incremental bundles: `--since OLD` leaves out what OLD carried, and
/// `--skip-present-in REGISTRY` what that registry holds; loading one
/// before what it builds on stops with that advice, and after it the
/// images are whole (a shared layer of another repository is mounted from
/// the earlier image's repository).
#[test]
fn incremental_bundles_carry_only_what_is_new() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let source = Distribution::start();
    let layout = Layout::create(&s.join("layout"));
    let base_layer = tar_layer(&[TarEntry {
        name: "base.bin",
        data: &pseudo_random(400_000, 5),
    }]);
    let new_layer = tar_layer(&[TarEntry {
        name: "app.bin",
        data: &pseudo_random(2_000, 6),
    }]);
    let v1 = layout.add_image("v1", "amd64", std::slice::from_ref(&base_layer));
    let v2 = layout.add_image("v2", "amd64", &[base_layer.clone(), new_layer.clone()]);
    source.push(s, &layout.oci_ref("v1"), "team/app:v1", None);
    source.push(s, &layout.oci_ref("v2"), "team/app:v2", None);
    source.push(s, &layout.oci_ref("v2"), "team/other:v1", None);
    let upstream = format!("{SOURCE}={}", source.url());
    let create = |list: &str, out: &str, extra: &[&str]| {
        let list_file = s.join(format!("{out}.txt"));
        std::fs::write(&list_file, list).unwrap();
        let bundle = s.join(out);
        let mut args = vec![
            "bundle".to_string(),
            "create".into(),
            list_file.display().to_string(),
            "-o".into(),
            bundle.display().to_string(),
            "--upstream".into(),
            upstream.clone(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        run(Command::new(env!("CARGO_BIN_EXE_berth")).args(&args));
        bundle
    };
    let members =
        |bundle: &std::path::Path| run(Command::new("tar").arg("-tf").arg(bundle)).stdout_str();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let base_digest = sha256(&base_layer);

    let first = create(&format!("{SOURCE}/team/app:v1\n"), "first.tar", &[]);
    let second = create(
        &format!("{SOURCE}/team/app:v2\n{SOURCE}/team/other:v1\n"),
        "second.tar",
        &["--since", first.to_str().unwrap()],
    );
    let listed = members(&second);
    assert!(!listed.contains(&hex(&base_digest)), "{listed}");
    assert!(listed.contains(&hex(&sha256(&new_layer))), "{listed}");
    assert!(listed.contains(&hex(&v2.manifest_digest)), "{listed}");
    assert!(
        std::fs::metadata(&second).unwrap().len() * 10 < std::fs::metadata(&first).unwrap().len()
    );

    let ls = run(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "bundle",
        "ls",
        second.to_str().unwrap(),
    ]))
    .stdout_str();
    assert!(ls.contains("incremental: "), "{ls}");

    let airgap = Server::start_with(&["--offline".to_string()]);
    let load = |bundle: &std::path::Path| {
        run_unchecked(Command::new(env!("CARGO_BIN_EXE_berth")).args([
            "bundle",
            "load",
            bundle.to_str().unwrap(),
            "--to",
            &airgap.host(),
        ]))
    };
    let out = load(&second);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("left out of this incremental bundle"),
        "{}",
        out.describe()
    );
    let r = curl(
        "GET",
        &format!("{}/v2/{SOURCE}/team/app/manifests/v2", airgap.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    assert_eq!(r.status, 404, "a half-loaded image is visible");

    let out = load(&first);
    assert!(out.status.success(), "{}", out.describe());
    let out = load(&second);
    assert!(out.status.success(), "{}", out.describe());
    for (repo, tag, digest) in [
        ("team/app", "v1", &v1.manifest_digest),
        ("team/app", "v2", &v2.manifest_digest),
        ("team/other", "v1", &v2.manifest_digest),
    ] {
        let pulled = s.join(format!("pulled-{}-{tag}", repo.replace('/', "-")));
        run(skopeo(s).args([
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &format!("docker://{}/{SOURCE}/{repo}:{tag}", airgap.host()),
            &format!("oci:{}:x", pulled.display()),
        ]));
        assert_eq!(
            &Layout { dir: pulled }.manifest("x").0,
            digest,
            "{repo}:{tag}"
        );
    }

    // Against a registry reachable from here that holds what the site has.
    let third = create(
        &format!("{SOURCE}/team/app:v2\n"),
        "third.tar",
        &["--skip-present-in", &airgap.host()],
    );
    let listed = members(&third);
    assert!(!listed.contains(&hex(&base_digest)), "{listed}");
    assert!(!listed.contains(&hex(&sha256(&new_layer))), "{listed}");
    assert!(listed.contains(&hex(&v2.manifest_digest)), "{listed}");
    let out = load(&third);
    assert!(out.status.success(), "{}", out.describe());
}
