//! Black-box tests of the image tool verbs (`copy`, `inspect`, `ls`,
//! `tags`, `rm`, `images`, `bundle`, `cache`) against Debian's
//! docker-registry and berth itself, cross-checked with skopeo: digests
//! agree, and what berth writes into oci:/oci-archive: skopeo reads (and
//! the other way round).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// `berth ARGS` with an environment that holds no credentials of the host.
fn berth_cmd(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args)
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

/// `sh` with the same environment as [`berth_cmd`].
fn shell(home: &Path) -> Command {
    let mut cmd = berth_cmd(home, &[]);
    let env: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    cmd = Command::new("sh");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

fn berth(home: &Path, args: &[&str]) -> Output {
    run(&mut berth_cmd(home, args))
}

fn berth_json(home: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = berth(home, &a);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", out.describe()))
}

/// `berth ARGS` expected to fail with `code`.
fn berth_fails(home: &Path, args: &[&str], code: i32) -> Output {
    let out = run_unchecked(&mut berth_cmd(home, args));
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}\n{}",
        out.describe()
    );
    out
}

/// The digest of `skopeo inspect --raw REF`.
fn skopeo_raw_digest(scratch: &Path, reference: &str) -> String {
    let out = run(skopeo(scratch).args(["inspect", "--raw", "--tls-verify=false", reference]));
    sha256(&out.stdout)
}

fn layer(name: &str, seed: u64, len: usize) -> Vec<u8> {
    tar_layer(&[TarEntry {
        name,
        data: &pseudo_random(len, seed),
    }])
}

/// A layout with an amd64 and an arm64 image sharing one layer, and an
/// index `multi` over them. Returns (amd64, arm64, index digest).
fn multi_arch(dir: &Path) -> (Layout, ImageInfo, ImageInfo, String) {
    let l = Layout::create(dir);
    let shared = layer("shared.bin", 1, 3000);
    let amd = l.add_image("amd", "amd64", &[shared.clone(), layer("amd.bin", 2, 2000)]);
    let arm = l.add_image("arm", "arm64", &[shared, layer("arm.bin", 3, 2500)]);
    let (index, _) = l.make_index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    (l, amd, arm, index)
}

#[test]
fn copy_between_registry_and_layouts_agrees_with_skopeo() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let src = Layout::create(&s.join("src"));
    let img = src.add_image("v1", "amd64", &[layer("a", 10, 5000), layer("b", 11, 7000)]);
    let host = reg.host();

    // oci: -> registry; skopeo sees the same manifest digest.
    let r = berth_json(
        s,
        &[
            "copy",
            &src.oci_ref("v1"),
            &format!("docker://{host}/app:v1"),
        ],
    );
    assert_eq!(r["digest"], img.manifest_digest.as_str());
    assert_eq!(r["blobsCopied"], 3);
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/app:v1")),
        img.manifest_digest
    );

    // Again, to another tag: every blob is already there.
    let r = berth_json(
        s,
        &[
            "copy",
            &src.oci_ref("v1"),
            &format!("docker://{host}/app:v2"),
        ],
    );
    assert_eq!(r["blobsSkipped"], 3, "{r}");
    assert_eq!(r["bytesCopied"], 0);

    // To another repository of the same registry: mounted, not uploaded.
    let r = berth_json(
        s,
        &[
            "copy",
            &format!("docker://{host}/app:v1"),
            &format!("docker://{host}/other/app:v1"),
        ],
    );
    assert_eq!(r["blobsMounted"], 3, "{r}");

    // registry -> oci-archive: written by berth, read by skopeo.
    let archive = s.join("berth.tar");
    berth(
        s,
        &[
            "copy",
            &format!("docker://{host}/app:v1"),
            &format!("oci-archive:{}:v1", archive.display()),
        ],
    );
    let back = s.join("from-berth-archive");
    run(skopeo(s).args([
        "copy",
        "--preserve-digests",
        &format!("oci-archive:{}:v1", archive.display()),
        &format!("oci:{}:v1", back.display()),
    ]));
    let skl = Layout { dir: back };
    assert_eq!(skl.manifest("v1").0, img.manifest_digest);
    for b in img.blobs() {
        assert_eq!(skl.blob(&b), src.blob(&b));
    }

    // oci-archive written by skopeo, read by berth.
    let sk_archive = s.join("skopeo.tar");
    run(skopeo(s).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/app:v1"),
        &format!("oci-archive:{}:v1", sk_archive.display()),
    ]));
    let info = berth_json(
        s,
        &[
            "inspect",
            &format!("oci-archive:{}:v1", sk_archive.display()),
        ],
    );
    assert_eq!(info["digest"], img.manifest_digest.as_str());
    assert_eq!(info["image"]["layers"].as_array().unwrap().len(), 2);
    assert_eq!(info["image"]["layers"][1]["size"], 512 + 7168 + 1024);
    let out = s.join("from-skopeo-archive");
    berth(
        s,
        &[
            "copy",
            &format!("oci-archive:{}:v1", sk_archive.display()),
            &format!("oci:{}:copied", out.display()),
        ],
    );
    let bl = Layout { dir: out };
    assert_eq!(bl.manifest("copied").1, img.manifest);

    // oci: written by berth is read by skopeo.
    assert_eq!(
        skopeo_raw_digest(s, &format!("oci:{}:copied", bl.dir.display())),
        img.manifest_digest
    );
    // And the raw manifest berth prints is byte-identical.
    let raw = berth(s, &["inspect", "--raw", &format!("docker://{host}/app:v1")]);
    assert_eq!(raw.stdout, img.manifest);
}

