//! Upstream timeouts of the pull-through cache (issue 11): connect, first
//! byte and stall, with the short values a config file can set.
//!
//! The upstream is a real registry (another berth on loopback). Between it
//! and the berth under test sits [`FaultProxy`], a TCP proxy written here
//! that forwards every request to the real registry and then, depending on
//! its mode, withholds a manifest answer, trickles a blob body a byte at a
//! time, or stops forwarding a blob body part-way. It never answers on its
//! own: every byte a client sees came from the registry.
//!
//! Every wait is bounded: the proxy holds a connection at most
//! [`HOLD_LIMIT`], raw clients read with timeouts, and each test asserts
//! how long its failures took.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The upstream's name in repository names (`--upstream` points it at the proxy).
const UP: &str = "registry.upstream.test";
/// The timeouts the berth under test runs with.
const FIRST_BYTE: Duration = Duration::from_secs(2);
const STALL: Duration = Duration::from_secs(3);
/// The most a proxy connection is held open without forwarding.
const HOLD_LIMIT: Duration = Duration::from_secs(60);
/// Slack for process scheduling on a loaded machine, over a timeout.
const SLACK: Duration = Duration::from_secs(4);

/// What the proxy does to the answers it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward everything.
    Healthy,
    /// Forward manifest requests, never their answers.
    WithholdManifests,
    /// Forward a blob GET's response headers, then its body one byte every `every`.
    TrickleBlobs { every: Duration },
    /// Forward a blob GET's response headers and the first `after` body
    /// bytes, then nothing.
    StallBlobs { after: usize },
}

