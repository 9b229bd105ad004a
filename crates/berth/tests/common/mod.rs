//! Helpers shared by the black-box tests: a `berth serve` process on a free
//! loopback port with a temporary root, external commands (curl, skopeo,
//! umoci) run with bounded time and their output shown on failure, and small
//! images built with umoci.
//!
//! Every wait is bounded in count and time; nothing here skips a test: a
//! missing tool is a failure.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

mod images;
#[allow(unused_imports)]
pub use images::*;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// How long an external command may run before it is killed and the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `berth serve` may take to answer `/v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Digests

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    berth_reference::Digest::sha256_of(bytes).to_string()
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
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

/// A process-wide counter, for unique names.
pub fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
}

// ---------------------------------------------------------------------------
// Tools

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Fail (never skip) when an external tool the test drives is not installed.
pub fn require_tool(tool: &str) -> PathBuf {
    find_in_path(tool).unwrap_or_else(|| {
        panic!(
            "required tool `{tool}` is not installed (not found in PATH). \
             Run scripts/test, which installs it, or `apt-get install {tool}`. \
             These tests never skip."
        )
    })
}

pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The output of a finished command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub command: String,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            truncate(&self.stdout_str(), 8000),
            truncate(&self.stderr, 8000)
        )
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[... {cut} bytes cut ...]\n{}", &s[cut..])
}

fn describe_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.len() > 200 {
            let _ = write!(s, " '{}…'", &arg[..200]);
        } else {
            let _ = write!(s, " '{arg}'");
        }
    }
    s
}

/// Run a command to completion (killed after a bounded time), capturing its
/// output through files so that large outputs cannot deadlock a pipe.
pub fn run_unchecked(cmd: &mut Command) -> Output {
    run_unchecked_within(cmd, COMMAND_TIMEOUT)
}

/// [`run`] with a limit of its own (a release build from scratch).
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let out = run_unchecked_within(cmd, limit);
    assert!(out.status.success(), "command failed\n{}", out.describe());
    out
}

/// [`run_unchecked`] with a limit of its own.
pub fn run_unchecked_within(cmd: &mut Command, limit: Duration) -> Output {
    let command = describe_command(cmd);
    let dir = tempfile::tempdir().expect("temp dir for command output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{command} did not finish within {limit:?}\n--- stderr ---\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned(),
        command,
    }
}

/// Run a command and fail the test, showing its stderr, unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = run_unchecked(cmd);
    assert!(out.status.success(), "command failed\n{}", out.describe());
    out
}

// ---------------------------------------------------------------------------
// The server

/// A `berth serve` process. Killed (SIGKILL) when dropped; its log is printed
/// when the test is failing.
pub struct Server {
    child: Option<Child>,
    /// The loopback address it listens on (127.0.0.1 or ::1, unless the
    /// test chose another with `--listen=`).
    ip: IpAddr,
    pub port: u16,
    pub root: PathBuf,
    log: PathBuf,
    /// Set for a server started with [`Server::start_tls`]: how clients reach it.
    pub tls: Option<TlsClient>,
    _dir: Option<TempDir>,
    _logdir: TempDir,
    /// Certificates, htpasswd and config of [`Server::start_tls_user`].
    _extra: Option<TempDir>,
}

/// How clients reach a server started with TLS flags (`--tls-cert/--tls-key`
/// or `--tls-auto`, passed by the caller): [`Server::url`] is then
/// `https://...`, and every [`curl`] request to that URL trusts `ca` and
/// sends `creds` as Basic credentials (unless the request sets its own
/// `Authorization` header).
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// The CA curl trusts. With `--tls-auto` the server writes it at start:
    /// `ROOT/tls/ca.crt`.
    pub ca: PathBuf,
    /// `(user, password)` sent with every curl request, if any.
    pub creds: Option<(String, String)>,
    /// Listen on `[::1]` instead of `127.0.0.1`. dockerd treats every
    /// registry in 127.0.0.0/8 as insecure (it skips certificate checks and
    /// never reads `certs.d`), so a Docker test of certificate trust must
    /// reach berth on the IPv6 loopback.
    pub ipv6: bool,
    /// curl speaks HTTP/1.1 to it (`--http1.1`) instead of HTTP/2 by ALPN.
    pub http1: bool,
}

/// The TLS settings of running servers, by base URL, for [`curl`].
static TLS_CLIENTS: Mutex<Vec<(String, TlsClient)>> = Mutex::new(Vec::new());

/// The settings of the running TLS server whose base URL `url` starts with.
fn tls_client_for(url: &str) -> Option<TlsClient> {
    let clients = TLS_CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    clients
        .iter()
        .find(|(base, _)| {
            url.strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(|(_, c)| c.clone())
}

fn loopback(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

fn free_port_on(ip: IpAddr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub fn free_port() -> u16 {
    free_port_on(loopback(false))
}

/// How `berth serve` is started.
#[derive(Clone)]
enum Launch {
    Plain,
    /// With at most this many open files (soft and hard limit).
    Nofile(u64),
    /// In a mount namespace of its own whose `/etc/hosts` is this file (for
    /// names only the test resolves, such as a headless Service's).
    Hosts(PathBuf),
}

fn spawn_berth(
    addr: SocketAddr,
    root: &Path,
    log: &Path,
    extra: &[String],
    launch: &Launch,
    rust_log: &str,
) -> Child {
    let logfile = std::fs::File::create(log).expect("create server log");
    let mut cmd = match launch {
        // Soft and hard: berth raises its soft limit to the hard one.
        Launch::Nofile(n) => {
            let mut c = Command::new(require_tool("prlimit"));
            c.arg(format!("--nofile={n}:{n}"))
                .arg(env!("CARGO_BIN_EXE_berth"));
            c
        }
        Launch::Hosts(hosts) => {
            require_tool("unshare");
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$HOSTS\" /etc/hosts && exec \"$BERTH\" \"$@\"")
                .arg("berth")
                .env("HOSTS", hosts)
                .env("BERTH", env!("CARGO_BIN_EXE_berth"));
            c
        }
        Launch::Plain => Command::new(env!("CARGO_BIN_EXE_berth")),
    };
    cmd.arg("serve");
    // A caller that must know the address before the start (a replica
    // whose own URL is in its configuration) passes `--listen=` itself.
    if !extra.iter().any(|a| a.starts_with("--listen=")) {
        cmd.arg("--listen").arg(addr.to_string());
    }
    cmd.arg("--root").arg(root).args(extra);
    // The environment must not change what the test asked for.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().expect("clone log handle"))
        .stderr(logfile);
    cmd.spawn().expect("spawn berth serve")
}

/// Wait (bounded) until the server answers `/v2/` (over TLS when `tls`,
/// without checking the certificate: readiness only); the log on failure.
fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    tls: bool,
    log: &Path,
    rust_log: &str,
) -> Result<(), String> {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    // berth logs "berth is serving" at info level, the tests' default.
    let logs_bind = !(rust_log.contains("warn") || rust_log.contains("error") || rust_log == "off");
    let deadline = Instant::now() + READY_TIMEOUT;
    for _ in 0..10_000 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(exited with {status})\n{}", read_log()));
        }
        if Instant::now() > deadline {
            break;
        }
        let status = if tls {
            let out = run_unchecked(
                Command::new(require_tool("curl"))
                    .args([
                        "-sk",
                        "--noproxy",
                        "*",
                        "--max-time",
                        "2",
                        "-o",
                        "/dev/null",
                    ])
                    .args(["-w", "%{http_code}"])
                    .arg(format!("https://{addr}/v2/")),
            );
            out.stdout_str().parse().ok()
        } else {
            raw_status(addr, "GET", "/v2/")
        };
        // An answer on the port proves nothing by itself: a server of a
        // test running in parallel may hold it (ours then fails to bind and
        // exits a moment later). Ours says it bound the port in its log.
        let ours = !logs_bind || read_log().contains("berth is serving");
        if let (Some(200 | 401), true) = (status, ours) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(if tls { 100 } else { 50 }));
    }
    Err(format!(
        "(not ready after {READY_TIMEOUT:?})\n{}",
        read_log()
    ))
}