#[test]
fn multi_arch_index_with_all_and_platform() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let (l, amd, arm, index) = multi_arch(&s.join("src"));
    let host = reg.host();

    let r = berth_json(
        s,
        &[
            "copy",
            "--all",
            &l.oci_ref("multi"),
            &format!("docker://{host}/multi:1"),
        ],
    );
    assert_eq!(r["digest"], index.as_str());
    assert_eq!(r["manifests"], 3);
    // The shared layer went once: 2 configs + 3 distinct layers.
    assert_eq!(r["blobs"], 5);
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/multi:1")),
        index
    );
    // skopeo can pull every platform back.
    let all = s.join("skopeo-all");
    run(skopeo(s).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/multi:1"),
        &format!("oci:{}:m", all.display()),
    ]));
    assert_eq!(Layout { dir: all }.manifest("m").0, index);

    // One platform out of the index.
    let r = berth_json(
        s,
        &[
            "copy",
            "--platform",
            "linux/arm64",
            &format!("docker://{host}/multi:1"),
            &format!("docker://{host}/arm:1"),
        ],
    );
    assert_eq!(r["digest"], arm.manifest_digest.as_str());
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/arm:1")),
        arm.manifest_digest
    );

    // Without a flag: the host's platform (skopeo's default).
    let host_digest = if std::env::consts::ARCH == "aarch64" {
        &arm.manifest_digest
    } else {
        &amd.manifest_digest
    };
    let out = s.join("host");
    let r = berth_json(
        s,
        &[
            "copy",
            &format!("docker://{host}/multi:1"),
            &format!("oci:{}:h", out.display()),
        ],
    );
    assert_eq!(r["digest"], host_digest.as_str());
    assert_eq!(r["fromIndex"], index.as_str());

    // The whole index into an oci-archive, which skopeo reads.
    let archive = s.join("multi.tar");
    berth(
        s,
        &[
            "copy",
            "--all",
            &format!("docker://{host}/multi:1"),
            &format!("oci-archive:{}:m", archive.display()),
        ],
    );
    assert_eq!(
        skopeo_raw_digest(s, &format!("oci-archive:{}:m", archive.display())),
        index
    );

    // inspect: platforms, and the chosen platform's layers and config.
    let info = berth_json(
        s,
        &[
            "inspect",
            "--platform",
            "linux/arm64",
            &format!("docker://{host}/multi:1"),
        ],
    );
    assert_eq!(info["mediaType"], OCI_INDEX);
    let platforms: Vec<&str> = info["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(info["image"]["digest"], arm.manifest_digest.as_str());
    assert_eq!(info["image"]["platform"], "linux/arm64");
    assert_eq!(info["image"]["config"]["cmd"][0], "/bin/true");
    let config = berth(
        s,
        &[
            "inspect",
            "--config",
            "--platform",
            "linux/arm64",
            &format!("docker://{host}/multi:1"),
        ],
    );
    assert_eq!(sha256(&config.stdout), arm.config_digest);

    // A platform the index lacks: not found, with advice.
    let out = berth_fails(
        s,
        &[
            "copy",
            "--platform",
            "linux/s390x",
            &format!("docker://{host}/multi:1"),
            &format!("oci:{}:x", s.join("none").display()),
        ],
        3,
    );
    assert!(out.stderr.contains("--platform"), "{}", out.describe());
}

#[test]
fn ls_tags_rm_and_exit_codes() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    l.add_image("one", "amd64", &[layer("1", 20, 1000)]);
    l.add_image("two", "amd64", &[layer("2", 21, 1000)]);
    let host = reg.host();
    for (tag, dst) in [("one", "app:v1"), ("two", "app:v2"), ("one", "team/tool:1")] {
        berth(
            s,
            &["copy", &l.oci_ref(tag), &format!("docker://{host}/{dst}")],
        );
    }

    let out = berth(s, &["ls", &host]);
    assert_eq!(out.stdout_str(), "app\nteam/tool\n");
    // Following pagination one name at a time gives the same list.
    let out = berth(s, &["ls", "--page-size", "1", &format!("http://{host}")]);
    assert_eq!(out.stdout_str(), "app\nteam/tool\n");
    let out = berth(s, &["tags", "--page-size", "1", &format!("{host}/app")]);
    assert_eq!(out.stdout_str(), "v1\nv2\n");
    let v = berth_json(s, &["tags", &format!("docker://{host}/app")]);
    assert_eq!(v["tags"], serde_json::json!(["v1", "v2"]));

    berth(s, &["rm", "--manifest", &format!("docker://{host}/app:v2")]);
    let out = berth(s, &["tags", &format!("{host}/app")]);
    assert_eq!(out.stdout_str(), "v1\n");

    // Unknown tag: exit 3 and a hint.
    let out = berth_fails(s, &["inspect", &format!("docker://{host}/app:v2")], 3);
    assert!(out.stderr.contains("hint:"), "{}", out.describe());
    assert!(
        out.stderr.contains("its tags are: v1"),
        "{}",
        out.describe()
    );
    let out = berth_fails(s, &["inspect", &format!("docker://{host}/nothing:v2")], 3);
    assert!(
        out.stderr.contains("no such repository"),
        "{}",
        out.describe()
    );
    berth_fails(s, &["tags", &format!("{host}/nope")], 3);
    // With --output json the failure is JSON on stdout too.
    let out = berth_fails(
        s,
        &[
            "inspect",
            "--output",
            "json",
            &format!("docker://{host}/app:v2"),
        ],
        3,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["exitCode"], 3);
    assert!(v["error"]["hint"].as_str().unwrap().contains("berth tags"));
    // Nothing listening: exit 6.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    berth_fails(s, &["inspect", &format!("127.0.0.1:{port}/x:1")], 6);
    // Verified TLS against a registry that speaks plain HTTP: a TLS failure (5)
    // whose hint names --tls-verify=false.
    let out = berth_fails(
        s,
        &["inspect", "--tls-verify=true", &format!("{host}/app:v1")],
        5,
    );
    assert!(
        out.stderr.contains("--tls-verify=false"),
        "{}",
        out.describe()
    );
    // Plain HTTP without --tls-verify=false on a non-loopback name fails
    // TLS-wise or network-wise, never silently; bad references are usage errors.
    berth_fails(s, &["copy", "Not/A:Ref:x", "oci:/tmp/x"], 2);
    berth_fails(s, &["copy", &l.oci_ref("one"), "docker-daemon:x"], 2);
    let out = berth_fails(
        s,
        &["inspect", &format!("oci:{}:missing", l.dir.display())],
        3,
    );
    assert!(out.stderr.contains("one"), "{}", out.describe());
    assert!(out.stderr.contains("oci:DIR:NAME"), "{}", out.describe());
}

