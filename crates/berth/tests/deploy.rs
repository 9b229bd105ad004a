//! The three ways to deploy berth (issue 14), each tried as a user would:
//!
//! - the static binary and the `FROM scratch` container image that
//!   `scripts/image` builds with podman: its configuration read by skopeo,
//!   the image pushed through a berth and pulled back, and the binary taken
//!   out of its layer (umoci; `podman run` cannot start containers here)
//!   serving a push and a pull;
//! - the systemd unit, checked by `systemd-analyze verify`, and its
//!   environment file, whose settings berth starts with;
//! - the Kubernetes manifests, rendered by `kubectl kustomize` and checked
//!   against the Kubernetes schemas by `kubernetes-validate --strict`
//!   (installed by scripts/test), their berth.toml started by berth.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// How long `scripts/image` (which runs `scripts/release`) may take: a static
/// release build of berth from nothing, on two cores shared with the rest
/// of the suite.
const STATIC_BUILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(1200);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A small image pushed to and pulled from `host` with skopeo: its digest.
fn push_and_pull(s: &Path, host: &str) {
    let layout = Layout::create(&s.join(format!("layout-{}", unique())));
    let img = layout.add_image(
        "v1",
        "amd64",
        &[tar_layer(&[TarEntry {
            name: "hello",
            data: b"deployed\n",
        }])],
    );
    run(skopeo(s).args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &layout.oci_ref("v1"),
        &format!("docker://{host}/team/app:v1"),
    ]));
    let back = s.join(format!("back-{}", unique()));
    run(skopeo(s).args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{host}/team/app:v1"),
        &format!("oci:{}:x", back.display()),
    ]));
    assert_eq!(Layout { dir: back }.manifest("x").0, img.manifest_digest);
}