/// One Garage (a real S3 store, one node) for the whole test binary; each
/// server on it gets a prefix of its own unless it shares one on purpose.
pub fn garage() -> &'static berth_s3_fixture::Garage {
    static GARAGE: std::sync::OnceLock<berth_s3_fixture::Garage> = std::sync::OnceLock::new();
    GARAGE.get_or_init(berth_s3_fixture::Garage::start)
}

/// A prefix no other server in this run uses.
pub fn fresh_s3_prefix() -> String {
    format!("t{}", uuid_like())
}

fn uuid_like() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// The `[storage]` table for the test Garage under `prefix`, its secret in
/// a file of `dir` (as an operator would keep it out of the config).
pub fn s3_storage_toml(dir: &Path, prefix: &str) -> String {
    s3_storage_toml_for(garage(), dir, prefix)
}

/// [`s3_storage_toml`] for another Garage (a cluster of the test's own).
pub fn s3_storage_toml_for(g: &berth_s3_fixture::Garage, dir: &Path, prefix: &str) -> String {
    let secret = dir.join("s3-secret");
    std::fs::write(&secret, format!("{}\n", g.secret)).expect("write the S3 secret");
    format!(
        "[storage]\nbackend = \"s3\"\n\n[storage.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
         endpoint = \"{}\"\nregion = \"{}\"\npath_style = true\n\
         access_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\n",
        g.bucket,
        g.endpoint(),
        g.region,
        g.key_id,
        secret.display()
    )
}

impl Server {
    /// A server storing into the test Garage under `prefix` (servers given
    /// one prefix are replicas of one registry), with `more_toml` added to
    /// its configuration file and `extra` arguments.
    pub fn start_s3(prefix: &str, more_toml: &str, extra: &[String]) -> Server {
        Server::start_s3_on(garage(), prefix, more_toml, extra)
    }

    /// [`Server::start_s3`] with `s3_keys` added to its `[storage.s3]`
    /// table (`presign_blob_gets = "60s"`, say).
    pub fn start_s3_keys(prefix: &str, s3_keys: &str, extra: &[String]) -> Server {
        Server::start_s3_config(garage(), prefix, "", s3_keys, extra, Launch::Plain)
    }

    /// [`Server::start_s3`] on another Garage.
    pub fn start_s3_on(
        g: &berth_s3_fixture::Garage,
        prefix: &str,
        more_toml: &str,
        extra: &[String],
    ) -> Server {
        Server::start_s3_config(g, prefix, more_toml, "", extra, Launch::Plain)
    }

    /// [`Server::start_s3`] in a mount namespace whose `/etc/hosts` is
    /// `hosts`.
    pub fn start_s3_with_hosts(
        prefix: &str,
        more_toml: &str,
        extra: &[String],
        hosts: &Path,
    ) -> Server {
        let launch = Launch::Hosts(hosts.to_path_buf());
        Server::start_s3_config(garage(), prefix, more_toml, "", extra, launch)
    }

    /// A configuration file of `before`, the storage tables, then
    /// `s3_keys` (which so land in `[storage.s3]`).
    fn start_s3_config(
        g: &berth_s3_fixture::Garage,
        prefix: &str,
        before: &str,
        s3_keys: &str,
        extra: &[String],
        launch: Launch,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp root");
        let config = dir.path().join("berth.toml");
        std::fs::write(
            &config,
            format!(
                "{before}\n{}{s3_keys}\n",
                s3_storage_toml_for(g, dir.path(), prefix)
            ),
        )
        .expect("write berth.toml");
        let mut args = vec![format!("--config={}", config.display())];
        args.extend(extra.iter().cloned());
        let root = dir.path().join("root");
        let mut server = Server::start_inner(&root, &args, None, launch, None);
        server._dir = Some(dir);
        server
    }
}