#[test]
fn images_lists_normalised_references_from_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let dir = s.join("manifests");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("app.yaml"),
        r#"# Source: chart/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {example-image: "busybox:9"}}
spec:
  template:
    spec:
      initContainers: [{name: init, image: "alpine:3.20"}]
      containers:
      - name: web
        image: nginx
        env: [{name: SIDECAR_IMAGE, value: "redis:7"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: job}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: j, image: "quay.io/org/job:2"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {image: "postgres:16"}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/vm.yml"),
        r#"apiVersion: v1
kind: List
items:
- apiVersion: kubevirt.io/v1
  kind: VirtualMachine
  metadata: {name: ubuntu-vm}
  spec:
    template:
      spec:
        volumes:
        - containerDisk: {image: docker.io/exampleuser/ubuntu-vm:latest, imagePullSecret: s}
          name: containerdisk
    dataVolumeTemplates:
    - metadata: {name: containerdisk-dv}
      spec:
        source:
          registry:
            url: "docker://quay.io/containerdisks/fedora:40"
            secretRef: s
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: ds}
  spec:
    template:
      spec:
        containers: [{name: a, image: "nginx:latest"}]
        ephemeralContainers: [{name: d, image: "registry.k8s.io/e2e-test-images/agnhost:2.45"}]
"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "image: ignored:1\n").unwrap();
    let out = berth(s, &["images", dir.to_str().unwrap()]);
    assert_eq!(
        out.stdout_str(),
        "docker.io/exampleuser/ubuntu-vm:latest\n\
         docker.io/library/alpine:3.20\n\
         docker.io/library/nginx:latest\n\
         quay.io/containerdisks/fedora:40\n\
         quay.io/org/job:2\n\
         registry.k8s.io/e2e-test-images/agnhost:2.45\n"
    );
    let v = berth_json(s, &["images", dir.join("app.yaml").to_str().unwrap()]);
    assert_eq!(v["images"][0]["image"], "docker.io/library/alpine:3.20");
    assert_eq!(
        v["images"][0]["sources"][0]["field"],
        "spec.template.spec.initContainers[0].image"
    );
    assert_eq!(v["unread"], serde_json::json!([]));
    // A custom resource berth does not read: warned about, not skipped silently.
    std::fs::write(
        dir.join("widget.yaml"),
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {image: example/widget:1}\n",
    )
    .unwrap();
    let out = berth(s, &["images", dir.join("widget.yaml").to_str().unwrap()]);
    assert_eq!(out.stdout_str(), "");
    assert!(
        out.stderr.contains("warning")
            && out.stderr.contains("Widget")
            && out.stderr.contains("spec.image"),
        "{}",
        out.describe()
    );
    let v = berth_json(s, &["images", dir.join("widget.yaml").to_str().unwrap()]);
    assert_eq!(v["unread"][0]["fields"][0], "spec.image");
    berth_fails(s, &["images", s.join("missing.yaml").to_str().unwrap()], 3);
}