#[test]
fn the_container_image_holds_a_static_berth_that_serves() {
    require_tool("podman");
    require_tool("umoci");
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let root = repo_root();
    // A static release build from scratch on a fresh clone: minutes, more
    // than any other command's limit.
    let out = run_within(
        Command::new(root.join("scripts/image")).current_dir(&root),
        STATIC_BUILD_LIMIT,
    );
    let archive = root.join(out.stdout_str().trim());
    assert!(archive.is_file(), "{}", out.describe());

    let config = run(skopeo(s).args([
        "inspect",
        "--config",
        &format!("oci-archive:{}", archive.display()),
    ]));
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert!(c["Volumes"].get("/data").is_some(), "{config}");
    assert!(c["ExposedPorts"].get("5000/tcp").is_some(), "{config}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/bin/berth"]));
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    assert!(
        c["Env"].to_string().contains("BERTH_ROOT=/data"),
        "{config}"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    // Through a berth and back, as it would be published.
    let registry = Server::start();
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args([
        "copy",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{}/berth/berth:test", registry.host()),
    ]));
    let pulled = s.join("pulled");
    run(skopeo(s).args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/berth/berth:test", registry.host()),
        &format!("oci:{}:x", pulled.display()),
    ]));
    let bundle = s.join("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:x", pulled.display()),
        bundle.to_str().unwrap(),
    ]));
    let rootfs = bundle.join("rootfs");
    let bin = rootfs.join("usr/bin/berth");
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    let data = std::fs::metadata(rootfs.join("data")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&data), 65532);
    // Static: it names no shared library.
    let ldd = run_unchecked(Command::new("ldd").arg(&bin));
    let said = format!("{}{}", ldd.stdout_str(), ldd.stderr);
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "{}",
        ldd.describe()
    );
    let version = run(Command::new(&bin).arg("--version"));
    assert!(
        version.stdout_str().starts_with("berth "),
        "{}",
        version.describe()
    );

    // The image's binary serves a push and a pull.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--root"])
        .arg(s.join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while raw_status(([127, 0, 0, 1], port).into(), "GET", "/v2/") != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the image's berth did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    push_and_pull(s, &format!("127.0.0.1:{port}"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_systemd_unit_verifies_and_its_environment_serves() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let root = repo_root();
    let unit = std::fs::read_to_string(root.join("deploy/systemd/berth.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/berth serve"),
        "{unit}"
    );
    // verify checks that ExecStart names an executable: this build's.
    let here = s.join("berth.service");
    std::fs::write(
        &here,
        unit.replace("/usr/local/bin/berth", env!("CARGO_BIN_EXE_berth")),
    )
    .unwrap();
    let out = run_unchecked(
        Command::new(require_tool("systemd-analyze"))
            .arg("verify")
            .arg(&here),
    );
    assert!(out.status.success(), "{}", out.describe());
    // Unknown keys are only warnings to systemd: any is a failure here.
    assert!(out.stderr.trim().is_empty(), "{}", out.describe());

    // The environment file's settings, as systemd passes them.
    let env = std::fs::read_to_string(root.join("deploy/systemd/berth.env")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("serve");
    let mut keys = Vec::new();
    for line in env.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap();
        keys.push(k.to_string());
        cmd.env(k, v);
    }
    assert!(keys.contains(&"BERTH_LISTEN".to_string()) && keys.contains(&"BERTH_ROOT".to_string()));
    // Where this test may listen and write instead of [::]:5000 and
    // /var/lib/berth; the rest as written.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cmd.env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("BERTH_ROOT", s.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while raw_status(([127, 0, 0, 1], port).into(), "GET", "/v2/") != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("berth exited with the unit's environment: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "berth did not answer");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Every document of a `kubectl kustomize` rendering.
fn render(dir: &Path) -> (String, Vec<serde_json::Value>) {
    let out = run(Command::new(require_tool("kubectl"))
        .arg("kustomize")
        .arg(dir));
    let text = out.stdout_str();
    let docs = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    (text, docs)
}

fn kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_kubernetes_manifests_render_and_validate() {
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let root = repo_root().join("deploy/kubernetes");
    let validate = require_tool("kubernetes-validate");
    for dir in [
        "base",
        "overlays/tls-auth",
        "overlays/s3-replicas",
        "node-config/containerd",
        "node-config/k3s",
    ] {
        let (text, docs) = render(&root.join(dir));
        let file = s.join(format!("{}.yaml", dir.replace('/', "-")));
        std::fs::write(&file, &text).unwrap();
        let out = run_unchecked(
            Command::new(&validate)
                .args(["--strict", "-k", "1.29.0"])
                .arg(&file),
        );
        assert!(out.status.success(), "{dir}\n{}", out.describe());
        assert!(
            !out.stdout_str().contains("ERROR"),
            "{dir}\n{}",
            out.describe()
        );
        assert!(!docs.is_empty(), "{dir}");
    }

    let (_, docs) = render(&root.join("base"));
    let sts = kind(&docs, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    assert_eq!(kind(&docs, "Service")["spec"]["ports"][0]["port"], 5000);
    let (_, node) = render(&root.join("node-config/k3s"));
    let ds = kind(&node, "DaemonSet");
    assert_eq!(
        ds["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"],
        "/etc/rancher/k3s"
    );

    // Replicas on S3: three, no volume of their own, each told its URL,
    // found through a headless Service that lists pods not yet ready.
    let (_, replicas) = render(&root.join("overlays/s3-replicas"));
    let sts = kind(&replicas, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert!(sts["spec"]["volumeClaimTemplates"].is_null());
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    for name in [
        "BERTH_REPLICA_URL",
        "BERTH_S3_SECRET_ACCESS_KEY",
        "BERTH_PEER_SECRET",
    ] {
        assert!(env.iter().any(|e| e["name"] == name), "no {name}");
    }
    let peers = replicas
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "berth-peers")
        .expect("the headless Service");
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(peers["metadata"]["namespace"], "berth");
    let replica_toml: toml::Value = toml::from_str(
        kind(&replicas, "ConfigMap")["data"]["berth.toml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(replica_toml["storage"]["backend"].as_str(), Some("s3"));
    assert_eq!(
        replica_toml["cluster"]["peers_dns"].as_str(),
        Some("berth-peers.berth.svc.cluster.local:5000")
    );
    // And berth serves with it, the bucket and the names made this test's
    // (the Secrets' values as the files and keys a pod would have).
    let mut config_value = replica_toml.clone();
    let g = garage();
    let secret_file = s.join("s3-secret");
    std::fs::write(&secret_file, &g.secret).unwrap();
    let peer_secret = s.join("peer-secret");
    std::fs::write(&peer_secret, "p".repeat(40)).unwrap();
    let port = free_port();
    let set = |v: &mut toml::Value, table: &[&str], key: &str, value: String| {
        let mut t = v.as_table_mut().unwrap();
        for name in table {
            t = t.get_mut(*name).unwrap().as_table_mut().unwrap();
        }
        t.insert(key.into(), toml::Value::String(value));
    };
    let s3 = ["storage", "s3"];
    set(&mut config_value, &s3, "bucket", g.bucket.clone());
    set(&mut config_value, &s3, "endpoint", g.endpoint());
    set(&mut config_value, &s3, "region", g.region.clone());
    set(&mut config_value, &s3, "prefix", fresh_s3_prefix());
    set(&mut config_value, &s3, "access_key_id", g.key_id.clone());
    set(
        &mut config_value,
        &s3,
        "secret_access_key_file",
        secret_file.display().to_string(),
    );
    set(
        &mut config_value,
        &["cluster"],
        "peers_dns",
        format!("localhost:{port}"),
    );
    set(
        &mut config_value,
        &["cluster"],
        "self_url",
        format!("http://127.0.0.1:{port}"),
    );
    set(
        &mut config_value,
        &["cluster"],
        "secret_file",
        peer_secret.display().to_string(),
    );
    let replica_config = s.join("replica.toml");
    std::fs::write(&replica_config, toml::to_string(&config_value).unwrap()).unwrap();
    let replica = Server::start_with(&[
        format!("--listen=127.0.0.1:{port}"),
        "--config".into(),
        replica_config.display().to_string(),
    ]);
    assert!(
        replica.log().contains("\"storage\":\"s3://"),
        "{}",
        replica.log()
    );
    push_and_pull(s, &replica.host());
    drop(replica);

    // The ConfigMap's berth.toml is one berth starts with (its listen
    // address and root replaced by this test's own, flags win over it).
    let toml = kind(&docs, "ConfigMap")["data"]["berth.toml"]
        .as_str()
        .unwrap();
    let config = s.join("berth.toml");
    std::fs::write(&config, toml).unwrap();
    let server = Server::start_with(&["--config".into(), config.display().to_string()]);
    push_and_pull(s, &server.host());
}