impl Server {
    /// Start on a fresh temporary root.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp root");
        let root = dir.path().join("root");
        let mut server = Server::start_on(&root);
        server._dir = Some(dir);
        server
    }

    /// Start on a fresh temporary root with extra `berth serve` arguments
    /// (`--upstream HOST=URL`, `--offline`, `--config FILE`, ...).
    pub fn start_with(extra: &[String]) -> Server {
        let dir = tempfile::tempdir().expect("temp root");
        let root = dir.path().join("root");
        let mut server = Server::start_on_with(&root, extra);
        server._dir = Some(dir);
        server
    }

    /// [`Server::start_with`] logging at `rust_log` (`RUST_LOG`, e.g.
    /// `trace`) whatever `BERTH_TEST_LOG` says: for tests of what the log
    /// must never contain, at every level.
    pub fn start_with_log(extra: &[String], rust_log: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp root");
        let root = dir.path().join("root");
        let mut server = Server::start_inner(&root, extra, None, Launch::Plain, Some(rust_log));
        server._dir = Some(dir);
        server
    }

    /// Start on `root` (which may hold a previous server's data).
    pub fn start_on(root: &Path) -> Server {
        Server::start_on_with(root, &[])
    }

    /// Start on `root` with extra `berth serve` arguments.
    pub fn start_on_with(root: &Path, extra: &[String]) -> Server {
        Server::start_inner(root, extra, None, Launch::Plain, None)
    }

    /// Start on a fresh root with at most `nofile` open files (soft and
    /// hard limit), as under `ulimit -n`.
    pub fn start_with_nofile(extra: &[String], nofile: u64) -> Server {
        let dir = tempfile::tempdir().expect("temp root");
        let root = dir.path().join("root");
        let mut server = Server::start_inner(&root, extra, None, Launch::Nofile(nofile), None);
        server._dir = Some(dir);
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Start on `root` with `extra` arguments that include TLS flags
    /// (`--tls-cert/--tls-key` or `--tls-auto`); clients reach it as `tls`
    /// says (see [`TlsClient`]).
    pub fn start_tls(root: &Path, extra: &[String], tls: TlsClient) -> Server {
        Server::start_inner(root, extra, Some(tls), Launch::Plain, None)
    }

    /// A server over TLS (a CA and server certificate made with openssl)
    /// with an `[auth]` table whose one user, [`TLS_USER`], may do
    /// everything everywhere (pull, push and delete in every repository,
    /// mirror namespaces included); [`curl`] requests to it trust the CA and
    /// send that user's Basic credentials.
    pub fn start_tls_user() -> Server {
        Server::start_tls_user_http(false)
    }

    /// [`Server::start_tls_user`], curl speaking HTTP/1.1 to it when
    /// `http1` (without `Expect: 100-continue`).
    pub fn start_tls_user_http(http1: bool) -> Server {
        let extra = tempfile::tempdir().expect("temp dir for TLS and auth files");
        let ca = make_ca(extra.path(), "spec-ca");
        let (cert, key) = make_server_cert(extra.path(), &ca, "spec-server");
        let ht = htpasswd_file(extra.path(), &[TLS_USER.0], TLS_USER.1);
        let config = extra.path().join("berth.toml");
        std::fs::write(&config, everything_for(&ht, TLS_USER.0)).expect("write berth.toml");
        let root = extra.path().join("root");
        let mut server = Server::start_tls(
            &root,
            &[
                format!("--tls-cert={}", cert.display()),
                format!("--tls-key={}", key.display()),
                format!("--config={}", config.display()),
            ],
            TlsClient {
                ca: ca.cert,
                creds: Some((TLS_USER.0.to_string(), TLS_USER.1.to_string())),
                ipv6: false,
                http1,
            },
        );
        server._extra = Some(extra);
        server
    }

    fn start_inner(
        root: &Path,
        extra: &[String],
        tls: Option<TlsClient>,
        launch: Launch,
        rust_log: Option<&str>,
    ) -> Server {
        let rust_log = rust_log.map_or_else(
            || std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "info".into()),
            str::to_string,
        );
        let logdir = tempfile::tempdir().expect("temp log dir");
        let mut last_log = String::new();
        let ip = loopback(tls.as_ref().is_some_and(|t| t.ipv6));
        let fixed: Option<SocketAddr> = extra
            .iter()
            .find_map(|a| a.strip_prefix("--listen="))
            .and_then(|a| a.parse().ok());
        for attempt in 0..5 {
            let port = fixed.map_or_else(|| free_port_on(ip), |a| a.port());
            let addr = fixed.unwrap_or(SocketAddr::new(ip, port));
            let log = logdir.path().join(format!("berth-{attempt}.log"));
            let mut child = spawn_berth(addr, root, &log, extra, &launch, &rust_log);
            match wait_ready(&mut child, addr, tls.is_some(), &log, &rust_log) {
                Ok(()) => {
                    let server = Server {
                        child: Some(child),
                        ip: addr.ip(),
                        port,
                        root: root.to_path_buf(),
                        log,
                        tls,
                        _dir: None,
                        _logdir: logdir,
                        _extra: None,
                    };
                    if let Some(t) = &server.tls {
                        // A server killed earlier may have left its entry for
                        // this very address (its port is free again): the
                        // new server's settings replace it.
                        let url = server.url();
                        let mut clients = TLS_CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
                        clients.retain(|(base, _)| *base != url);
                        clients.push((url, t.clone()));
                    }
                    return server;
                }
                Err(text) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Another process took the port between our probe and the bind: retry.
                    if fixed.is_some() || !(text.contains("in use") || text.contains("AddrInUse")) {
                        panic!("berth serve did not become ready on {addr}\n--- server log ---\n{text}");
                    }
                    last_log = text;
                }
            }
        }
        panic!(
            "berth serve could not bind a free port in 5 attempts\n--- server log ---\n{last_log}"
        );
    }

    /// `127.0.0.1:PORT` (`[::1]:PORT` for an IPv6 one), the registry host
    /// for skopeo references.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`, or `https://...` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The server's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            child.kill().expect("SIGKILL berth");
            child.wait().expect("reap berth");
        }
    }

    /// Send SIGTERM and wait (bounded) for a graceful exit; the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id().to_string();
        run(Command::new("kill").args(["-TERM", &pid]));
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("poll berth") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berth did not exit within {within:?} of SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mine) = &self.tls {
            // Only this server's own entry: another server may have its
            // address by now (this one was killed earlier).
            let url = self.url();
            TLS_CLIENTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(base, c)| !(*base == url && c.ca == mine.ca));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- berth serve log ({}) ---\n{}",
                    self.host(),
                    truncate(&self.log(), 20_000)
                );
            }
        }
    }
}

/// One HTTP/1.1 request over a raw socket, returning the status code (or
/// `None` if the server did not answer within a second or two).
pub fn raw_status(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// curl

/// An HTTP response as curl saw it (the last one, after any `100 Continue`).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub request: String,
}

impl Resp {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e})\n{}", self.describe()))
    }

    /// The `code`s of a spec error body.
    pub fn error_codes(&self) -> Vec<String> {
        let v: Value = match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(_) => return Vec::new(),
        };
        v["errors"]
            .as_array()
            .map(|errs| {
                errs.iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        let mut s = format!("{}\n=> HTTP {}\n", self.request, self.status);
        for (k, v) in &self.headers {
            let _ = writeln!(s, "{k}: {v}");
        }
        let body = self.body_str();
        let _ = write!(s, "\n{}", truncate(&body, 2000));
        s
    }

    /// Assert the status code, showing the whole response otherwise.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status\n{}",
            self.describe()
        );
        self
    }

    /// Assert a spec error: this status and this code among the errors, with
    /// a JSON body of the spec's shape.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect_status(status);
        let codes = self.error_codes();
        assert!(
            codes.iter().any(|c| c == code),
            "expected error code {code}, got {codes:?}\n{}",
            self.describe()
        );
        let v = self.json();
        for e in v["errors"].as_array().into_iter().flatten() {
            assert!(
                e["message"].is_string(),
                "error without a message\n{}",
                self.describe()
            );
        }
        self
    }

    #[track_caller]
    pub fn expect_header(&self, name: &str, value: &str) -> &Self {
        assert_eq!(
            self.header(name),
            Some(value),
            "header {name}\n{}",
            self.describe()
        );
        self
    }

    /// The `Location` header made absolute against `base` (`http://host:port`).
    #[track_caller]
    pub fn location(&self, base: &str) -> String {
        let loc = self
            .header("location")
            .unwrap_or_else(|| panic!("no Location header\n{}", self.describe()));
        absolute(base, loc)
    }
}

/// Make a `Location` value absolute.
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        panic!("Location {location:?} is neither absolute nor rooted")
    }
}

/// Append a query parameter to a URL that may already have a query.
pub fn with_query(url: &str, param: &str) -> String {
    if url.contains('?') {
        format!("{url}&{param}")
    } else {
        format!("{url}?{param}")
    }
}