/// images -> bundle create -> bundle load into an --offline berth -> skopeo
/// pulls every image back, byte-identical.
#[test]
fn air_gap_round_trip_through_a_bundle() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let (l, _amd, _arm, index) = multi_arch(&s.join("src"));
    let tool = l.add_image(
        "tool",
        "amd64",
        &[layer("shared.bin", 1, 3000), layer("t", 30, 900)],
    );
    let host = reg.host();
    // The "internet": docker.io is this Distribution registry.
    berth(
        s,
        &[
            "copy",
            "--all",
            &l.oci_ref("multi"),
            &format!("docker://{host}/library/app:v1"),
        ],
    );
    berth(
        s,
        &[
            "copy",
            &l.oci_ref("tool"),
            &format!("docker://{host}/library/tool:1"),
        ],
    );
    let yaml = s.join("deploy.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n      initContainers: [{name: t, image: tool:1}]\n      containers: [{name: a, image: app:v1}]\n",
    )
    .unwrap();
    let list = berth(s, &["images", yaml.to_str().unwrap()]).stdout_str();
    assert_eq!(list, "docker.io/library/app:v1\ndocker.io/library/tool:1\n");

    let bundle = s.join("bundle.tar");
    let upstream = format!("docker.io=http://{host}");
    // `berth images` feeds `bundle create` through a pipe.
    let bin = env!("CARGO_BIN_EXE_berth");
    let out = run(shell(s).env("BIN", bin).arg("-c").arg(format!(
        "\"$BIN\" images '{}' | \"$BIN\" bundle create - -o '{}' --upstream '{upstream}'",
        yaml.display(),
        bundle.display()
    )));
    assert!(
        out.stderr.contains("added docker.io/library/tool:1"),
        "{}",
        out.describe()
    );
    // Each blob once: the layer shared by three images is stored one time.
    let listing = run(Command::new("tar").arg("-tf").arg(&bundle)).stdout_str();
    let shared = sha256(&layer("shared.bin", 1, 3000));
    let shared_path = format!("blobs/sha256/{}", shared.trim_start_matches("sha256:"));
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.ends_with(&shared_path))
            .count(),
        1,
        "{listing}"
    );
    // skopeo reads one image out of the bundle by its original reference.
    assert_eq!(
        skopeo_raw_digest(
            s,
            &format!("oci-archive:{}:docker.io/library/app:v1", bundle.display())
        ),
        index
    );
    drop(reg);

    // `bundle ls`: each image with its platforms and size; the layer the
    // three images share is counted once in the total and as shared.
    let ls = berth_json(s, &["bundle", "ls", bundle.to_str().unwrap()]);
    let images = ls["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{ls}");
    let app = images
        .iter()
        .find(|i| i["reference"] == "docker.io/library/app:v1")
        .unwrap();
    assert_eq!(app["digest"], index.as_str());
    assert_eq!(
        app["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    let tool_entry = images
        .iter()
        .find(|i| i["reference"] == "docker.io/library/tool:1")
        .unwrap();
    assert_eq!(tool_entry["platforms"], serde_json::json!(["linux/amd64"]));
    let shared_size = layer("shared.bin", 1, 3000).len() as u64;
    assert!(ls["sharedBytes"].as_u64().unwrap() >= shared_size, "{ls}");
    let sum: u64 = images.iter().map(|i| i["size"].as_u64().unwrap()).sum();
    assert_eq!(sum - ls["bytes"].as_u64().unwrap(), shared_size, "{ls}");
    let out = berth(s, &["bundle", "ls", bundle.to_str().unwrap()]);
    assert!(
        out.stdout_str().contains("docker.io/library/app:v1")
            && out.stdout_str().contains("linux/amd64,linux/arm64")
            && out.stdout_str().contains("2 image(s)"),
        "{}",
        out.describe()
    );

    // The air-gapped site.
    let site = Server::start_with(&["--offline".to_string()]);
    let loaded = berth_json(
        s,
        &[
            "bundle",
            "load",
            bundle.to_str().unwrap(),
            "--to",
            &site.host(),
        ],
    );
    assert_eq!(loaded.as_array().unwrap().len(), 2);
    assert_eq!(
        loaded[0]["target"],
        format!("{}/docker.io/library/app:v1", site.host())
    );
    for (name, tag, digest) in [
        ("app", "v1", index.clone()),
        ("tool", "1", tool.manifest_digest.clone()),
    ] {
        let out = s.join(format!("pulled-{name}"));
        run(skopeo(s).args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/docker.io/library/{name}:{tag}", site.host()),
            &format!("oci:{}:x", out.display()),
        ]));
        let pulled = Layout { dir: out };
        assert_eq!(pulled.manifest("x").0, digest);
        let mut blobs = 0;
        for entry in std::fs::read_dir(pulled.dir.join("blobs/sha256")).unwrap() {
            let p = entry.unwrap().path();
            let d = format!("sha256:{}", p.file_name().unwrap().to_str().unwrap());
            assert_eq!(std::fs::read(&p).unwrap(), l.blob(&d), "{d}");
            blobs += 1;
        }
        assert!(blobs >= 3);
    }

    // A corrupted bundle is refused before anything is pushed.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let marker = pseudo_random(900, 30);
    let at = bytes
        .windows(64)
        .position(|w| w == &marker[..64])
        .expect("layer bytes in the bundle");
    bytes[at + 10] ^= 0xff;
    let bad = s.join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let fresh = Server::start_with(&["--offline".to_string()]);
    let out = berth_fails(
        s,
        &[
            "bundle",
            "load",
            bad.to_str().unwrap(),
            "--to",
            &fresh.host(),
        ],
        7,
    );
    assert!(out.stderr.contains("digest"), "{}", out.describe());
    assert_eq!(berth(s, &["ls", &fresh.host()]).stdout_str(), "");
}