struct ProxyState {
    mode: Mutex<Mode>,
    /// Request lines (`GET /v2/...`) seen, in order.
    requests: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// A fault-injecting TCP proxy in front of a real registry. One request
/// per connection (it asks the registry to close after each answer).
struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl FaultProxy {
    fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let state = Arc::new(ProxyState {
            mode: Mutex::new(Mode::Healthy),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = relay(client, upstream, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { addr, state }
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests starting with `prefix` (`"GET /v2/x/blobs/"`) it forwarded.
    fn count(&self, prefix: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

/// Read up to the end of an HTTP head; returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(end + 4);
            return Ok((got, rest));
        }
        if got.len() > 1 << 20 {
            return Err(std::io::Error::other("head too large"));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Keep `client` open without forwarding until it closes, the proxy
/// stops, or [`HOLD_LIMIT`].
fn hold(client: &mut TcpStream, st: &ProxyState) {
    let until = Instant::now() + HOLD_LIMIT;
    let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 1024];
    while Instant::now() < until && !st.stop.load(Ordering::Relaxed) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn relay(mut client: TcpStream, upstream: SocketAddr, st: &ProxyState) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, early_body) = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).to_string();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    st.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request_line.clone());
    let mode = *st.mode.lock().unwrap_or_else(|e| e.into_inner());
    // The same request, asking the registry to close after its answer.
    let mut forwarded = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    up.write_all(forwarded.as_bytes())?;
    up.write_all(&early_body)?;

    let is_manifest = request_line.contains("/manifests/");
    let is_blob_get = request_line.starts_with("GET ") && request_line.contains("/blobs/sha256:");
    if is_manifest && mode == Mode::WithholdManifests {
        hold(&mut client, st);
        return Ok(());
    }
    let (resp_head, mut body) = read_head(&mut up)?;
    client.write_all(&resp_head)?;
    match mode {
        Mode::TrickleBlobs { every } if is_blob_get => {
            up.read_to_end(&mut body)?;
            let until = Instant::now() + HOLD_LIMIT;
            for b in body {
                if st.stop.load(Ordering::Relaxed) || Instant::now() > until {
                    break;
                }
                client.write_all(&[b])?;
                std::thread::sleep(every);
            }
        }
        Mode::StallBlobs { after } if is_blob_get => {
            let mut sent = 0;
            let mut buf = [0u8; 16384];
            loop {
                if body.is_empty() {
                    let n = up.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
                let take = body.len().min(after - sent);
                client.write_all(&body[..take])?;
                body.drain(..take);
                sent += take;
                if sent >= after {
                    break;
                }
            }
            hold(&mut client, st);
        }
        _ => {
            client.write_all(&body)?;
            std::io::copy(&mut up, &mut client)?;
        }
    }
    Ok(())
}

/// What a raw HTTP/1.1 GET received.
#[derive(Debug)]
struct RawResp {
    status: u16,
    content_length: Option<usize>,
    body: Vec<u8>,
    elapsed: Duration,
}

impl RawResp {
    /// The whole announced body arrived.
    fn complete(&self) -> bool {
        self.content_length == Some(self.body.len())
    }
}

/// GET `path` over a fresh connection and read until the server closes it
/// (or 60 s pass), so that a truncated body shows as one.
fn raw_get(addr: SocketAddr, path: &str) -> RawResp {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect to berth");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head from berth for {path}: {got:?}"));
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    RawResp {
        status,
        content_length,
        body: got[end + 4..].to_vec(),
        elapsed,
    }
}

/// The berth under test, its upstream (a berth) and the proxy between them.
struct Setup {
    upstream: Server,
    proxy: FaultProxy,
    berth: Server,
    _config: tempfile::TempDir,
}

fn setup(extra: &[&str]) -> Setup {
    let upstream = Server::start();
    let proxy = FaultProxy::start(upstream.addr());
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "upstream_connect_timeout = \"2s\"\n\
             upstream_first_byte_timeout = \"{}s\"\n\
             upstream_stall_timeout = \"{}s\"\n",
            FIRST_BYTE.as_secs(),
            STALL.as_secs()
        ),
    )
    .expect("write berth.toml");
    let mut args = vec![
        format!("--config={}", config.display()),
        format!("--upstream={UP}={}", proxy.url()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let berth = Server::start_with(&args);
    Setup {
        upstream,
        proxy,
        berth,
        _config: dir,
    }
}

fn blob_path(digest: &str) -> String {
    format!("/v2/{UP}/team/app/blobs/{digest}")
}

/// A blob of a trickling upstream: the client being streamed is cut off
/// within the stall timeout (a truncated body, never a complete-looking
/// one), nothing is cached, and a request once the upstream is healthy
/// fetches it afresh and succeeds.
#[test]
fn a_trickling_upstream_blob_fails_within_the_stall_timeout() {
    let s = setup(&[]);
    let bytes = pseudo_random(200_000, 1101);
    let digest = push_blob(&s.upstream, "team/app", &bytes);
    s.proxy.set(Mode::TrickleBlobs {
        every: Duration::from_secs(2),
    });
    let r = raw_get(s.berth.addr(), &blob_path(&digest));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_length, Some(bytes.len()));
    assert!(
        !r.complete(),
        "a trickled body must not look complete: {} bytes",
        r.body.len()
    );
    assert!(
        r.elapsed < STALL + SLACK,
        "the trickle held the client {:?} (stall timeout {STALL:?})",
        r.elapsed
    );
    assert!(!s.berth.holds_blob(&digest), "a trickled blob was cached");
    assert!(
        s.berth.upload_files().is_empty(),
        "the abandoned fill left {:?}",
        s.berth.upload_files()
    );
    assert!(s.berth.log().contains("stall"), "{}", s.berth.log());
    let first = r.elapsed;

    s.proxy.set(Mode::Healthy);
    let r = raw_get(s.berth.addr(), &blob_path(&digest));
    assert_eq!(r.status, 200);
    assert!(r.complete(), "{r:?}");
    assert_eq!(sha256(&r.body), digest);
    assert!(s.berth.holds_blob(&digest));
    let gets = s.proxy.count(&format!("GET /v2/team/app/blobs/{digest}"));
    assert_eq!(gets, 2, "one trickled fill, one fresh fill");
    eprintln!("trickle: first client cut off after {first:?} (stall timeout {STALL:?})");
}