/// A request made with the real curl binary.
pub struct Req {
    method: String,
    url: String,
    headers: Vec<String>,
    body: Option<Vec<u8>>,
    /// Local address to send from (curl `--interface`).
    from: Option<String>,
    /// At most this many bytes a second (curl `--limit-rate`, e.g. `4M`).
    rate: Option<String>,
}

pub fn curl(method: &str, url: &str) -> Req {
    Req {
        method: method.to_string(),
        url: url.to_string(),
        headers: Vec::new(),
        body: None,
        from: None,
        rate: None,
    }
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push(format!("{name}: {value}"));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self
    }

    /// Send from this local address (curl `--interface`): another 127/8
    /// address is another client to berth, on the same loopback.
    pub fn source_address(mut self, local: &str) -> Req {
        self.from = Some(local.to_string());
        self
    }

    /// A slow client: at most `rate` bytes a second (`4M`, `500K`).
    pub fn limit_rate(mut self, rate: &str) -> Req {
        self.rate = Some(rate.to_string());
        self
    }

    pub fn send(self) -> Resp {
        self.send_inner(true)
    }

    /// [`Req::send`] that returns whatever arrived when the transfer broke
    /// (status 0 when not even headers came) instead of failing the test.
    pub fn send_unchecked(self) -> Resp {
        self.send_inner(false)
    }

    fn send_inner(self, checked: bool) -> Resp {
        require_tool("curl");
        let dir = tempfile::tempdir().expect("temp dir for curl");
        let head_path = dir.path().join("headers");
        let body_path = dir.path().join("body");
        let tls = tls_client_for(&self.url);
        // No `Expect: 100-continue` (curl adds it to large bodies): the
        // body is sent at once, as most clients do.
        let expect = "Expect:";
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--noproxy",
            "*",
            "--path-as-is",
            "-g",
            "--max-time",
            "120",
            "-H",
            expect,
        ])
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path);
        // A request to a TLS server started here trusts its CA and carries
        // its user's credentials, unless it sets its own Authorization.
        if let Some(tls) = tls {
            cmd.arg("--cacert").arg(&tls.ca);
            if tls.http1 {
                cmd.arg("--http1.1");
            }
            let own_auth = self
                .headers
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("authorization:"));
            if let (Some((user, password)), false) = (&tls.creds, own_auth) {
                cmd.arg("-u").arg(format!("{user}:{password}"));
            }
        }
        if let Some(local) = &self.from {
            cmd.arg("--interface").arg(local);
        }
        if let Some(rate) = &self.rate {
            cmd.arg("--limit-rate").arg(rate);
        }
        if self.method == "HEAD" {
            cmd.arg("--head");
        } else {
            cmd.args(["-X", &self.method]);
        }
        let has_content_type = self
            .headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("content-type:"));
        for h in &self.headers {
            cmd.arg("-H").arg(h);
        }
        if let Some(body) = &self.body {
            let req_body = dir.path().join("request-body");
            std::fs::write(&req_body, body).expect("write request body");
            if !has_content_type {
                cmd.args(["-H", "Content-Type: application/octet-stream"]);
            }
            cmd.arg("--data-binary")
                .arg(format!("@{}", req_body.display()));
        }
        cmd.arg(&self.url);
        let out = run_unchecked(&mut cmd);
        assert!(
            !checked || out.status.success(),
            "curl failed\n{}",
            out.describe()
        );
        let raw_headers = std::fs::read_to_string(&head_path).unwrap_or_default();
        let (status, headers) = parse_headers(&raw_headers);
        // With --head curl writes the headers where the body would go.
        let body = if self.method == "HEAD" {
            Vec::new()
        } else {
            std::fs::read(&body_path).unwrap_or_default()
        };
        let mut request = format!("{} {}", self.method, self.url);
        if let Some(local) = &self.from {
            let _ = write!(request, " (from {local})");
        }
        for h in &self.headers {
            let _ = write!(request, "\n  {h}");
        }
        if let Some(b) = &self.body {
            let _ = write!(request, "\n  ({} body bytes)", b.len());
        }
        Resp {
            status,
            headers,
            body,
            request,
        }
    }
}

fn parse_headers(raw: &str) -> (u16, Vec<(String, String)>) {
    // curl writes every response's headers (100 Continue included): keep the last block.
    let blocks: Vec<&str> = raw
        .split("\r\n\r\n")
        .map(str::trim)
        .filter(|b| b.starts_with("HTTP/"))
        .collect();
    let last = blocks.last().copied().unwrap_or("");
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in curl's headers: {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

// ---------------------------------------------------------------------------
// Registry shortcuts over curl

/// Upload a blob (POST then PUT) and return its digest.
pub fn push_blob(server: &Server, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let post = curl(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", server.url()),
    )
    .send();
    post.expect_status(202);
    let put_url = with_query(&post.location(&server.url()), &format!("digest={digest}"));
    curl("PUT", &put_url)
        .body(bytes.to_vec())
        .send()
        .expect_status(201);
    digest
}

/// Push a manifest under `reference` and return the response.
pub fn put_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Resp {
    curl(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{reference}", server.url()),
    )
    .header("Content-Type", media_type)
    .body(bytes.to_vec())
    .send()
}

/// An OCI image manifest for `config` and `layers` (descriptors as JSON).
pub fn image_manifest(config: Value, layers: Vec<Value>, extra: Option<Value>) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec_pretty(&m).expect("serialize manifest")
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// Push a small image (config + one layer) and return (manifest digest, manifest bytes).
pub fn push_small_image(server: &Server, repo: &str, tag: &str, seed: u64) -> (String, Vec<u8>) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "author": format!("berth-test-{seed}"),
    }))
    .expect("config json");
    let layer = pseudo_random(1000 + (seed as usize % 1000), seed);
    push_blob(server, repo, &config);
    push_blob(server, repo, &layer);
    let manifest = image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
        None,
    );
    put_manifest(server, repo, tag, OCI_MANIFEST, &manifest).expect_status(201);
    (sha256(&manifest), manifest)
}

// ---------------------------------------------------------------------------
// skopeo

/// podman with its own storage, run root and auth file, so the host's
/// configuration cannot change what a test does.
pub fn podman(dir: &Path) -> Command {
    require_tool("podman");
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ])
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .env("XDG_RUNTIME_DIR", dir.join("xdg"));
    cmd
}

/// `skopeo --insecure-policy` with its own empty auth file, so the host's
/// configuration cannot change what a test does.
pub fn skopeo(scratch: &Path) -> Command {
    require_tool("skopeo");
    let auth = scratch.join("skopeo-auth.json");
    if !auth.exists() {
        std::fs::write(&auth, "{}").expect("write skopeo auth file");
    }
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy")
        .env("REGISTRY_AUTH_FILE", &auth);
    cmd
}

// ---------------------------------------------------------------------------
// umoci images