/// `berth cache` warms a pull-through berth; with the upstream stopped,
/// every cached image is still complete.
#[test]
fn cache_warms_a_berth_that_then_serves_without_its_upstream() {
    let mut reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let (l, _amd, _arm, index) = multi_arch(&s.join("src"));
    let single = l.add_image("single", "amd64", &[layer("s", 40, 1200)]);
    let host = reg.host();
    berth(
        s,
        &[
            "copy",
            "--all",
            &l.oci_ref("multi"),
            &format!("docker://{host}/library/app:v1"),
        ],
    );
    berth(
        s,
        &[
            "copy",
            &l.oci_ref("single"),
            &format!("docker://{host}/tools/one:2"),
        ],
    );
    let cache = Server::start_with(&[
        "--upstream".to_string(),
        format!("registry.test={}", reg.url()),
    ]);
    let list = s.join("list.txt");
    std::fs::write(&list, "# images\nregistry.test/tools/one:2\n").unwrap();
    let out = berth(
        s,
        &[
            "cache",
            "registry.test/library/app:v1",
            "-f",
            list.to_str().unwrap(),
            "--to",
            &cache.host(),
        ],
    );
    assert!(out.stderr.contains("cached 2 of 2"), "{}", out.describe());
    // A missing image: the others are still cached, the exit code says partial.
    let out = berth_fails(
        s,
        &[
            "cache",
            "registry.test/tools/one:2",
            "registry.test/nope:1",
            "--to",
            &cache.host(),
        ],
        8,
    );
    assert!(out.stderr.contains("cached 1 of 2"), "{}", out.describe());

    reg.stop();
    for (name, digest) in [
        ("registry.test/library/app:v1", index),
        ("registry.test/tools/one:2", single.manifest_digest),
    ] {
        let out = s.join(format!("offline-{}", unique()));
        run(skopeo(s).args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/{name}", cache.host()),
            &format!("oci:{}:x", out.display()),
        ]));
        assert_eq!(Layout { dir: out }.manifest("x").0, digest);
    }
}

/// `docker save`-style archives: written by skopeo and read by berth (the
/// computed Docker schema2 image has the original config and layers), and
/// written by berth and read by skopeo.
#[test]
fn docker_archive_is_read_as_a_schema2_image() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    let img = l.add_image(
        "v1",
        "amd64",
        &[layer("d1", 50, 4000), layer("d2", 51, 100)],
    );
    let archive = s.join("saved.tar");
    run(skopeo(s).args([
        "copy",
        &l.oci_ref("v1"),
        &format!("docker-archive:{}:example/app:v1", archive.display()),
    ]));
    let arch = format!("docker-archive:{}", archive.display());
    let info = berth_json(s, &["inspect", &arch]);
    assert_eq!(info["mediaType"], DOCKER_MANIFEST);
    assert_eq!(
        info["image"]["config"]["digest"],
        img.config_digest.as_str()
    );
    let layers: Vec<&str> = info["image"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        img.layer_digests
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    // By its repo tag, into a registry; skopeo reads the same manifest back.
    let host = reg.host();
    let r = berth_json(
        s,
        &[
            "copy",
            &format!("{arch}:example/app:v1"),
            &format!("docker://{host}/from-archive:1"),
        ],
    );
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/from-archive:1")),
        r["digest"].as_str().unwrap()
    );
    // berth writes docker-archive (one image); skopeo reads the same
    // config and layers from it.
    let written = s.join("berth-saved.tar");
    berth(
        s,
        &[
            "copy",
            &l.oci_ref("v1"),
            &format!("docker-archive:{}:example/app:v1", written.display()),
        ],
    );
    let saved = format!("docker-archive:{}", written.display());
    let raw = run(skopeo(s).args(["inspect", "--raw", &saved]));
    let m: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["config"]["digest"], img.config_digest.as_str());
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        img.layer_digests
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let config = run(skopeo(s).args(["inspect", "--config", "--raw", &saved]));
    assert_eq!(sha256(&config.stdout), img.config_digest);
    // An index does not fit in a docker-archive: exit 2, with advice.
    l.make_index("idx", &[("v1", "amd64")]);
    let out = berth_fails(
        s,
        &[
            "copy",
            "--all",
            &l.oci_ref("idx"),
            &format!("docker-archive:{}", s.join("x.tar").display()),
        ],
        2,
    );
    assert!(out.stderr.contains("--platform"), "{}", out.describe());
}

/// A CA, and a certificate for 127.0.0.1 signed by it.
fn make_pki(dir: &Path) {
    require_tool("openssl");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=berth image-tool test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-days",
        "2",
        "-CAcreateserial",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.crt"),
    ]));
}

