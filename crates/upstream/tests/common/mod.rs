//! Test fixtures: a real Distribution registry (Debian's `docker-registry`)
//! on a loopback port with a temporary config and storage, OCI layouts
//! written by hand and pushed into it with `skopeo`, TLS material from
//! `openssl`, htpasswd files from `htpasswd`.
//!
//! A missing tool fails the test with a message saying what to install;
//! nothing skips. Every wait is bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_reference::Digest;
use serde_json::json;
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Fail (never skip) when a tool is not installed.
pub fn require_tool(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "required tool `{tool}` is not installed. Install Debian's packages: \
             apt-get install docker-registry skopeo apache2-utils openssl. These tests never skip."
        )
    })
}

/// Run a command to completion within a time limit; panic with its output on failure.
pub fn run(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "{desc} failed ({status}):\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// A loopback port that refuses connections for as long as this value lives:
/// the socket is bound but never listens, so the kernel answers a SYN with a
/// reset and no other test can take the port meanwhile (a port that was free
/// a moment ago may already be another test's registry).
pub struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        ClosedPort(s)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().expect("local addr").port()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Wait until something accepts connections on `addr` and `child` is still
/// running shortly after (a registry that lost its port to another process
/// exits at once). `Err` with the log when it exited.
fn wait_listening(addr: SocketAddr, child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let exited = |status: std::process::ExitStatus| {
        format!(
            "docker-registry exited ({status}) before serving on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    };
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(exited(status));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            std::thread::sleep(Duration::from_millis(150));
            return match child.try_wait() {
                Ok(Some(status)) => Err(exited(status)),
                _ => Ok(()),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "nothing listening on {addr} after {READY_TIMEOUT:?}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// How the registry authenticates.
pub enum RegistryAuth {
    None,
    /// `auth: htpasswd` with one bcrypt user.
    Htpasswd {
        user: String,
        password: String,
    },
    /// `auth: token` trusting `cert` (PEM) for tokens issued by `issuer` for `service`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

/// TLS material for the registry's listener.
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running Distribution registry; killed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: TempDir,
    child: Child,
    pub tls: bool,
}

impl Registry {
    /// Start a registry; a lost race for the port is retried (3 tries).
    pub fn start(auth: RegistryAuth, tls: Option<ServerTls>) -> Registry {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&auth, tls.as_ref()) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("docker-registry did not start in 3 tries; last:\n{last}");
    }

    fn try_start(auth: &RegistryAuth, tls: Option<&ServerTls>) -> Result<Registry, String> {
        let bin = require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-upstream-test-secret\n",
            storage.display()
        );
        if let Some(t) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ));
        }
        match auth {
            RegistryAuth::None => {}
            RegistryAuth::Htpasswd { user, password } => {
                require_tool("htpasswd");
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, line.trim()).expect("write htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test-realm\n    path: {}\n",
                    path.display()
                ));
            }
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                cert,
            } => {
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                    cert.display()
                ));
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = dir.path().join("registry.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log clone"))
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        if let Err(e) = wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), &mut child, &log) {
            let _ = child.wait();
            return Err(e);
        }
        Ok(Registry {
            port,
            dir,
            child,
            tls: tls.is_some(),
        })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Stop the registry now (as an upstream going down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One blob in a layout.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// An OCI image layout on disk, written by hand, and what it holds.
pub struct Layout {
    pub dir: TempDir,
    /// Single-platform image: its manifest, config, layers.
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// A two-platform index (amd64 = `manifest`, arm64 = a second image).
    pub index: Blob,
    pub arm_manifest: Blob,
}

fn put_blob(root: &Path, bytes: Vec<u8>) -> Blob {
    let digest = Digest::sha256_of(&bytes);
    let path = root.join("blobs/sha256").join(digest.hex());
    std::fs::write(&path, &bytes).expect("write blob");
    Blob { digest, bytes }
}

/// A gzip'd tar holding `files`, made by the system's tar and gzip.
fn tar_gz(files: &BTreeMap<&str, Vec<u8>>) -> Vec<u8> {
    require_tool("tar");
    require_tool("gzip");
    let src = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        std::fs::write(src.path().join(name), bytes).expect("write layer file");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let tar = out.path().join("layer.tar");
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(src.path())
        .arg("."));
    run(Command::new("gzip").args(["-n", "-1"]).arg(&tar));
    std::fs::read(out.path().join("layer.tar.gz")).expect("read layer")
}