/// An OCI image layout directory built with umoci.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `umoci init --layout DIR` (unless it already is a layout).
    pub fn init(dir: &Path) -> Layout {
        require_tool("umoci");
        if !dir.join("index.json").exists() {
            run(Command::new("umoci").arg("init").arg("--layout").arg(dir));
        }
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// `oci:DIR:TAG`, the skopeo reference.
    pub fn oci_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// Build an image tagged `tag` with `layers` layers, each adding files
    /// whose content depends on `seed`: `umoci new`, `umoci unpack`, then one
    /// `umoci repack --refresh-bundle` per layer.
    pub fn build(&self, tag: &str, layers: usize, seed: u64, arch: &str) {
        run(Command::new("umoci").args(["new", "--image", &self.image(tag)]));
        if arch != "amd64" {
            run(Command::new("umoci").args([
                "config",
                "--image",
                &self.image(tag),
                "--architecture",
                arch,
                "--os",
                "linux",
            ]));
        }
        let scratch = tempfile::tempdir().expect("temp bundle dir");
        let bundle = scratch.path().join("bundle");
        let mut unpack = Command::new("umoci");
        unpack.arg("unpack");
        if !is_root() {
            unpack.arg("--rootless");
        }
        unpack.args(["--image", &self.image(tag)]).arg(&bundle);
        run(&mut unpack);
        for i in 0..layers {
            let layer_dir = bundle.join("rootfs").join(format!("layer{i}"));
            std::fs::create_dir_all(&layer_dir).expect("create layer dir");
            std::fs::write(
                layer_dir.join("data.bin"),
                pseudo_random(4096 + 512 * i, seed * 100 + i as u64),
            )
            .expect("write layer file");
            std::fs::write(
                layer_dir.join("note.txt"),
                format!("berth test {tag} layer {i} seed {seed}\n"),
            )
            .expect("write layer note");
            run(Command::new("umoci")
                .args(["repack", "--refresh-bundle", "--image", &self.image(tag)])
                .arg(&bundle));
        }
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Value {
        let raw = std::fs::read(self.dir.join("index.json")).expect("read index.json");
        serde_json::from_slice(&raw).expect("index.json is JSON")
    }

    /// The descriptor tagged `tag` in `index.json`.
    pub fn descriptor(&self, tag: &str) -> Value {
        self.index()["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("no {tag} in {}/index.json", self.dir.display()))
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let (alg, hex) = digest.split_once(':').expect("digest has an algorithm");
        std::fs::read(self.dir.join("blobs").join(alg).join(hex))
            .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", self.dir.display()))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        let (alg, hex) = digest.split_once(':').expect("digest has an algorithm");
        self.dir.join("blobs").join(alg).join(hex).is_file()
    }

    /// (digest, bytes) of the manifest tagged `tag`.
    pub fn manifest(&self, tag: &str) -> (String, Vec<u8>) {
        let d = self.descriptor(tag);
        let digest = d["digest"].as_str().expect("descriptor digest").to_string();
        let bytes = self.blob(&digest);
        assert_eq!(
            sha256(&bytes),
            digest,
            "layout blob does not match its digest"
        );
        (digest, bytes)
    }

    /// Write a blob into the layout and return its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        let dir = self.dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).expect("blobs dir");
        std::fs::write(dir.join(hex), bytes).expect("write blob");
        digest
    }

    /// Write an OCI image index over the images tagged `platforms` (tag,
    /// architecture) and tag it `tag` in `index.json`. Returns (digest, bytes).
    pub fn make_index(&self, tag: &str, platforms: &[(&str, &str)]) -> (String, Vec<u8>) {
        let manifests: Vec<Value> = platforms
            .iter()
            .map(|(t, arch)| {
                let (digest, bytes) = self.manifest(t);
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": bytes.len(),
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index).expect("serialize index");
        let digest = self.put_blob(&bytes);
        let mut top = self.index();
        top["manifests"]
            .as_array_mut()
            .expect("index.json manifests")
            .push(serde_json::json!({
                "mediaType": OCI_INDEX,
                "digest": digest,
                "size": bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&top).expect("index.json"),
        )
        .expect("write index.json");
        (digest, bytes)
    }
}

// ---------------------------------------------------------------------------
// Upstreams: Debian's docker-registry (Distribution 2.8)

/// How a [`Distribution`] registry is set up.
#[derive(Debug, Clone, Default)]
pub struct DistributionOptions {
    /// `auth: htpasswd` with this one user (bcrypt, made by `htpasswd -B`).
    pub htpasswd: Option<(String, String)>,
    /// `proxy: remoteurl: URL`: Distribution's own pull-through cache mode.
    pub proxy_remote: Option<String>,
}

/// A Distribution registry (`docker-registry serve CONFIG`) on a loopback
/// port, with its storage in a temporary directory and its access log (one
/// line per request, written when the response is complete) in its log
/// file. Killed when dropped; its log is printed when the test is failing.
pub struct Distribution {
    child: Option<Child>,
    pub port: u16,
    /// Filesystem driver root: blobs are at
    /// `docker/registry/v2/blobs/sha256/<2>/<hex>/data` below it.
    pub storage: PathBuf,
    config: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl Distribution {
    pub fn start() -> Distribution {
        Distribution::start_with(DistributionOptions::default())
    }

    pub fn start_with(opts: DistributionOptions) -> Distribution {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("temp dir for docker-registry");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage dir");
        let log = dir.path().join("registry.log");
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join(format!("config-{attempt}.yml"));
            std::fs::write(
                &config,
                distribution_config(dir.path(), &storage, port, &opts),
            )
            .expect("write registry config");
            match spawn_distribution(&config, &log, port) {
                Ok(child) => {
                    return Distribution {
                        child: Some(child),
                        port,
                        storage,
                        config,
                        log,
                        dir,
                    }
                }
                // Another process took the port between our probe and the bind.
                Err(text) if text.contains("address already in use") => last = text,
                Err(text) => panic!("docker-registry did not start on port {port}\n{text}"),
            }
        }
        panic!("docker-registry could not bind a free port in 5 attempts\n{last}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Everything the registry logged, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many requests `METHOD PATH` (exact path, query excluded) the
    /// access log holds. Lines are written when a response is complete.
    pub fn requests(&self, method: &str, path: &str) -> usize {
        access_log_count(&self.log(), method, path)
    }

    /// Every access-log request line (`METHOD URI`), in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let start = l.find("] \"")? + 3;
                let rest = &l[start..];
                let end = rest.find(" HTTP/")?;
                Some(rest[..end].to_string())
            })
            .collect()
    }

    /// The file holding a blob's bytes in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stop the registry (SIGKILL): the upstream goes away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill docker-registry");
            child.wait().expect("reap docker-registry");
        }
    }

    /// Start it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        match spawn_distribution(&self.config, &self.log, self.port) {
            Ok(child) => self.child = Some(child),
            Err(text) => panic!(
                "docker-registry did not restart on port {}\n{text}",
                self.port
            ),
        }
    }

    /// Replace the htpasswd file with this one user and restart (Distribution
    /// reads it at start): clients with the old password are refused.
    pub fn set_htpasswd(&mut self, user: &str, password: &str) {
        let path = self.dir.path().join("htpasswd");
        assert!(path.is_file(), "this registry was started without htpasswd");
        let out = run(Command::new(require_tool("htpasswd")).args(["-Bbn", user, password]));
        std::fs::write(&path, out.stdout_str().trim()).expect("write htpasswd");
        self.restart();
    }

    /// Push `src` (a skopeo reference, e.g. `oci:DIR:TAG`) to `REPO:TAG`
    /// here with `skopeo copy --all --preserve-digests`.
    pub fn push(&self, scratch: &Path, src: &str, repo_tag: &str, creds: Option<&str>) {
        let mut cmd = skopeo(scratch);
        cmd.args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(c) = creds {
            cmd.arg("--dest-creds").arg(c);
        }
        cmd.arg(src)
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut cmd);
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}) ---\n{}",
                self.host(),
                truncate(&self.log(), 20_000)
            );
        }
    }
}

