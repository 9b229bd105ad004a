//! A real S3-compatible store for berth's tests and benchmarks: Garage, one
//! node or a cluster, on loopback ports, with a bucket and a key made by
//! Garage's own CLI. Nothing here imitates S3; it only starts and stops
//! Garage.
//!
//! The binary comes from `BERTH_GARAGE`, or from the directory
//! `scripts/test` installs it into; a missing Garage fails the test (the
//! suite never passes by skipping).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/test` installs Garage when `BERTH_GARAGE` is unset.
pub const DEFAULT_GARAGE: &str = "/var/cache/berth-tools/garage-2.5.0/bin/garage";

pub fn garage_binary() -> PathBuf {
    let path = std::env::var_os("BERTH_GARAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GARAGE));
    assert!(
        path.is_file(),
        "Garage is not installed at {} (scripts/test installs it; or set BERTH_GARAGE)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn hex(bytes: usize) -> String {
    let mut s = String::new();
    while s.len() < bytes * 2 {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(bytes * 2);
    s
}

/// One Garage process.
struct Node {
    config: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    id: String,
    process: Option<Child>,
}

/// A running Garage with one bucket and a key allowed to read and write it.
pub struct Garage {
    binary: PathBuf,
    nodes: Vec<Node>,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    pub region: String,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// One node, replication factor 1.
    pub fn start() -> Garage {
        Garage::cluster(1)
    }

    /// `n` nodes in `n` zones with replication factor `n` (3 for the fault
    /// tests: any one node may stop and every acknowledged write survives).
    pub fn cluster(n: usize) -> Garage {
        let binary = garage_binary();
        let dir = tempfile::tempdir().expect("garage dir");
        let secret = hex(32);
        let mut nodes = Vec::new();
        for i in 0..n {
            let base = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&base).expect("node dir");
            let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
            let config = base.join("garage.toml");
            let b = base.display();
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{b}/meta\"\ndata_dir = \"{b}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = {n}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_secret = \"{secret}\"\n\n\
                     [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n"
                ),
            )
            .expect("write garage.toml");
            nodes.push(Node {
                config,
                s3_port,
                rpc_port,
                id: String::new(),
                process: None,
            });
        }
        let mut g = Garage {
            binary,
            nodes,
            bucket: "berth-test".into(),
            key_id: format!("GK{}", hex(12)),
            secret: hex(32),
            region: "garage".into(),
            _dir: dir,
        };
        for i in 0..n {
            g.start_node(i);
            let out = g.cli(i, &["node", "id", "-q"]);
            let id = out.trim().split('@').next().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "garage node id: {out:?}");
            g.nodes[i].id = id;
        }
        for i in 1..n {
            let peer = format!("{}@127.0.0.1:{}", g.nodes[i].id, g.nodes[i].rpc_port);
            g.cli(0, &["node", "connect", &peer]);
        }
        for i in 0..n {
            let id = g.nodes[i].id.clone();
            g.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("dc{}", i + 1),
                    "-c",
                    "1G",
                    &id,
                ],
            );
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        let (key_id, secret) = (g.key_id.clone(), g.secret.clone());
        g.cli(
            0,
            &["key", "import", "--yes", "-n", "berth", &key_id, &secret],
        );
        let bucket = g.bucket.clone();
        g.create_bucket(&bucket);
        g
    }

    /// Another bucket the key may read and write.
    pub fn create_bucket(&self, name: &str) {
        self.cli(0, &["bucket", "create", name]);
        self.cli(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", name, "--key", "berth",
            ],
        );
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The S3 endpoint of the first node.
    pub fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Run the Garage CLI against node `i`; panics with its output on failure.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.nodes[i].config)
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            // Right after start or a layout change the cluster may not have
            // settled; the CLI's own error says so. Try again for a while.
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if Instant::now() > deadline {
                panic!("garage {args:?} failed: {err}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Start node `i` (again), and wait until its RPC answers.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].process.is_none(), "node {i} is running");
        let log =
            std::fs::File::create(self.nodes[i].config.with_extension("log")).expect("garage log");
        // A watchdog shell: Garage ends when this test process does, even
        // if the process dies without running destructors.
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                "\"$1\" -c \"$2\" server & k=$!; trap 'kill $k 2>/dev/null; wait $k; exit 0' TERM INT; \
                 while kill -0 \"$3\" 2>/dev/null && kill -0 $k 2>/dev/null; do sleep 0.5; done; \
                 kill $k 2>/dev/null; wait $k",
            )
            .arg("garage-watchdog")
            .arg(&self.binary)
            .arg(&self.nodes[i].config)
            .arg(std::process::id().to_string())
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.nodes[i].process = Some(child);
        wait_listening(self.nodes[i].s3_port, &self.nodes[i].config);
    }

    /// Stop node `i` the way a crash or a shutdown would (SIGTERM to Garage).
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_listening(port: u16, config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    panic!("garage did not listen on {port}: {log}");
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}