fn descriptor(media_type: &str, b: &Blob) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": b.digest.to_string(), "size": b.bytes.len()})
}

fn image(root: &Path, arch: &str, layers: Vec<Vec<u8>>) -> (Blob, Blob, Vec<Blob>) {
    let layers: Vec<Blob> = layers.into_iter().map(|l| put_blob(root, l)).collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| {
            // diff_ids are of the uncompressed tar; gunzip to compute them.
            let mut child = Command::new("gzip")
                .args(["-dc"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("gzip -dc");
            let mut stdin = child.stdin.take().expect("stdin");
            let bytes = l.bytes.clone();
            let writer = std::thread::spawn(move || stdin.write_all(&bytes));
            let out = child.wait_with_output().expect("gzip output");
            writer.join().expect("writer").expect("write to gzip");
            Digest::sha256_of(&out.stdout).to_string()
        })
        .collect();
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = put_blob(root, serde_json::to_vec(&config).expect("json"));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
    });
    let manifest = put_blob(root, serde_json::to_vec_pretty(&manifest).expect("json"));
    (manifest, config, layers)
}

impl Layout {
    /// Build a layout with tags `single` (one image: a small layer and a
    /// `big_layer_len`-byte incompressible one) and `multi` (an index of two).
    pub fn build(big_layer_len: usize, seed: u64) -> Layout {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("blobs/sha256")).expect("blobs dir");
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        let small = tar_gz(&BTreeMap::from([(
            "hello",
            format!("hello from seed {seed}\n").into_bytes(),
        )]));
        let big = tar_gz(&BTreeMap::from([(
            "data.bin",
            pseudo_random(big_layer_len, seed),
        )]));
        let (manifest, config, layers) = image(root, "amd64", vec![small, big]);
        let arm_layer = tar_gz(&BTreeMap::from([(
            "arm",
            format!("arm {seed}\n").into_bytes(),
        )]));
        let (arm_manifest, _, _) = image(root, "arm64", vec![arm_layer]);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": manifest.digest.to_string(), "size": manifest.bytes.len(),
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": arm_manifest.digest.to_string(), "size": arm_manifest.bytes.len(),
                 "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        });
        let index = put_blob(root, serde_json::to_vec_pretty(&index).expect("json"));
        let top = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": manifest.digest.to_string(), "size": manifest.bytes.len(),
                 "annotations": {"org.opencontainers.image.ref.name": "single"}},
                {"mediaType": OCI_INDEX, "digest": index.digest.to_string(), "size": index.bytes.len(),
                 "annotations": {"org.opencontainers.image.ref.name": "multi"}},
            ],
        });
        std::fs::write(
            root.join("index.json"),
            serde_json::to_vec(&top).expect("json"),
        )
        .expect("index.json");
        Layout {
            dir,
            manifest,
            config,
            layers,
            index,
            arm_manifest,
        }
    }

    /// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://HOST/REPO:DEST_TAG`.
    pub fn push(
        &self,
        tag: &str,
        registry: &Registry,
        repo: &str,
        dest_tag: &str,
        creds: Option<&str>,
    ) {
        require_tool("skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(c) = creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        cmd.arg(format!("oci:{}:{tag}", self.dir.path().display()));
        cmd.arg(format!("docker://{}/{repo}:{dest_tag}", registry.host()));
        run(&mut cmd);
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it.
pub struct TestPki {
    pub dir: TempDir,
    pub ca_cert: PathBuf,
    pub server: ServerTls,
}

pub fn make_pki() -> TestPki {
    require_tool("openssl");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n);
    run(Command::new("openssl")
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
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.crt")));
    TestPki {
        ca_cert: p("ca.crt"),
        server: ServerTls {
            cert: p("server.crt"),
            key: p("server.key"),
        },
        dir,
    }
}
