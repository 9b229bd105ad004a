//! Black-box tests for `berth runtime-config`, `berth secret` and
//! `berth doctor`: they run the built binary and hand its files, unedited, to
//! the programs that consume them (containerd 1.6's CRI plugin, skopeo), or
//! parse them back field by field.
//!
//! Tools these tests use (containerd, ctr, skopeo, umoci) must be installed:
//! a missing tool fails the test, it is never skipped. Every wait is bounded
//! and every address is 127.0.0.1.

mod common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

const IMAGE: &str = "registry.invalid.test/team/app:v1";
const IMAGE_HOST: &str = "registry.invalid.test";

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed\n{}", show(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tool the test needs; its absence fails the test.
fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is required for this test but is not installed"))
}

// ---------------------------------------------------------------------------
// Files parsed back: no server needed.

#[test]
fn k3s_registries_yaml_parses_back_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("registries.yaml");
    run_ok(
        berth()
            .args([
                "runtime-config",
                "k3s",
                "--mirror",
                "http://127.0.0.1:5000",
                "--dest",
            ])
            .arg(&dest),
    );
    let doc: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(&dest).unwrap()).unwrap();
    for host in ["docker.io", "registry.k8s.io", "quay.io", "ghcr.io"] {
        let endpoints = doc["mirrors"][host]["endpoint"].as_sequence().unwrap();
        assert_eq!(endpoints.len(), 1, "{host}");
        assert_eq!(
            endpoints[0].as_str(),
            Some("http://127.0.0.1:5000"),
            "{host}"
        );
    }
    assert!(
        doc.get("configs").is_none(),
        "plain HTTP needs no TLS configs"
    );

    // TLS options go to configs.<mirror host>.tls; `*` is k3s's catch-all.
    let ca = dir.path().join("ca.pem");
    let dest = dir.path().join("tls.yaml");
    run_ok(
        berth()
            .args([
                "runtime-config",
                "rke2",
                "--mirror",
                "mirror.example:5443",
                "--registries",
                "*",
                "--skip-verify",
            ])
            .arg("--ca")
            .arg(&ca)
            .arg("--dest")
            .arg(&dest),
    );
    let doc: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(&dest).unwrap()).unwrap();
    assert_eq!(
        doc["mirrors"]["*"]["endpoint"][0].as_str(),
        Some("https://mirror.example:5443")
    );
    let tls = &doc["configs"]["mirror.example:5443"]["tls"];
    assert_eq!(tls["ca_file"].as_str(), ca.to_str());
    assert_eq!(tls["insecure_skip_verify"].as_bool(), Some(true));
}

#[test]
fn k3s_merge_keeps_user_entries_and_backs_up() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("registries.yaml");
    let original = "mirrors:\n  my.company.registry:\n    endpoint:\n      - http://my.company.registry\nconfigs:\n  my.company.registry:\n    auth:\n      username: aladin\n      password: abracadabra\n";
    fs::write(&dest, original).unwrap();
    let out = run_ok(
        berth()
            .args([
                "runtime-config",
                "k3d",
                "--mirror",
                "http://10.0.0.5:5000",
                "--registries",
                "docker.io",
                "--dest",
            ])
            .arg(&dest),
    );
    let doc: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(&dest).unwrap()).unwrap();
    assert_eq!(
        doc["mirrors"]["docker.io"]["endpoint"][0].as_str(),
        Some("http://10.0.0.5:5000")
    );
    assert_eq!(
        doc["mirrors"]["my.company.registry"]["endpoint"][0].as_str(),
        Some("http://my.company.registry")
    );
    assert_eq!(
        doc["configs"]["my.company.registry"]["auth"]["password"].as_str(),
        Some("abracadabra")
    );
    let backups = backups_of(&dest);
    assert_eq!(backups.len(), 1, "{}", stdout(&out));
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), original);
    assert!(stdout(&out).contains("previous version saved as"));
}