/// A docker-registry speaking TLS with a private CA: verification fails
/// with exit code 5 and a hint; --cert-dir, --ca-file and
/// --tls-verify=false each fix it.
#[test]
fn private_ca_registry_needs_cert_dir_or_tls_verify_false() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let pki = s.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let certs = s.join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(pki.join("ca.crt"), certs.join("ca.crt")).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = s.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = s.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: image-tool-test\n  tls:\n    certificate: {}\n    key: {}\n",
            storage.display(),
            pki.join("server.crt").display(),
            pki.join("server.key").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(s.join("registry.log")).unwrap();
    let mut child = Command::new(require_tool("docker-registry"))
        .arg("serve")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "docker-registry (TLS) did not listen"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "docker-registry exited: {}",
            std::fs::read_to_string(s.join("registry.log")).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _guard = Kill(child);
    let host = format!("127.0.0.1:{port}");
    let l = Layout::create(&s.join("src"));
    let img = l.add_image("v1", "amd64", &[layer("tls", 60, 800)]);
    let dest = format!("docker://{host}/secure/app:v1");
    let cert_dir = certs.to_str().unwrap();

    // Verified TLS without the CA: exit 5, and the hint names the flags.
    let out = berth_fails(
        s,
        &["copy", "--tls-verify=true", &l.oci_ref("v1"), &dest],
        5,
    );
    assert!(
        out.stderr.contains("--cert-dir") && out.stderr.contains("--tls-verify=false"),
        "{}",
        out.describe()
    );
    // With the CA: verified and accepted.
    let r = berth_json(
        s,
        &["copy", "--dest-cert-dir", cert_dir, &l.oci_ref("v1"), &dest],
    );
    assert_eq!(r["digest"], img.manifest_digest.as_str());
    let ca_file = pki.join("ca.crt");
    let info = berth_json(
        s,
        &["inspect", "--ca-file", ca_file.to_str().unwrap(), &dest],
    );
    assert_eq!(info["digest"], img.manifest_digest.as_str());
    // Without verification (and by default for a loopback registry).
    berth(s, &["inspect", "--tls-verify=false", &dest]);
    berth(s, &["tags", &format!("{host}/secure/app")]);
    // skopeo agrees, trusting the same directory.
    let out = run(skopeo(s).args(["inspect", "--raw", "--cert-dir", cert_dir, &dest]));
    assert_eq!(sha256(&out.stdout), img.manifest_digest);
}

/// A registry with Basic auth: no credentials is exit code 4 with advice;
/// --creds, ~/.docker/config.json and $XDG_RUNTIME_DIR/containers/auth.json
/// each work.
#[test]
fn credentials_from_flags_and_auth_files() {
    use base64::Engine as _;
    let reg = Distribution::start_with(DistributionOptions {
        htpasswd: Some(("berth".into(), "s3cret".into())),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    let img = l.add_image("v1", "amd64", &[layer("auth", 70, 600)]);
    let host = reg.host();
    let dest = format!("docker://{host}/private/app:v1");

    let out = berth_fails(s, &["copy", &l.oci_ref("v1"), &dest], 4);
    assert!(out.stderr.contains("--creds"), "{}", out.describe());
    berth(
        s,
        &[
            "copy",
            "--dest-creds",
            "berth:s3cret",
            &l.oci_ref("v1"),
            &dest,
        ],
    );
    berth_fails(s, &["inspect", "--creds", "berth:wrong", &dest], 4);
    let info = berth_json(s, &["inspect", "--creds", "berth:s3cret", &dest]);
    assert_eq!(info["digest"], img.manifest_digest.as_str());

    let auth = base64::engine::general_purpose::STANDARD.encode("berth:s3cret");
    let file = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    // Docker's config.json under $HOME.
    let home = s.join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(home.join(".docker/config.json"), &file).unwrap();
    let out = berth(&home, &["tags", &format!("{host}/private/app")]);
    assert_eq!(out.stdout_str(), "v1\n");
    // Podman's auth.json under $XDG_RUNTIME_DIR.
    let runtime = s.join("run");
    std::fs::create_dir_all(runtime.join("containers")).unwrap();
    std::fs::write(runtime.join("containers/auth.json"), &file).unwrap();
    let out = run(berth_cmd(s, &["inspect", "--raw", &dest]).env("XDG_RUNTIME_DIR", &runtime));
    assert_eq!(out.stdout, img.manifest);
}

/// Which way a [`CuttingProxy`] counts bytes.
#[derive(Clone, Copy, PartialEq)]
enum Towards {
    /// Responses (downloads).
    Client,
    /// Requests (uploads).
    Server,
}

/// A TCP proxy to `upstream` that breaks the first connection that has
/// relayed more than `limit` bytes in the direction `towards`; the rest pass.
struct CuttingProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Relay `from` to `to`; when `limit` is given, break both connections once
/// more than that has passed (only the first time `cut` is claimed).
fn relay(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    limit: Option<usize>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 << 10];
    let mut relayed = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        relayed += n;
        if limit.is_some_and(|l| relayed > l)
            && !cut.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl CuttingProxy {
    fn start(upstream: std::net::SocketAddr, limit: usize, towards: Towards) -> CuttingProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (stop2, cut2) = (stop.clone(), cut.clone());
        let accept = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
            while !stop2.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let (up_limit, down_limit) = match towards {
                    Towards::Server => (Some(limit), None),
                    Towards::Client => (None, Some(limit)),
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let cut_up = cut2.clone();
                std::thread::spawn(move || relay(c2, s2, up_limit, cut_up));
                let cut_down = cut2.clone();
                std::thread::spawn(move || relay(server, client, down_limit, cut_down));
            }
        });
        CuttingProxy {
            port,
            stop,
            cut,
            accept: Some(accept),
        }
    }

    fn did_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A blob download broken mid-way resumes from the bytes already written