/// Start `docker-registry serve CONFIG`, appending to `log`, and wait (bounded)
/// until it answers on `port`.
fn spawn_distribution(config: &Path, log: &Path, port: u16) -> Result<Child, String> {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("registry log file");
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().expect("clone log handle"))
        .stderr(logfile)
        .spawn()
        .expect("start docker-registry");
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(exited with {status})\n{}", read_log()));
        }
        if raw_status(addr, "GET", "/v2/").is_some() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "(not ready after {READY_TIMEOUT:?})\n{}",
                read_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn distribution_config(
    dir: &Path,
    storage: &Path,
    port: u16,
    opts: &DistributionOptions,
) -> String {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: info\n  fields:\n    service: upstream\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n",
        storage.display()
    );
    if let Some((user, password)) = &opts.htpasswd {
        let out = run(Command::new(require_tool("htpasswd")).args(["-Bbn", user, password]));
        let path = dir.join("htpasswd");
        std::fs::write(&path, out.stdout_str().trim()).expect("write htpasswd");
        let _ = writeln!(
            config,
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}",
            path.display()
        );
    }
    if let Some(remote) = &opts.proxy_remote {
        let _ = writeln!(config, "proxy:\n  remoteurl: {remote}");
    }
    config
}

/// Count `"METHOD PATH HTTP/` lines of a Distribution access log.
pub fn access_log_count(log: &str, method: &str, path: &str) -> usize {
    let needle = format!("\"{method} {path} HTTP/");
    log.lines().filter(|l| l.contains(&needle)).count()
}

// ---------------------------------------------------------------------------
// Images written by hand into a layout (for sizes umoci makes slowly)