fn backups_of(path: &Path) -> Vec<PathBuf> {
    let prefix = format!(
        "{}.berth-backup-",
        path.file_name().unwrap().to_string_lossy()
    );
    let mut found: Vec<PathBuf> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[test]
fn docker_daemon_json_merge_keeps_unrelated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("daemon.json");
    let original = r#"{
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"},
  "ipv6": true,
  "fixed-cidr-v6": "fd00:2008::/64",
  "registry-mirrors": ["https://other-mirror.example"],
  "insecure-registries": ["172.17.0.2:5000"]
}"#;
    fs::write(&dest, original).unwrap();
    let out = run_ok(
        berth()
            .args([
                "runtime-config",
                "docker",
                "--mirror",
                "http://127.0.0.1:5000",
                "--dest",
            ])
            .arg(&dest),
    );
    let text = fs::read_to_string(&dest).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["log-driver"], "json-file");
    assert_eq!(
        doc["log-opts"],
        serde_json::json!({"max-size": "10m", "max-file": "3"})
    );
    assert_eq!(doc["ipv6"], true);
    assert_eq!(doc["fixed-cidr-v6"], "fd00:2008::/64");
    assert_eq!(
        doc["registry-mirrors"],
        serde_json::json!(["http://127.0.0.1:5000", "https://other-mirror.example"])
    );
    assert_eq!(
        doc["insecure-registries"],
        serde_json::json!(["172.17.0.2:5000", "127.0.0.1:5000"])
    );
    assert_eq!(doc.as_object().unwrap().len(), 6);
    // The user's key order survives.
    let order: Vec<usize> = [
        "log-driver",
        "log-opts",
        "ipv6",
        "fixed-cidr-v6",
        "registry-mirrors",
    ]
    .iter()
    .map(|k| text.find(&format!("\"{k}\"")).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    // Docker can only mirror Docker Hub: the other default registries are named.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only mirror Docker Hub") && stderr.contains("quay.io"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&backups_of(&dest)[0]).unwrap(), original);

    // Running it again changes nothing and makes no second backup.
    let again = run_ok(
        berth()
            .args([
                "runtime-config",
                "docker",
                "--mirror",
                "http://127.0.0.1:5000",
                "--dest",
            ])
            .arg(&dest),
    );
    assert!(stdout(&again).contains("unchanged"), "{}", show(&again));
    assert_eq!(backups_of(&dest).len(), 1);
}

