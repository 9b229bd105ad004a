//! berth under hostile and careless clients (issue 11): half-open sockets
//! under a small open-file limit, downloaders that never read, uploaders
//! that stop sending, idle keep-alives, a table full of busy connections,
//! and SIGTERM with all of those in flight. Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// The memory budget of the tests below. What clients make the server
/// hold (its RSS over what it held before they came) stays under it: the
/// buffers and each connection's own state (`connection_memory`) are
/// charged to it. Measured: 49-50 MiB for 1,000 non-reading downloads and
/// 36 MiB for 300 stalled uploads (debug build), 59 MiB for the downloads
/// on a release build.
const BUDGET: u64 = 64 << 20;

/// A server with `[limits]` set to `limits` (TOML lines).
fn server_with_limits(limits: &str, nofile: Option<u64>) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, format!("[limits]\n{limits}\n")).expect("write config");
    let extra = [format!("--config={}", config.display())];
    let server = match nofile {
        Some(n) => Server::start_with_nofile(&extra, n),
        None => Server::start_with(&extra),
    };
    (server, dir)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    s
}

/// Whether the server has closed `s` (EOF or reset; a read that times out
/// means it is still open).
fn closed_by_server(mut s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Sockets `pid` holds open (its listener and client connections).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Wait (bounded) until `pid` holds at most `n` sockets; whether it did.
fn sockets_fall_to(pid: u32, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if open_sockets(pid) <= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    open_sockets(pid) <= n
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A pull of a small image by curl: manifest then config and layer blob.
fn pull(server: &Server, repo: &str, manifest: &[u8]) {
    let base = server.url();
    curl("GET", &format!("{base}/v2/{repo}/manifests/v1"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .expect_status(200);
    let m: serde_json::Value = serde_json::from_slice(manifest).expect("manifest json");
    let mut digests = vec![m["config"]["digest"].as_str().expect("config").to_string()];
    for l in m["layers"].as_array().expect("layers") {
        digests.push(l["digest"].as_str().expect("digest").to_string());
    }
    for d in digests {
        let r = curl("GET", &format!("{base}/v2/{repo}/blobs/{d}")).send();
        r.expect_status(200);
        assert_eq!(sha256(&r.body), d);
    }
}

#[test]
fn half_open_connections_under_a_small_fd_limit_neither_starve_pulls_nor_stay() {
    require_tool("curl");
    let (server, _config) = server_with_limits("header_timeout = \"4s\"", Some(1024));
    let (_, manifest) = push_small_image(&server, "team/app", "v1", 1);
    let addr = server.addr();

    // 1,500 clients that send half a request line and stop.
    let mut half_open = Vec::new();
    for _ in 0..1500 {
        let mut s = connect(addr);
        s.write_all(b"GET /v2/team/app/manif")
            .expect("half a request line");
        half_open.push(s);
    }
    let t = Instant::now();
    pull(&server, "team/app", &manifest);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a pull took {took:?} among 1,500 half-open sockets"
    );

    // Within the header timeout (and a margin), every one of them is closed.
    std::thread::sleep(Duration::from_secs(5));
    let open = half_open.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(
        open, 0,
        "half-open connections still open after the header timeout"
    );
    let log = server.log();
    assert!(
        !log.contains("Too many open files"),
        "berth ran out of file descriptors:\n{log}"
    );
    pull(&server, "team/app", &manifest);
}

#[test]
fn downloaders_that_never_read_stay_within_the_memory_budget_and_are_closed() {
    require_tool("curl");
    let (server, _config) =
        server_with_limits("send_timeout = \"4s\"\nmemory_budget = \"64MiB\"", None);
    let (_, manifest) = push_small_image(&server, "team/app", "v1", 2);
    let big = pseudo_random(8 << 20, 3);
    let digest = push_blob(&server, "team/big", &big);
    let addr = server.addr();
    let before = rss(server.pid());
    let sockets_before = open_sockets(server.pid());

    let request = format!("GET /v2/team/big/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut stalled = Vec::new();
    for _ in 0..1000 {
        let s = connect(addr);
        // The smallest receive buffer: the server's writes stall at once.
        let sock = socket2::SockRef::from(&s);
        let _ = sock.set_recv_buffer_size(4096);
        (&s).write_all(request.as_bytes()).expect("send request");
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_secs(2));
    // The buffers and each connection's own state (hyper's buffers, its
    // task, timers) are the budget's. Without the budget these downloads
    // held 977 MiB.
    let held = rss(server.pid()).saturating_sub(before);
    eprintln!("1,000 non-reading downloads hold {} KiB", held >> 10);
    assert!(
        held < BUDGET,
        "1,000 non-reading downloads hold {} MiB (budget 64 MiB)",
        held >> 20
    );
    // A normal client still pulls. When the stalled clients hold the whole
    // budget its chunks wait until the send timeout frees theirs: memory
    // stays bounded, and the wait is bounded by that timeout (4 s here).
    let t = Instant::now();
    pull(&server, "team/app", &manifest);
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "pull took {:?}",
        t.elapsed()
    );

    // After the send timeout they are closed (seen from the server: a
    // client would have to read to see the close, and reading is progress).
    // Those whose chunks waited for the budget stalled later, when others'
    // timeouts freed it: a download waiting for memory has nothing to send
    // and is not timed out. The buffers' part of the 64 MiB is 32 MiB (the
    // connections' part is the other half), about what 1,000 downloads
    // need at the smallest chunks (the first ones took larger ones), so
    // allow five rounds of the timeout.
    assert!(
        sockets_fall_to(server.pid(), sockets_before, Duration::from_secs(24)),
        "non-reading downloads still open after the send timeout: {} sockets",
        open_sockets(server.pid())
    );
    drop(stalled);
    let r = curl(
        "GET",
        &format!("{}/v2/team/big/blobs/{digest}", server.url()),
    )
    .send();
    r.expect_status(200);
    assert_eq!(sha256(&r.body), digest);
}

/// Start an upload session; its path.
fn start_upload(server: &Server, repo: &str) -> String {
    let base = server.url();
    let r = curl("POST", &format!("{base}/v2/{repo}/blobs/uploads/")).send();
    r.expect_status(202);
    r.location(&base)
}

/// The bytes an upload session holds, from its status (`Range: 0-N`).
fn upload_offset(location: &str) -> u64 {
    let r = curl("GET", location).send();
    r.expect_status(204);
    r.header("range")
        .and_then(|v| v.rsplit('-').next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |end| end + 1)
}

/// Send a PATCH declaring `declared` bytes but only `sent` of them.
fn stalled_patch(addr: SocketAddr, location: &str, declared: usize, sent: &[u8]) -> TcpStream {
    let path = location
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .expect("upload path");
    let mut s = connect(addr);
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("PATCH head");
    s.write_all(sent).expect("PATCH part of the body");
    s
}

#[test]
fn uploads_that_stop_sending_are_ended_and_keep_what_arrived() {
    require_tool("curl");
    let (server, _config) =
        server_with_limits("body_timeout = \"3s\"\nmemory_budget = \"64MiB\"", None);
    let addr = server.addr();
    let before = rss(server.pid());
    let part = pseudo_random(256 << 10, 4);
    let mut sessions = Vec::new();
    for _ in 0..300 {
        let location = start_upload(&server, "team/up");
        let s = stalled_patch(addr, &location, 10 << 20, &part);
        sessions.push((location, s));
    }
    std::thread::sleep(Duration::from_secs(1));
    let held = rss(server.pid()).saturating_sub(before);
    eprintln!("300 stalled uploads hold {} KiB", held >> 10);
    assert!(
        held < BUDGET,
        "300 stalled uploads hold {} MiB (budget 64 MiB)",
        held >> 20
    );
    // Past the body timeout (and the budget's queue) every one is answered
    // or closed, and each session holds the bytes that arrived.
    std::thread::sleep(Duration::from_secs(8));
    let open = sessions
        .iter()
        .filter(|(_, s)| !closed_by_server(s))
        .count();
    assert_eq!(open, 0, "stalled uploads still open after the body timeout");
    for (location, _) in sessions.iter().take(20) {
        assert_eq!(upload_offset(location), part.len() as u64, "{location}");
    }
    // Such a session resumes: the rest, then the digest.
    let (location, _) = &sessions[0];
    let rest = pseudo_random(1000, 5);
    let mut whole = part.clone();
    whole.extend_from_slice(&rest);
    let digest = sha256(&whole);
    curl("PUT", &with_query(location, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            &format!("{}-{}", part.len(), whole.len() - 1),
        )
        .body(rest)
        .send()
        .expect_status(201);
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let (server, _config) = server_with_limits("idle_timeout = \"2s\"", None);
    let addr = server.addr();
    let mut s = connect(addr);
    s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("request");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Still open well within the idle timeout, closed after it.
    std::thread::sleep(Duration::from_millis(800));
    assert!(!closed_by_server(&s), "closed before the idle timeout");
    std::thread::sleep(Duration::from_secs(2));
    assert!(closed_by_server(&s), "idle connection still open");
}

#[test]
fn a_table_of_busy_connections_answers_newcomers_503() {
    let (server, _config) = server_with_limits("max_connections = 4\nbody_timeout = \"20s\"", None);
    let addr = server.addr();
    let mut busy = Vec::new();
    for _ in 0..4 {
        let location = start_upload(&server, "team/busy");
        busy.push(stalled_patch(addr, &location, 1 << 20, b"x"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut s = connect(addr);
    let _ = s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("UNAVAILABLE"), "{text}");
    // One finishes (its client goes away): room again.
    drop(busy.pop());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(raw_status(addr, "GET", "/v2/"), Some(200));
}

/// The connections' part of the memory budget bounds them as the table
/// does: a 64 MiB budget at 8 MiB a connection holds four (half of it; the
/// other half leaves the stalled uploads' buffers room); a fifth sheds an
/// idle one, and with none idle it is answered 503.
#[test]
fn the_memory_budget_bounds_connections_too() {
    let (server, _config) = server_with_limits(
        "memory_budget = \"64MiB\"\nconnection_memory = \"8MiB\"\nbody_timeout = \"20s\"",
        None,
    );
    let addr = server.addr();
    // An idle connection is shed for a newcomer.
    let idle = connect(addr);
    std::thread::sleep(Duration::from_millis(100));
    let mut busy = Vec::new();
    for _ in 0..4 {
        let location = start_upload(&server, "team/busy");
        busy.push(stalled_patch(addr, &location, 1 << 20, b"x"));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(closed_by_server(&idle), "the idle connection was kept");
    let mut s = connect(addr);
    let _ = s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(server.log().contains("the memory budget is reached"));
    drop(busy.pop());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(raw_status(addr, "GET", "/v2/"), Some(200));
}

#[test]
fn sigterm_with_stalled_requests_exits_within_the_grace_period() {
    require_tool("curl");
    let (mut server, _config) = server_with_limits(
        "shutdown_grace = \"3s\"\nbody_timeout = \"60s\"\nsend_timeout = \"60s\"",
        None,
    );
    let addr = server.addr();
    let big = pseudo_random(8 << 20, 6);
    let digest = push_blob(&server, "team/big", &big);
    // An upload with acknowledged bytes, then a PATCH that stalls.
    let location = start_upload(&server, "team/up");
    let first = pseudo_random(1 << 20, 7);
    curl("PATCH", &location)
        .header("Content-Type", "application/octet-stream")
        .body(first.clone())
        .send()
        .expect_status(202);
    let _stalled_up = stalled_patch(addr, &location, 4 << 20, &pseudo_random(4096, 8));
    let down = connect(addr);
    socket2::SockRef::from(&down)
        .set_recv_buffer_size(4096)
        .ok();
    (&down)
        .write_all(
            format!("GET /v2/team/big/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .expect("download request");
    std::thread::sleep(Duration::from_millis(500));

    let root = server.root.clone();
    let t = Instant::now();
    let status = server.terminate(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} (grace 3 s)"
    );
    assert!(status.success() || status.code().is_some(), "{status}");

    // The acknowledged bytes are there after a restart.
    let again = Server::start_on(&root);
    let location = location.replace(&format!("{addr}"), &again.host());
    assert!(upload_offset(&location) >= first.len() as u64);
    drop(down);
}

#[test]
fn a_client_over_its_request_rate_gets_429_with_retry_after() {
    require_tool("curl");
    let (server, _config) = server_with_limits("max_requests_per_client = 5", None);
    let addr = server.addr();
    // The readiness probe took from the bucket: let it fill again.
    std::thread::sleep(Duration::from_millis(1300));
    // Eight requests within milliseconds: a burst of five, then refused.
    let statuses: Vec<Option<u16>> = (0..8).map(|_| raw_status(addr, "GET", "/v2/")).collect();
    assert_eq!(&statuses[..5], &[Some(200); 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[Some(429); 3], "{statuses:?}");
    let r = curl("GET", &format!("{}/v2/", server.url())).send();
    r.expect_error(429, "TOOMANYREQUESTS");
    assert!(r.header("retry-after").is_some(), "{}", r.describe());
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(raw_status(addr, "GET", "/v2/"), Some(200));
}