/// (a ranged GET), so the whole copy transfers each byte once.
#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    let img = l.add_image(
        "v1",
        "amd64",
        &[layer("big", 80, 6_000_000), layer("small", 81, 500)],
    );
    berth(
        s,
        &[
            "copy",
            &l.oci_ref("v1"),
            &format!("docker://{}/app:v1", reg.host()),
        ],
    );
    let total: u64 = img.blobs().iter().map(|b| l.blob(b).len() as u64).sum();

    let proxy = CuttingProxy::start(reg.addr(), 2_000_000, Towards::Client);
    let out = s.join("out");
    let r = berth_json(
        s,
        &[
            "copy",
            &format!("docker://127.0.0.1:{}/app:v1", proxy.port),
            &format!("oci:{}:v1", out.display()),
        ],
    );
    assert!(proxy.did_cut(), "the proxy never cut a connection");
    assert_eq!(r["digest"], img.manifest_digest.as_str());
    // Restarting the blob would have transferred the cut part twice.
    assert_eq!(r["bytesCopied"], total, "{r}");
    let copied = Layout { dir: out };
    for b in img.blobs() {
        assert_eq!(copied.blob(&b), l.blob(&b));
    }
    let big = &img.layer_digests[0];
    assert_eq!(
        reg.requests("GET", &format!("/v2/app/blobs/{big}")),
        2,
        "{}",
        reg.log()
    );
    assert!(!copied.dir.join(".berth-ingest").exists());
}

/// A large blob upload cut mid-way resumes where the registry says it
/// stands (the upload status GET), not from the start.
#[test]
fn interrupted_upload_resumes_where_the_registry_stands() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    let img = l.add_image("v1", "amd64", &[layer("huge", 90, 40 << 20)]);
    let proxy = CuttingProxy::start(reg.addr(), 20 << 20, Towards::Server);
    let r = berth_json(
        s,
        &[
            "copy",
            &l.oci_ref("v1"),
            &format!("docker://127.0.0.1:{}/app:v1", proxy.port),
        ],
    );
    assert!(proxy.did_cut(), "the proxy never cut a connection");
    assert_eq!(r["digest"], img.manifest_digest.as_str());
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{}/app:v1", reg.host())),
        img.manifest_digest
    );
    let log = reg.log();
    let status_queries = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/app/blobs/uploads/"))
        .count();
    assert_eq!(status_queries, 1, "{log}");
    // Only one upload session was opened for the big blob: it resumed.
    let big = &img.layer_digests[0];
    let out = s.join("back");
    run(skopeo(s).args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/app:v1", reg.host()),
        &format!("oci:{}:x", out.display()),
    ]));
    assert_eq!(Layout { dir: out }.blob(big), l.blob(big));
}

/// Docker schema2 manifests and manifest lists (as skopeo writes them with
/// `--format v2s2`) keep their bytes through oci-archive: and back: berth
/// never converts, so digests never change.
#[test]
fn docker_schema2_images_and_lists_keep_their_bytes() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let (l, _amd, _arm, _index) = multi_arch(&s.join("src"));
    let host = reg.host();
    run(skopeo(s).args([
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &l.oci_ref("multi"),
        &format!("docker://{host}/d2:1"),
    ]));
    let list_digest = skopeo_raw_digest(s, &format!("docker://{host}/d2:1"));
    let info = berth_json(s, &["inspect", &format!("docker://{host}/d2:1")]);
    assert_eq!(info["digest"], list_digest.as_str());
    assert_eq!(info["mediaType"], DOCKER_LIST);
    assert_eq!(info["image"]["mediaType"], DOCKER_MANIFEST);

    let archive = s.join("d2.tar");
    let a = format!("oci-archive:{}:d2", archive.display());
    berth(s, &["copy", "--all", &format!("docker://{host}/d2:1"), &a]);
    // (skopeo reads only OCI-typed images out of a layout, so the list is
    // checked through berth and the registry.)
    let info = berth_json(s, &["inspect", &a]);
    assert_eq!(info["digest"], list_digest.as_str());
    let r = berth_json(
        s,
        &["copy", "--all", &a, &format!("docker://{host}/d2copy:1")],
    );
    assert_eq!(r["digest"], list_digest.as_str());
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/d2copy:1")),
        list_digest
    );
    // One platform of the list.
    let r = berth_json(
        s,
        &[
            "copy",
            "--platform",
            "linux/arm64",
            &a,
            &format!("docker://{host}/d2arm:1"),
        ],
    );
    assert_eq!(r["mediaType"], DOCKER_MANIFEST);
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/d2arm:1")),
        r["digest"].as_str().unwrap()
    );
}

/// `rm NAME:TAG` removes that tag only; the manifest and its other tags
/// stay. `--manifest` (or a digest) deletes the manifest and every tag on
/// it. A registry that cannot delete a tag alone (Distribution 2.8) gets a
/// clear error naming `--manifest`, and nothing is deleted.
#[test]
fn rm_of_a_tag_keeps_the_manifest_and_its_other_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    l.add_image("one", "amd64", &[layer("1", 30, 1000)]);
    let server = Server::start();
    let host = server.host();
    for tag in ["v1", "old", "prod"] {
        berth(
            s,
            &[
                "copy",
                &l.oci_ref("one"),
                &format!("docker://{host}/app:{tag}"),
            ],
        );
    }
    let digest = berth_json(s, &["inspect", &format!("docker://{host}/app:v1")])["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let out = berth(s, &["rm", &format!("docker://{host}/app:old")]);
    assert!(
        out.stdout_str().starts_with("untagged "),
        "{}",
        out.describe()
    );
    let out = berth(s, &["tags", &format!("{host}/app")]);
    assert_eq!(out.stdout_str(), "prod\nv1\n");
    let v = berth_json(s, &["inspect", &format!("docker://{host}/app:v1")]);
    assert_eq!(v["digest"], digest.as_str());

    let v = berth_json(s, &["rm", &format!("docker://{host}/app:prod")]);
    assert_eq!(v["kind"], "tag");
    assert_eq!(v["digest"], digest.as_str());
    let out = berth(s, &["tags", &format!("{host}/app")]);
    assert_eq!(out.stdout_str(), "v1\n");

    let out = berth(s, &["rm", "--manifest", &format!("docker://{host}/app:v1")]);
    assert!(out.stdout_str().contains("every tag"), "{}", out.describe());
    berth_fails(s, &["inspect", &format!("docker://{host}/app@{digest}")], 3);

    // Distribution 2.8 deletes by digest only.
    let reg = Distribution::start();
    let rhost = reg.host();
    for tag in ["v1", "old"] {
        berth(
            s,
            &[
                "copy",
                &l.oci_ref("one"),
                &format!("docker://{rhost}/app:{tag}"),
            ],
        );
    }
    let out = berth_fails(s, &["rm", &format!("docker://{rhost}/app:old")], 1);
    assert!(out.stderr.contains("--manifest"), "{}", out.describe());
    let out = berth(s, &["tags", &format!("{rhost}/app")]);
    let text = out.stdout_str();
    let mut tags: Vec<&str> = text.lines().collect();
    tags.sort_unstable();
    assert_eq!(tags, ["old", "v1"], "{}", out.describe());
}