/// With a private CA: the Secret, then a ConfigMap `NAME-ca` whose `ca.crt`
/// is the CA file (a CDI DataVolume's `certConfigMap`).
#[test]
fn secret_with_a_ca_config_map_for_cdi() {
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (dir.path().join("ca.key"), dir.path().join("ca.crt"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth test CA",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&crt),
    );
    let out = run_ok(
        berth()
            .args([
                "secret",
                "--registry",
                "mirror.example:5000",
                "--creds",
                "robot:pw",
                "--name",
                "vm-pull",
                "--namespace",
                "vms",
                "--ca-file",
            ])
            .arg(&crt),
    );
    let docs: Vec<serde_norway::Value> = stdout(&out)
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{}", stdout(&out));
    assert_eq!(docs[0]["kind"].as_str(), Some("Secret"));
    assert_eq!(docs[1]["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(docs[1]["metadata"]["name"].as_str(), Some("vm-pull-ca"));
    assert_eq!(docs[1]["metadata"]["namespace"].as_str(), Some("vms"));
    assert_eq!(
        docs[1]["data"]["ca.crt"].as_str(),
        Some(fs::read_to_string(&crt).unwrap().as_str())
    );
    let bad = dir.path().join("not-a-cert");
    fs::write(&bad, "hello").unwrap();
    let out = berth()
        .args([
            "secret",
            "--registry",
            "r.example",
            "--creds",
            "u:p",
            "--ca-file",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn secret_decodes_to_the_right_auths() {
    let out = run_ok(berth().args([
        "secret",
        "--registry",
        "mirror.example:5000",
        "--creds",
        "robot:s3cr:et",
        "--name",
        "berth-pull",
        "--namespace",
        "kubevirt",
    ]));
    let secret: serde_norway::Value = serde_norway::from_str(&stdout(&out)).unwrap();
    assert_eq!(secret["apiVersion"].as_str(), Some("v1"));
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert_eq!(
        secret["type"].as_str(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(secret["metadata"]["name"].as_str(), Some("berth-pull"));
    assert_eq!(secret["metadata"]["namespace"].as_str(), Some("kubevirt"));
    let raw = BASE64
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let auths = config["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 1);
    let entry = &auths["mirror.example:5000"];
    assert_eq!(entry["username"], "robot");
    assert_eq!(entry["password"], "s3cr:et");
    assert_eq!(
        BASE64.decode(entry["auth"].as_str().unwrap()).unwrap(),
        b"robot:s3cr:et"
    );
    // CDI's registry importer reads these two keys from a secretRef.
    assert_eq!(
        BASE64
            .decode(secret["data"]["accessKeyId"].as_str().unwrap())
            .unwrap(),
        b"robot"
    );
    assert_eq!(
        BASE64
            .decode(secret["data"]["secretKey"].as_str().unwrap())
            .unwrap(),
        b"s3cr:et"
    );

    // Docker Hub uses the key every consumer looks up; credentials can come from stdin.
    let mut child = berth()
        .args(["secret", "--registry", "docker.io", "--creds", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hubuser:hubpass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let secret: serde_norway::Value = serde_norway::from_str(&stdout(&out)).unwrap();
    let raw = BASE64
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        config["auths"]["https://index.docker.io/v1/"]["password"],
        "hubpass"
    );

    let bad = berth()
        .args(["secret", "--registry", "quay.io", "--creds", "nocolon"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn registries_conf_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("registries.conf.d/90-berth-mirror.conf");
    run_ok(
        berth()
            .args([
                "runtime-config",
                "podman",
                "--mirror",
                "http://127.0.0.1:5000",
                "--registries",
                "docker.io,quay.io",
                "--dest",
            ])
            .arg(&dest),
    );
    let conf: toml::Table = toml::from_str(&fs::read_to_string(&dest).unwrap()).unwrap();
    let registries = conf["registry"].as_array().unwrap();
    assert_eq!(registries.len(), 2);
    for (entry, host) in registries.iter().zip(["docker.io", "quay.io"]) {
        assert_eq!(entry["prefix"].as_str(), Some(host));
        assert_eq!(entry["location"].as_str(), Some(host));
        let mirrors = entry["mirror"].as_array().unwrap();
        assert_eq!(mirrors.len(), 1);
        assert_eq!(
            mirrors[0]["location"].as_str(),
            Some(format!("127.0.0.1:5000/{host}").as_str())
        );
        assert_eq!(mirrors[0]["insecure"].as_bool(), Some(true));
    }
    // registries.conf has no catch-all entry: `*` is refused with a reason.
    let out = berth()
        .args([
            "runtime-config",
            "crio",
            "--mirror",
            "http://127.0.0.1:5000",
            "--registries",
            "*",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("catch-all"),
        "{}",
        show(&out)
    );
}

#[test]
fn containerd_hosts_toml_parses_back_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("certs.d");
    let out = run_ok(
        berth()
            .args([
                "runtime-config",
                "containerd",
                "--mirror",
                "http://127.0.0.1:5000",
                "--registries",
                "docker.io,*",
                "--dry-run",
                "--dest",
            ])
            .arg(&dest),
    );
    assert!(!dest.exists(), "--dry-run wrote files");
    let printed = stdout(&out);
    assert!(
        printed.contains("[host.\"http://127.0.0.1:5000\"]"),
        "{printed}"
    );

    let out = run_ok(
        berth()
            .args([
                "runtime-config",
                "containerd",
                "--mirror",
                "http://127.0.0.1:5000",
                "--registries",
                "docker.io,*",
                "--dest",
            ])
            .arg(&dest),
    );
    let hub: toml::Table =
        toml::from_str(&fs::read_to_string(dest.join("docker.io/hosts.toml")).unwrap()).unwrap();
    assert_eq!(hub["server"].as_str(), Some("https://registry-1.docker.io"));
    let host = hub["host"]["http://127.0.0.1:5000"].as_table().unwrap();
    assert_eq!(
        host["capabilities"],
        toml::Value::Array(vec!["pull".into(), "resolve".into()])
    );
    let default: toml::Table =
        toml::from_str(&fs::read_to_string(dest.join("_default/hosts.toml")).unwrap()).unwrap();
    assert!(!default.contains_key("server"));
    assert!(default["host"]
        .as_table()
        .unwrap()
        .contains_key("http://127.0.0.1:5000"));

    // The config.toml stanzas for containerd 1.x and 2.x, and the warning.
    let printed = stdout(&out);
    assert!(
        printed.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]"),
        "{printed}"
    );
    assert!(
        printed.contains("[plugins.\"io.containerd.cri.v1.images\".registry]"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("config_path = \"{}\"", dest.display())),
        "{printed}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("`mirrors` and `config_path`"));
}

#[test]
fn doctor_explains_what_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/containerd");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("config.toml"), "version = 2\n").unwrap();
    let out = berth()
        .args([
            "doctor",
            "--registries",
            "docker.io",
            "--runtime",
            "containerd",
            "--root",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL") && text.contains("config_path"),
        "{text}"
    );
    assert!(text.contains("fix: "), "{text}");

    // The same report, machine-readable.
    let out = berth()
        .args([
            "doctor",
            "--registries",
            "docker.io",
            "--runtime",
            "containerd",
            "--output",
            "json",
            "--root",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let containerd = &report["runtimes"][0];
    assert_eq!(containerd["runtime"], "containerd");
    let findings = containerd["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["level"] == "fail"
            && f["message"].as_str().unwrap().contains("config_path")
            && f["fix"].is_string()),
        "{report}"
    );
}

// ---------------------------------------------------------------------------
// Real consumers pulling through a running berth.

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({})\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
        }
    }
}

fn spawn_logged(mut cmd: Command, name: &'static str, log: PathBuf) -> Proc {
    let file = fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc { child, name, log }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of `GET path` on 127.0.0.1:port, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `berth serve --offline` on a free loopback port, with the test image
/// pushed under its mirror name.
struct Berth {
    proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Berth {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn start_berth_with_image() -> Berth {
    start_berth(&[], IMAGE)
}

/// `berth serve --offline EXTRA...` with the test image pushed as `image`.
fn start_berth(extra: &[&str], image: &str) -> Berth {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = berth();
    // Offline, as at an air-gapped site: what the runtimes pull can only come
    // from what was pushed into berth, and berth never looks the (unresolvable)
    // upstream up.
    cmd.args([
        "serve",
        "--offline",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--root",
    ])
    .arg(dir.path().join("data"))
    .args(extra);
    let proc = spawn_logged(cmd, "berth serve", dir.path().join("berth.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(port, "/v2/") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "berth serve did not answer /v2/\n{}",
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let berth = Berth {
        proc,
        port,
        _dir: dir,
    };
    push_test_image(&berth, berth._dir.path(), image);
    berth
}

/// Build a one-layer image with umoci and push it with skopeo into berth
/// under its mirror name (`registry.invalid.test/team/app:v1` is repository
/// `registry.invalid.test/team/app`) — how an air-gapped mirror is preloaded.
fn push_test_image(berth: &Berth, dir: &Path, image: &str) {
    let umoci = require_tool("umoci");
    let skopeo = require_tool("skopeo");
    let layout = dir.join("layout");
    let layout_s = layout.to_str().unwrap();
    run_ok(Command::new(&umoci).args(["init", "--layout", layout_s]));
    run_ok(Command::new(&umoci).args(["new", "--image", &format!("{layout_s}:v1")]));
    let payload = dir.join("hello.txt");
    fs::write(&payload, "hello from berth\n").unwrap();
    run_ok(
        Command::new(&umoci)
            .args(["insert", "--image", &format!("{layout_s}:v1")])
            .arg(&payload)
            .arg("/hello.txt"),
    );
    run_ok(Command::new(&skopeo).args([
        "copy",
        "--insecure-policy",
        "--dest-tls-verify=false",
        &format!("oci:{layout_s}:v1"),
        &format!("docker://127.0.0.1:{}/{image}", berth.port),
    ]));
}

/// containerd 1.6's CRI plugin — the path kubelet uses — pulls an image
/// for a registry name that does not resolve, reading the `hosts.toml` that
/// `berth runtime-config containerd` wrote through the daemon's
/// `config_path`. The pull can only succeed through berth: containerd sends
/// `GET /v2/team/app/manifests/v1?ns=registry.invalid.test` to the mirror.
/// `ctr` (which has no CRI client) is only used to list the result.
#[test]
fn containerd_cri_pulls_through_berth_via_config_path() {
    let ctr = require_tool("ctr");
    let berth_server = start_berth_with_image();
    let dir = tempfile::Builder::new()
        .prefix("berth-ctrd")
        .tempdir()
        .unwrap();
    let certs = dir.path().join("certs.d");
    run_ok(
        berth()
            .args([
                "runtime-config",
                "containerd",
                "--mirror",
                &berth_server.url(),
                "--registries",
                IMAGE_HOST,
                "--dest",
            ])
            .arg(&certs),
    );
    assert!(certs.join(IMAGE_HOST).join("hosts.toml").is_file());

    let containerd = common::Containerd::start_with_cri(Some(&certs));
    // The CRI service answers "server is not initialized yet" for a moment
    // after the socket appears; retry only that, for at most 30 seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        match common::cri_pull_image(&containerd.socket, IMAGE) {
            Err(e) if e.contains("not initialized") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => break other,
        }
    };
    let image_ref = result.unwrap_or_else(|e| {
        panic!(
            "CRI PullImage failed: {e}\n--- containerd log\n{}\n--- berth log\n{}",
            containerd.log(),
            berth_server.proc.log()
        )
    });
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");

    let listed = run_ok(
        Command::new(&ctr)
            .arg("--address")
            .arg(&containerd.socket)
            .args(["--namespace", "k8s.io", "images", "ls", "-q"]),
    );
    assert!(
        stdout(&listed).lines().any(|l| l == IMAGE),
        "{}",
        show(&listed)
    );

    // The doctor, reading the same files as the node would, finds the route
    // and resolves the tag through berth.
    let root = tempfile::tempdir().unwrap();
    let node_certs = root.path().join("etc/containerd/certs.d");
    run_ok(
        berth()
            .args([
                "runtime-config",
                "containerd",
                "--mirror",
                &berth_server.url(),
                "--registries",
                IMAGE_HOST,
                "--dest",
            ])
            .arg(&node_certs),
    );
    fs::write(
        root.path().join("etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    let out = run_ok(
        berth()
            .args([
                "doctor",
                "--mirror",
                &berth_server.url(),
                "--registries",
                IMAGE_HOST,
                "--image",
                IMAGE,
                "--root",
            ])
            .arg(root.path()),
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{IMAGE_HOST}: routed to {}", berth_server.url())),
        "{text}"
    );
    assert!(text.contains("resolves through"), "{text}");
}

/// skopeo (containers/image, as CRI-O and Podman use it) pulls through berth
/// with `--registries-conf` set to the file `berth runtime-config crio`
/// wrote: the mirror is `127.0.0.1:PORT/registry.invalid.test`, berth's
/// path-prefix form, and the registry itself does not resolve.
#[test]
fn skopeo_pulls_through_berth_with_generated_registries_conf() {
    let skopeo = require_tool("skopeo");
    let berth_server = start_berth_with_image();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("registries.conf");
    run_ok(
        berth()
            .args([
                "runtime-config",
                "crio",
                "--mirror",
                &berth_server.url(),
                "--registries",
                IMAGE_HOST,
                "--dest",
            ])
            .arg(&conf),
    );
    let out_layout = dir.path().join("pulled");
    let out = Command::new(&skopeo)
        .arg("--registries-conf")
        .arg(&conf)
        .args(["copy", "--insecure-policy", &format!("docker://{IMAGE}")])
        .arg(format!("oci:{}:v1", out_layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo pull through berth failed\n{}\n--- berth log\n{}",
        show(&out),
        berth_server.proc.log()
    );
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );

    // The doctor reads the same drop-in on a node and resolves the tag the
    // way CRI-O/Podman ask for it (the registry as the name's first part).
    let root = tempfile::tempdir().unwrap();
    let drop_in = root
        .path()
        .join("etc/containers/registries.conf.d/90-berth-mirror.conf");
    fs::create_dir_all(drop_in.parent().unwrap()).unwrap();
    fs::copy(&conf, &drop_in).unwrap();
    let out = run_ok(
        berth()
            .args([
                "doctor",
                "--runtime",
                "podman",
                "--registries",
                IMAGE_HOST,
                "--image",
                IMAGE,
                "--root",
            ])
            .arg(root.path()),
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{IMAGE_HOST}: routed to {}", berth_server.url())),
        "{text}"
    );
    assert!(text.contains("resolves through"), "{text}");
}

/// Docker asks a `registry-mirrors` entry for Hub images by their bare name
/// (`/v2/library/NAME/...`, no `?ns=`), which berth maps to Docker Hub when
/// run with `--default-upstream docker.io`, as `runtime-config docker` tells
/// the user. No Docker daemon here: the doctor reads the generated
/// daemon.json on a fake node root and resolves the tag the way Docker would.
#[test]
fn docker_registry_mirrors_resolve_hub_names_through_berth() {
    let berth_server = start_berth(
        &["--default-upstream", "docker.io"],
        "docker.io/library/berth-hub-test:v1",
    );
    let root = tempfile::tempdir().unwrap();
    let daemon_json = root.path().join("etc/docker/daemon.json");
    let out = run_ok(
        berth()
            .args([
                "runtime-config",
                "docker",
                "--mirror",
                &berth_server.url(),
                "--registries",
                "docker.io",
                "--dest",
            ])
            .arg(&daemon_json),
    );
    assert!(
        stdout(&out).contains("--default-upstream docker.io"),
        "{}",
        show(&out)
    );
    let out = run_ok(
        berth()
            .args([
                "doctor",
                "--runtime",
                "docker",
                "--registries",
                "docker.io",
                "--image",
                "berth-hub-test:v1",
                "--root",
            ])
            .arg(root.path()),
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("docker.io: routed to {}", berth_server.url())),
        "{text}"
    );
    assert!(
        text.contains("docker.io/library/berth-hub-test:v1 resolves through"),
        "{text}"
    );
}