/// A manifest the upstream never answers: a 502 in the spec's error format
/// within the first-byte timeout, saying the upstream did not answer in
/// time; the next request asks again and succeeds. Once the tag is cached
/// (and past its TTL), the same silence serves the cached copy.
#[test]
fn an_unanswered_manifest_fails_within_the_first_byte_timeout() {
    let s = setup(&["--tag-ttl=1s"]);
    let (digest, manifest) = push_small_image(&s.upstream, "team/app", "v1", 1102);
    let url = format!("{}/v2/{UP}/team/app/manifests/v1", s.berth.url());
    s.proxy.set(Mode::WithholdManifests);
    let started = Instant::now();
    let r = curl("GET", &url).header("Accept", OCI_MANIFEST).send();
    let elapsed = started.elapsed();
    r.expect_error(502, "UNAVAILABLE");
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("did not answer in time"), "{message}");
    assert!(
        elapsed >= FIRST_BYTE - Duration::from_millis(100) && elapsed < FIRST_BYTE + SLACK,
        "the 502 came after {elapsed:?} (first-byte timeout {FIRST_BYTE:?})"
    );
    // By digest too.
    let started = Instant::now();
    curl(
        "GET",
        &format!("{}/v2/{UP}/team/app/manifests/{digest}", s.berth.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send()
    .expect_error(502, "UNAVAILABLE");
    assert!(started.elapsed() < FIRST_BYTE + SLACK);

    s.proxy.set(Mode::Healthy);
    let r = curl("GET", &url).header("Accept", OCI_MANIFEST).send();
    r.expect_status(200);
    assert_eq!(r.body, manifest);
    assert!(s.proxy.count("GET /v2/team/app/manifests/v1") >= 2);

    // Cached and past its TTL: the silent upstream costs a bounded wait
    // and the cached copy is served.
    std::thread::sleep(Duration::from_millis(1200));
    s.proxy.set(Mode::WithholdManifests);
    let started = Instant::now();
    let r = curl("GET", &url).header("Accept", OCI_MANIFEST).send();
    r.expect_status(200);
    assert_eq!(r.body, manifest);
    assert!(
        started.elapsed() < FIRST_BYTE + SLACK,
        "{:?}",
        started.elapsed()
    );
    eprintln!("unanswered manifest: 502 after {elapsed:?}");
}

/// A blob whose upstream stops sending part-way, with several clients
/// following the one fill: every one of them is cut off promptly, the
/// upstream saw one GET, nothing is cached, and the next request starts a
/// fresh fill that succeeds.
#[test]
fn a_stalled_blob_ends_every_follower_and_the_next_request_retries() {
    let s = setup(&[]);
    let bytes = pseudo_random(2 << 20, 1103);
    let digest = push_blob(&s.upstream, "team/app", &bytes);
    s.proxy.set(Mode::StallBlobs { after: 300_000 });
    let addr = s.berth.addr();
    let path = blob_path(&digest);
    let started = Instant::now();
    let followers: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || raw_get(addr, &path))
        })
        .collect();
    let results: Vec<RawResp> = followers
        .into_iter()
        .map(|t| t.join().expect("follower thread"))
        .collect();
    let all_done = started.elapsed();
    for r in &results {
        // Headers went out before the stall: a truncated 200, or (for a
        // client that arrived after the failure) a prompt error answer.
        assert!(
            (r.status == 200 && !r.complete()) || r.status == 502,
            "status {} with {} of {:?} bytes",
            r.status,
            r.body.len(),
            r.content_length
        );
        assert!(r.body.len() < bytes.len());
    }
    assert!(
        all_done < STALL + SLACK,
        "followers were held {all_done:?} (stall timeout {STALL:?})"
    );
    let blob_gets = format!("GET /v2/team/app/blobs/{digest}");
    assert_eq!(
        s.proxy.count(&blob_gets),
        1,
        "the followers shared one fill"
    );
    assert!(!s.berth.holds_blob(&digest));
    assert!(s.berth.upload_files().is_empty());

    s.proxy.set(Mode::Healthy);
    let r = raw_get(addr, &path);
    assert_eq!(r.status, 200);
    assert!(r.complete(), "{r:?}");
    assert_eq!(sha256(&r.body), digest);
    assert_eq!(s.proxy.count(&blob_gets), 2, "the retry was a fresh fill");
    assert!(s.berth.holds_blob(&digest));
    eprintln!("stalled blob: 4 followers cut off within {all_done:?}");
}