/// A file for [`tar_layer`].
pub struct TarEntry<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// An uncompressed POSIX tar of regular files (ustar headers), a valid
/// `application/vnd.oci.image.layer.v1.tar` layer.
pub fn tar_layer(files: &[TarEntry<'_>]) -> Vec<u8> {
    let total: usize = files
        .iter()
        .map(|f| 512 + f.data.len().div_ceil(512) * 512)
        .sum();
    let mut out = Vec::with_capacity(total + 1024);
    for f in files {
        assert!(f.name.len() < 100, "tar name too long: {}", f.name);
        let mut h = [0u8; 512];
        h[..f.name.len()].copy_from_slice(f.name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o644);
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, f.data.len() as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(f.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// What [`Layout::add_image`] wrote.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

impl ImageInfo {
    /// Every blob of the image: config then layers.
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![self.config_digest.clone()];
        v.extend(self.layer_digests.iter().cloned());
        v
    }
}

impl Layout {
    /// An empty OCI layout written directly (no umoci needed).
    pub fn create(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout blobs dir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        std::fs::write(
            dir.join("index.json"),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        )
        .expect("index.json");
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Write an image whose layers are the given uncompressed tars, for
    /// `arch`, and tag it `tag` in `index.json` (replacing the tag if held).
    pub fn add_image(&self, tag: &str, arch: &str, layers: &[Vec<u8>]) -> ImageInfo {
        const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
        let layer_digests: Vec<String> = layers.iter().map(|l| self.put_blob(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            // Uncompressed layers: the diff_ids are the layer digests.
            "rootfs": {"type": "layers", "diff_ids": layer_digests},
        }))
        .expect("config json");
        let config_digest = self.put_blob(&config);
        let manifest = image_manifest(
            descriptor(OCI_CONFIG, &config),
            layers.iter().map(|l| descriptor(OCI_TAR, l)).collect(),
            None,
        );
        let manifest_digest = self.put_blob(&manifest);
        self.tag(tag, OCI_MANIFEST, &manifest_digest, manifest.len());
        ImageInfo {
            manifest_digest,
            manifest,
            config_digest,
            layer_digests,
        }
    }

    /// Point `tag` in `index.json` at a descriptor, replacing any previous one.
    pub fn tag(&self, tag: &str, media_type: &str, digest: &str, size: usize) {
        let mut top = self.index();
        let list = top["manifests"]
            .as_array_mut()
            .expect("index.json manifests");
        list.retain(|d| d["annotations"]["org.opencontainers.image.ref.name"] != tag);
        list.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&top).expect("index.json"),
        )
        .expect("write index.json");
    }
}

// ---------------------------------------------------------------------------
// Reading a berth server's state

impl Server {
    /// The value of a counter (or gauge) on `/metrics`, 0 when absent.
    /// `name` is the full sample name, e.g. `berth_cache_hits_total`.
    pub fn metric(&self, name: &str) -> f64 {
        let resp = curl("GET", &format!("{}/metrics", self.url())).send();
        resp.expect_status(200);
        parse_metric(&resp.body_str(), name)
    }

    /// Whether the storage root holds a published blob.
    pub fn holds_blob(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .is_file()
    }

    /// The bytes of a published blob in the storage root.
    pub fn stored_blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::read(self.root.join("blobs/sha256").join(&hex[..2]).join(hex))
            .unwrap_or_else(|e| panic!("blob {digest} in berth's root: {e}"))
    }

    /// Bytes of every published blob under the root (what `du` of
    /// `blobs/` would say, without block rounding).
    pub fn blob_bytes(&self) -> u64 {
        blob_bytes(&self.root)
    }

    /// Files under the root's upload area (abandoned downloads leave none).
    pub fn upload_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.join("uploads")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// A sample's value in the Prometheus/OpenMetrics text format (0 if absent).
pub fn parse_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// containerd

/// A containerd daemon with its own root, state and socket. Killed when
/// dropped; its log is printed when the test is failing.
pub struct Containerd {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Containerd {
    /// Without the CRI plugin: `ctr` needs only the content store.
    pub fn start() -> Containerd {
        Containerd::start_with_cri(None)
    }

    /// With `Some(certs_dir)`, the CRI plugin (what kubelet talks to) runs,
    /// reading registry hosts (`hosts.toml`) from `certs_dir`, its
    /// `config_path`; it needs runc. With `None`, the CRI plugin is disabled.
    pub fn start_with_cri(cri_config_path: Option<&Path>) -> Containerd {
        Containerd::start_with_cri_extra(cri_config_path, "")
    }

    /// [`Containerd::start_with_cri`] with `extra` appended to the daemon's
    /// config (TOML tables, e.g. the CRI plugin's
    /// `registry.configs."HOST".auth` credentials).
    pub fn start_with_cri_extra(cri_config_path: Option<&Path>, extra: &str) -> Containerd {
        let cri = cri_config_path.map(|p| {
            format!(
                "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{}\"\n",
                p.display()
            )
        });
        Containerd::start_inner(cri.as_deref(), extra, |_| {})
    }

    /// With the CRI plugin but no registry table: `prepare` gets the
    /// config file before containerd reads it (to edit it as a user or
    /// `berth runtime-config containerd --apply` would).
    pub fn start_with_cri_prepared(prepare: impl FnOnce(&Path)) -> Containerd {
        Containerd::start_inner(Some(""), "", prepare)
    }

    /// `cri_registry`: `None` disables the CRI plugin; otherwise the lines
    /// of its registry table (possibly none).
    fn start_inner(
        cri_registry: Option<&str>,
        extra: &str,
        prepare: impl FnOnce(&Path),
    ) -> Containerd {
        let bin = require_tool("containerd");
        require_tool("ctr");
        let dir = tempfile::tempdir().expect("temp dir for containerd");
        let socket = dir.path().join("containerd.sock");
        let mut disabled = vec![
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.internal.v1.opt",
            "io.containerd.tracing.processor.v1.otlp",
        ];
        if cri_registry.is_none() {
            disabled.insert(0, "io.containerd.grpc.v1.cri");
        }
        let mut config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = {disabled:?}\n\n[grpc]\n  address = \"{socket}\"\n",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display(),
        );
        if let Some(registry) = cri_registry {
            require_tool("runc");
            let _ = write!(
                config,
                r#"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  disable_cgroup = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/conf"
{registry}"#,
                cni = dir.path().join("cni").display(),
            );
        }
        config.push_str(extra);
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, config).expect("write containerd config");
        prepare(&config_file);
        let log = dir.path().join("containerd.log");
        let logfile = std::fs::File::create(&log).expect("containerd log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("clone log handle"))
            .stderr(logfile)
            .spawn()
            .expect("start containerd");
        let mut c = Containerd {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(&c.socket).is_err() {
            if let Some(Ok(Some(status))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                panic!("containerd exited ({status})\n{}", c.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not listen within {READY_TIMEOUT:?}\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// `ctr --address SOCKET --namespace berth-test`.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(require_tool("ctr"));
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "berth-test"]);
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- containerd log ---\n{}", truncate(&self.log(), 20_000));
        }
    }
}

/// A `hosts.toml` directory for containerd (`--hosts-dir`) sending every
/// pull of `registry` to the mirror at `mirror_url` (`http://127.0.0.1:PORT`).
/// `server` is left unreachable so that only the mirror can answer.
pub fn containerd_hosts_dir(dir: &Path, registry: &str, mirror_url: &str) -> PathBuf {
    let hosts = dir.join("certs.d");
    let reg_dir = hosts.join(registry);
    std::fs::create_dir_all(&reg_dir).expect("hosts dir");
    std::fs::write(
        reg_dir.join("hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:9\"\n\n[host.\"{mirror_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .expect("write hosts.toml");
    hosts
}

// ---------------------------------------------------------------------------
// A plain HTTP/1.1 client for many concurrent downloads

/// What one `GET` received: status, headers, and either the body or its
/// digest and length (for large bodies that are hashed as they arrive).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub digest: String,
    pub len: u64,
    /// Time from sending the request to the first body byte.
    pub ttfb: Option<Duration>,
}

/// `GET path` on one fresh connection to `addr`, hashing the body as it
/// arrives (and keeping it when `keep`). A connection that breaks before the
/// body is complete is an `Err`, as it is for a real client. Bounded by
/// `timeout` in total.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    keep: bool,
    timeout: Duration,
) -> Result<Fetched, String> {
    tokio::time::timeout(timeout, http_get_inner(addr, path, headers, keep))
        .await
        .map_err(|_| format!("GET {path}: no complete answer within {timeout:?}"))?
}

async fn http_get_inner(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    keep: bool,
) -> Result<Fetched, String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let sent = Instant::now();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let mut body = resp.into_body();
    let mut hasher = berth_reference::Algorithm::Sha256.hasher();
    let (mut kept, mut len, mut ttfb) = (Vec::new(), 0u64, None);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("GET {path}: body broke after {len} bytes: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if ttfb.is_none() && !data.is_empty() {
                ttfb = Some(sent.elapsed());
            }
            hasher.update(&data);
            len += data.len() as u64;
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
    drop(sender);
    let _ = conn.await;
    Ok(Fetched {
        status,
        headers,
        body: kept,
        digest: hasher.finish().to_string(),
        len,
        ttfb,
    })
}

/// [`http_get`] from synchronous test code, on a runtime of its own.
pub fn http_get_blocking(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(http_get(
            addr,
            path,
            headers,
            true,
            Duration::from_secs(120),
        ))
}

// ---------------------------------------------------------------------------
// A small file system of the test's own (full-disk and watermark tests)

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("mount point");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("create mount point");
        let out = run_unchecked(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_mib}m"))
                .arg("tmpfs")
                .arg(&path),
        );
        assert!(
            out.status.success(),
            "full-disk tests mount a tmpfs and must run as root\n{}",
            out.describe()
        );
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bytes used and in all on the file system at `path` (`df`, as berth's
/// statvfs sees it).
pub fn df_used_total(path: &Path) -> (u64, u64) {
    let out = run(Command::new("df")
        .args(["--output=used,size", "-B1"])
        .arg(path));
    let text = out.stdout_str();
    let line = text.lines().nth(1).unwrap_or_default().to_string();
    let mut nums = line
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// Bytes of every published blob under a storage root.
pub fn blob_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.join("blobs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------
// TLS certificates made by openssl, users made by htpasswd

/// The user of [`Server::start_tls_user`]: (name, password).
pub const TLS_USER: (&str, &str) = ("spec-user", "spec-Pass-1");

/// A CA certificate and its key.
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path) -> Command {
    let mut cmd = Command::new(require_tool("openssl"));
    cmd.current_dir(dir);
    cmd
}

/// A CA made by `openssl req -x509` (EC P-256, two days).
pub fn make_ca(dir: &Path, name: &str) -> Ca {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    run(openssl(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
    Ca { cert, key }
}

/// A server certificate for localhost, 127.0.0.1 and ::1 signed by `ca`;
/// (certificate, key).
pub fn make_server_cert(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    make_server_cert_with(dir, ca, name, None)
}

/// [`make_server_cert`] with one more DNS name in the certificate.
pub fn make_server_cert_with(
    dir: &Path,
    ca: &Ca,
    name: &str,
    dns: Option<&str>,
) -> (PathBuf, PathBuf) {
    let extra_san = dns.map(|d| format!(",DNS:{d}")).unwrap_or_default();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1{extra_san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("write ext file");
    run(openssl(dir)
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(openssl(dir)
        .args([
            "x509",
            "-req",
            "-days",
            "1",
            "-set_serial",
            &format!("{}", unique() + 1000),
        ])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca.cert)
        .arg("-CAkey")
        .arg(&ca.key)
        .arg("-out")
        .arg(&cert)
        .arg("-extfile")
        .arg(&ext));
    (cert, key)
}

/// An htpasswd file made by the real `htpasswd -B` for `users`, all with
/// `password`.
pub fn htpasswd_file(dir: &Path, users: &[&str], password: &str) -> PathBuf {
    require_tool("htpasswd");
    let file = dir.join("htpasswd");
    for (i, user) in users.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.arg("-B").arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        run(cmd.arg(&file).arg(user).arg(password));
    }
    file
}

/// A berth config with an `[auth]` table over `htpasswd` and rules letting
/// `user` pull, push and delete everywhere (the mirror namespaces of the
/// big public registries named literally, as pushes there need).
pub fn everything_for(htpasswd: &Path, user: &str) -> String {
    format!(
        r#"[auth]
htpasswd = "{}"

[[policy]]
repositories = ["**", "docker.io/**", "quay.io/**", "ghcr.io/**", "registry.k8s.io/**", "gcr.io/**"]
subjects = ["{user}"]
actions = ["pull", "push", "delete"]
"#,
        htpasswd.display()
    )
}

// ---------------------------------------------------------------------------
// Docker

/// A Docker daemon of its own (data, exec root, socket, config), stopped
/// when dropped.
pub struct Dockerd {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        Dockerd::start_with("{}", None)
    }

    /// With this `daemon.json`, and, given `hosts`, in a mount namespace
    /// where that file is `/etc/hosts` (names spoofed as on seed 004's
    /// nodes, for this daemon alone).
    pub fn start_with(daemon_json: &str, hosts: Option<&Path>) -> Dockerd {
        let bin = if Path::new("/usr/sbin/dockerd").exists() {
            PathBuf::from("/usr/sbin/dockerd")
        } else {
            require_tool("dockerd")
        };
        let dir = tempfile::tempdir().expect("temp dir for dockerd");
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), daemon_json).expect("write daemon.json");
        let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd log");
        let mut cmd = match hosts {
            None => Command::new(bin),
            Some(h) => {
                require_tool("unshare");
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$HOSTS\" /etc/hosts && exec \"$DOCKERD\" \"$@\"")
                    .arg("dockerd")
                    .env("HOSTS", h)
                    .env("DOCKERD", &bin);
                c
            }
        };
        let child = cmd
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args([
                "--storage-driver=vfs",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut daemon = Dockerd {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out =
                run_unchecked(
                    daemon
                        .docker()
                        .args(["version", "--format", "{{.Server.Version}}"]),
                );
            if out.status.success() {
                break;
            }
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited ({status})\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        daemon
    }

    /// The docker client against this daemon, with its own config directory.
    pub fn docker(&self) -> Command {
        let bin = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            require_tool("docker")
        };
        let mut cmd = Command::new(bin);
        cmd.arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .env("DOCKER_CONFIG", self.dir.path().join("client"));
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets dockerd stop its own containerd; SIGKILL after a bound.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- dockerd log ---\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// The CRI image service (what kubelet calls)

/// Protocol-buffer length-delimited field 1 (`0x0a`, varint length, bytes).
pub fn pb_field1(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

/// The bytes of field 1 in a message whose first field is it.
pub fn pb_read_field1(msg: &[u8]) -> Option<Vec<u8>> {
    let (&tag, rest) = msg.split_first()?;
    if tag != 0x0a {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0u32, 0usize);
    loop {
        let b = *rest.get(i)?;
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    rest.get(i..i + len).map(<[u8]>::to_vec)
}

/// Pull `image` through the CRI `runtime.v1.ImageService/PullImage` call —
/// what kubelet does — over containerd's socket, as a minimal gRPC client
/// (HTTP/2, one length-prefixed protobuf message each way). Returns the image
/// ref (digest) containerd reports.
pub fn cri_pull_image(socket: &Path, image: &str) -> Result<String, String> {
    use http_body_util::BodyExt as _;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let call = async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .map_err(|e| format!("http2 handshake: {e}"))?;
            tokio::spawn(conn);
            // PullImageRequest { image: ImageSpec { image } }
            let msg = pb_field1(&pb_field1(image.as_bytes()));
            let mut frame = vec![0u8];
            frame.extend_from_slice(
                &u32::try_from(msg.len())
                    .map_err(|e| e.to_string())?
                    .to_be_bytes(),
            );
            frame.extend_from_slice(&msg);
            let request =
                hyper::Request::post("http://localhost/runtime.v1.ImageService/PullImage")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
                    .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let (parts, body) = response.into_parts();
            let collected = body
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let field = |name: &str| {
                trailers
                    .get(name)
                    .or_else(|| parts.headers.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let status =
                field("grpc-status").unwrap_or_else(|| format!("missing (HTTP {})", parts.status));
            if status != "0" {
                return Err(format!(
                    "grpc-status {status}: {}",
                    field("grpc-message").unwrap_or_default()
                ));
            }
            let data = collected.to_bytes();
            let image_ref = data
                .get(5..)
                .and_then(pb_read_field1)
                .ok_or_else(|| format!("unexpected PullImageResponse {data:?}"))?;
            String::from_utf8(image_ref).map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(120), call)
            .await
            .map_err(|_| "PullImage timed out after 120s".to_string())?
    })
}

// ---------------------------------------------------------------------------
// nginx

/// nginx on a loopback port with `server_body` inside its one `server {}`;
/// its access log records each request's Authorization header.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(server_body: &str) -> Nginx {
        Nginx::start_with("", server_body)
    }

    /// [`Nginx::start`] with `http_body` (an `upstream {}` block, say) in
    /// its `http {}` before the server.
    pub fn start_with(http_body: &str, server_body: &str) -> Nginx {
        let nginx = require_tool("nginx");
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("nginx dir");
            let port = free_port();
            let p = dir.path().display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  log_format auth '$request_method $request_uri auth=[$http_authorization]';\n  access_log {p}/access.log auth;\n\
                 client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n{http_body}\n\
                 server {{\n    listen 127.0.0.1:{port};\n{server_body}\n  }}\n}}\n"
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let child = Command::new(&nginx)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut n = Nginx { child, port, dir };
            for _ in 0..100 {
                if raw_status(([127, 0, 0, 1], port).into(), "GET", "/nginx-ready") == Some(200) {
                    return n;
                }
                if let Ok(Some(_)) = n.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last = n.error_log();
            // Dropping kills it; the next attempt takes another port.
        }
        panic!("nginx did not start\n{last}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error log ---\n{}\n--- nginx access log ---\n{}",
                self.error_log(),
                std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
            );
        }
    }
}