/// `docker save` writes plain-tar layers. Copied into a registry they are
/// sent gzipped, as skopeo sends them (a 64 KiB tar of one repeated byte
/// was pushed as 65,536+ bytes before), and their content is the same tar;
/// `--compress none` sends them as they are.
#[test]
fn docker_archive_layers_are_sent_gzipped() {
    let reg = Distribution::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    let tar = tar_layer(&[TarEntry {
        name: "big.txt",
        data: &vec![b'a'; 64 << 10],
    }]);
    let img = l.add_image("v1", "amd64", std::slice::from_ref(&tar));
    let archive = s.join("saved.tar");
    run(skopeo(s).args([
        "copy",
        &l.oci_ref("v1"),
        &format!("docker-archive:{}:example/app:v1", archive.display()),
    ]));
    let arch = format!("docker-archive:{}", archive.display());
    let host = reg.host();

    berth(s, &["copy", &arch, &format!("docker://{host}/gz:1")]);
    let info = berth_json(s, &["inspect", &format!("docker://{host}/gz:1")]);
    let sent = &info["image"]["layers"][0];
    assert_eq!(
        sent["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "{info}"
    );
    let size = sent["size"].as_u64().unwrap();
    assert!(size < 2048, "the layer was sent as {size} bytes");
    // The same tar inside: copied back out and gunzipped.
    let back = s.join("back");
    berth(
        s,
        &[
            "copy",
            &format!("docker://{host}/gz:1"),
            &format!("oci:{}:x", back.display()),
        ],
    );
    let hex = sent["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = back.join("blobs/sha256").join(hex);
    let out = Command::new("gzip").arg("-dc").arg(&blob).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, tar);
    // skopeo reads the manifest berth pushed.
    assert_eq!(
        skopeo_raw_digest(s, &format!("docker://{host}/gz:1")),
        info["digest"].as_str().unwrap()
    );

    berth(
        s,
        &[
            "copy",
            "--compress",
            "none",
            &arch,
            &format!("docker://{host}/plain:1"),
        ],
    );
    let info = berth_json(s, &["inspect", &format!("docker://{host}/plain:1")]);
    assert_eq!(
        info["image"]["layers"][0]["digest"],
        img.layer_digests[0].as_str()
    );
}

/// `--compress zstd`: a `docker save` archive's plain layers are sent as
/// zstd, which makes the image OCI (schema2 has no zstd layer type); zstd
/// itself decompresses the layer back to the same tar, and skopeo reads
/// the image.
#[test]
fn docker_archive_layers_can_be_sent_as_zstd() {
    let reg = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path();
    let l = Layout::create(&s.join("src"));
    let tar = tar_layer(&[TarEntry {
        name: "big.txt",
        data: &vec![b'z'; 64 << 10],
    }]);
    l.add_image("v1", "amd64", std::slice::from_ref(&tar));
    let archive = s.join("saved.tar");
    run(skopeo(s).args([
        "copy",
        &l.oci_ref("v1"),
        &format!("docker-archive:{}:example/app:v1", archive.display()),
    ]));
    let host = reg.host();
    berth(
        s,
        &[
            "copy",
            "--compress",
            "zstd",
            &format!("docker-archive:{}", archive.display()),
            &format!("docker://{host}/zst:1"),
        ],
    );
    let info = berth_json(s, &["inspect", "--raw", &format!("docker://{host}/zst:1")]);
    assert_eq!(info["mediaType"], OCI_MANIFEST, "{info}");
    assert_eq!(info["config"]["mediaType"], OCI_CONFIG, "{info}");
    let layer = &info["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert!(layer["size"].as_u64().unwrap() < 2048, "{layer}");
    let r = curl(
        "GET",
        &format!(
            "{}/v2/zst/blobs/{}",
            reg.url(),
            layer["digest"].as_str().unwrap()
        ),
    )
    .send();
    r.expect_status(200);
    let packed = s.join("layer.zst");
    std::fs::write(&packed, &r.body).unwrap();
    let out = run(Command::new(require_tool("zstd")).arg("-dc").arg(&packed));
    assert_eq!(out.stdout, tar);
    let pulled = s.join("pulled");
    run(skopeo(s).args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/zst:1"),
        &format!("oci:{}:x", pulled.display()),
    ]));
}
