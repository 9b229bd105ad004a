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
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

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
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{command} did not finish within {COMMAND_TIMEOUT:?}\n--- stderr ---\n{stderr}");
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
    pub port: u16,
    pub root: PathBuf,
    log: PathBuf,
    _dir: Option<TempDir>,
    _logdir: TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn spawn_berth(port: u16, root: &Path, log: &Path) -> Child {
    let logfile = std::fs::File::create(log).expect("create server log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--root")
        .arg(root);
    // The environment must not change what the test asked for.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "info".into()),
    )
    .stdin(Stdio::null())
    .stdout(logfile.try_clone().expect("clone log handle"))
    .stderr(logfile);
    cmd.spawn().expect("spawn berth serve")
}

/// Wait (bounded) until the server answers `/v2/`; the log on failure.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..10_000 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(exited with {status})\n{}", read_log()));
        }
        if Instant::now() > deadline {
            break;
        }
        if let Some(200 | 401) = raw_status(addr, "GET", "/v2/") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "(not ready after {READY_TIMEOUT:?})\n{}",
        read_log()
    ))
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

    /// Start on `root` (which may hold a previous server's data).
    pub fn start_on(root: &Path) -> Server {
        let logdir = tempfile::tempdir().expect("temp log dir");
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = logdir.path().join(format!("berth-{attempt}.log"));
            let mut child = spawn_berth(port, root, &log);
            match wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    return Server {
                        child: Some(child),
                        port,
                        root: root.to_path_buf(),
                        log,
                        _dir: None,
                        _logdir: logdir,
                    }
                }
                Err(text) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Another process took the port between our probe and the bind: retry.
                    if !(text.contains("in use") || text.contains("AddrInUse")) {
                        panic!("berth serve did not become ready on 127.0.0.1:{port}\n--- server log ---\n{text}");
                    }
                    last_log = text;
                }
            }
        }
        panic!(
            "berth serve could not bind a free port in 5 attempts\n--- server log ---\n{last_log}"
        );
    }

    /// `127.0.0.1:PORT`, the registry host for skopeo references.
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

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- berth serve log (127.0.0.1:{}) ---\n{}",
                    self.port,
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
}

pub fn curl(method: &str, url: &str) -> Req {
    Req {
        method: method.to_string(),
        url: url.to_string(),
        headers: Vec::new(),
        body: None,
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

    pub fn send(self) -> Resp {
        require_tool("curl");
        let dir = tempfile::tempdir().expect("temp dir for curl");
        let head_path = dir.path().join("headers");
        let body_path = dir.path().join("body");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--path-as-is",
            "-g",
            "--max-time",
            "120",
            "-H",
            "Expect:",
        ])
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path);
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
        assert!(out.status.success(), "curl failed\n{}", out.describe());
        let raw_headers = std::fs::read_to_string(&head_path).unwrap_or_default();
        let (status, headers) = parse_headers(&raw_headers);
        // With --head curl writes the headers where the body would go.
        let body = if self.method == "HEAD" {
            Vec::new()
        } else {
            std::fs::read(&body_path).unwrap_or_default()
        };
        let mut request = format!("{} {}", self.method, self.url);
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
