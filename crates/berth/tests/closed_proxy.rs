//! The closed proxy and blob isolation, black-box:
//!
//! - a host named in a repository path or `?ns=` that is neither a known
//!   public registry, nor configured, nor allowed is NAME_UNKNOWN and never
//!   connected to: plain TCP listeners on other loopback ports count every
//!   connection they accept, and the error body is byte for byte the same
//!   for an open, a closed and a silent port;
//! - redirects from an upstream (nginx `return 307`) are not followed to
//!   plain http or to private addresses other than the upstream's own host;
//! - a token realm gets no credentials over plain http (unless the upstream
//!   is configured insecure) and is not contacted at all on another private
//!   address, unless the upstream's `trusted_hosts` names it;
//! - configured upstream credentials do not follow a redirect to another
//!   port and never appear in berth's log (at trace level); without an
//!   `[auth]` table an upstream with credentials is warned about at start;
//! - a blob pushed to one repository is not served through a mirror name
//!   unless the mirror's upstream (another berth on loopback) confirms it
//!   has it, and such reads never add repositories to the catalog.
//!
//! Everything listens on 127.0.0.1 or 127.0.0.2; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How a counting listener answers what it accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Reads the request head, answers with `body` as a 200 and closes.
    Http(&'static str),
    /// Bytes that are not HTTP.
    Garbage,
    /// Accepts and never answers (until stopped).
    Silent,
}

/// A plain TCP listener on a loopback address, counting the connections it
/// accepts and keeping each request head it read. Serves for at most 60 s
/// and 100 connections; stops when dropped.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counting {
    fn start(ip: &str, answer: Answer) -> Counting {
        let listener = TcpListener::bind((ip, 0)).expect("bind a counting listener");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, h, s) = (accepted.clone(), heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline && held.len() < 100 {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                if answer == Answer::Silent {
                    held.push(conn);
                    continue;
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                h.lock()
                    .expect("heads")
                    .push(String::from_utf8_lossy(&got).into_owned());
                let reply = match answer {
                    Answer::Http(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    _ => "SSH-2.0-OpenSSH_9.2\r\n\r\nnot http at all\r\n".to_string(),
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        Counting {
            addr,
            accepted,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted, after letting late ones land.
    fn count(&self) -> usize {
        std::thread::sleep(Duration::from_millis(300));
        self.accepted.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        self.heads.lock().expect("heads").clone()
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port that refuses connections while this value lives: bound,
/// never listening, so no other test can start a server on it meanwhile.
struct ClosedPort(socket2::Socket);

impl ClosedPort {
    fn new() -> ClosedPort {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        s.bind(&addr.into()).expect("bind");
        ClosedPort(s)
    }

    fn port(&self) -> u16 {
        self.0
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("local addr")
            .port()
    }
}

fn catalog(server: &Server) -> Vec<String> {
    let r = curl("GET", &format!("{}/v2/_catalog", server.url())).send();
    r.expect_status(200);
    r.json()["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect()
}

/// The requests that name a host: path-prefix and `?ns=` forms, manifests,
/// blobs (GET and HEAD) and tags.
fn probes(host: &str) -> Vec<(&'static str, String)> {
    let d = sha256(b"anything");
    vec![
        ("GET", format!("/v2/{host}/x/manifests/1")),
        ("HEAD", format!("/v2/{host}/x/manifests/1")),
        ("GET", format!("/v2/{host}/x/manifests/{d}")),
        ("GET", format!("/v2/{host}/x/blobs/{d}")),
        ("HEAD", format!("/v2/{host}/x/blobs/{d}")),
        ("GET", format!("/v2/x/manifests/1?ns={host}")),
        ("GET", format!("/v2/library/x/blobs/{d}?ns={host}")),
    ]
}

/// Names of hosts outside the list make no connection, whatever the port's
/// state, and get the same NAME_UNKNOWN body; nothing joins the catalog.
/// Allowed with `--allow-upstream`, the same listener does see berth (the
/// count can move), and an open and a closed port still give one text.
#[test]
fn hosts_outside_the_list_are_never_contacted() {
    let open = Counting::start("127.0.0.1", Answer::Garbage);
    let silent = Counting::start("127.0.0.1", Answer::Silent);
    let closed_port = ClosedPort::new();
    let closed = closed_port.port();
    let berth = Server::start();
    let mut bodies: Vec<(String, String, String)> = Vec::new();
    for port in [open.port(), silent.port(), closed] {
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            for (method, path) in probes(&host) {
                let r = curl(method, &format!("{}{path}", berth.url())).send();
                assert_eq!(r.status, 404, "{}", r.describe());
                if method == "GET" {
                    assert_eq!(r.error_codes(), vec!["NAME_UNKNOWN"], "{}", r.describe());
                    bodies.push((path.clone(), r.body_str(), host.clone()));
                }
            }
        }
    }
    for other in ["10.1.2.3", "169.254.169.254", "metadata.google.internal"] {
        let r = curl("GET", &format!("{}/v2/{other}/x/manifests/1", berth.url())).send();
        r.expect_error(404, "NAME_UNKNOWN");
        bodies.push((other.to_string(), r.body_str(), other.to_string()));
    }
    let first = bodies[0].1.clone();
    for (what, body, host) in &bodies {
        assert_eq!(body, &first, "{what}: the error text differs for {host}");
        assert!(
            !body.contains(host.as_str()),
            "{what}: names the host: {body}"
        );
    }
    assert_eq!(catalog(&berth), Vec::<String>::new());
    // What is pushed under such a name (an air-gap preload) is served from
    // berth alone; what it lacks gets the spec's code.
    let preload = format!("127.0.0.1:{}/team/app", open.port());
    let blob = pseudo_random(2048, 3);
    let d = push_blob(&berth, &preload, &blob);
    let r = curl("GET", &format!("{}/v2/{preload}/blobs/{d}", berth.url())).send();
    r.expect_status(200);
    assert_eq!(r.body, blob);
    curl("GET", &format!("{}/v2/{preload}/manifests/v9", berth.url()))
        .send()
        .expect_error(404, "MANIFEST_UNKNOWN");
    curl(
        "GET",
        &format!("{}/v2/{preload}/blobs/{}", berth.url(), sha256(b"absent")),
    )
    .send()
    .expect_error(404, "BLOB_UNKNOWN");
    assert_eq!(open.count(), 0, "berth connected to the open port");
    assert_eq!(silent.count(), 0, "berth connected to the silent port");

    // Allowed: now berth does connect, and the client still learns nothing
    // of the port's state.
    let allowed = Server::start_with(&["--allow-upstream=127.0.0.1:*".into()]);
    let r_open = curl(
        "GET",
        &format!(
            "{}/v2/127.0.0.1:{}/x/manifests/1",
            allowed.url(),
            open.port()
        ),
    )
    .send();
    let r_closed = curl(
        "GET",
        &format!("{}/v2/127.0.0.1:{closed}/x/manifests/1", allowed.url()),
    )
    .send();
    assert!(open.count() >= 1, "the allowed upstream was not contacted");
    assert_eq!(r_open.status, 502, "{}", r_open.describe());
    assert_eq!(r_closed.status, 502, "{}", r_closed.describe());
    assert_eq!(
        r_open.body_str(),
        r_closed.body_str(),
        "open and closed ports give different texts"
    );
    // localhost is not 127.0.0.1:* and stays closed.
    curl(
        "GET",
        &format!(
            "{}/v2/localhost:{}/x/manifests/1",
            allowed.url(),
            open.port()
        ),
    )
    .send()
    .expect_error(404, "NAME_UNKNOWN");
}

// ---------------------------------------------------------------------------
// nginx in front of an upstream

/// An upstream's blob GETs answered with 307s: to plain http on another
/// loopback address, to https on another loopback address, and to the
/// upstream's own host on another port (a real berth holding the blob).
/// Only the last is followed; the listener on 127.0.0.2 sees nothing.
#[test]
fn redirects_to_private_addresses_are_refused() {
    let origin = Server::start();
    let blob = pseudo_random(4096, 31);
    let digest = push_blob(&origin, "team/app", &blob);
    let trap = Counting::start("127.0.0.2", Answer::Http("{}"));
    let t = trap.port();
    // A name (not an address) that resolves to loopback: refused on what
    // it resolves to.
    let named = Counting::start("127.0.0.1", Answer::Http("{}"));
    let n = named.port();
    let o = origin.port;
    let nginx = Nginx::start(&format!(
        "    location = /nginx-ready {{ return 200 'ok'; }}\n\
         location ~ ^/v2/plain/ {{ return 307 http://127.0.0.2:{t}$request_uri; }}\n\
         location ~ ^/v2/tls/ {{ return 307 https://127.0.0.2:{t}$request_uri; }}\n\
         location ~ ^/v2/name/ {{ return 307 https://localhost:{n}$request_uri; }}\n\
         location ~ ^/v2/own/(.*)$ {{ return 307 http://127.0.0.1:{o}/v2/team/$1; }}\n\
         location / {{ return 404; }}\n"
    ));
    let berth = Server::start_with(&[format!("--upstream=up.test={}", nginx.url())]);
    for prefix in ["plain", "tls", "name"] {
        let r = curl(
            "GET",
            &format!("{}/v2/up.test/{prefix}/app/blobs/{digest}", berth.url()),
        )
        .send();
        assert_eq!(r.status, 502, "{prefix}: {}", r.describe());
    }
    assert_eq!(trap.count(), 0, "berth followed a redirect to 127.0.0.2");
    assert_eq!(
        named.count(),
        0,
        "berth followed a redirect to a name resolving to loopback"
    );
    assert!(
        berth.log().contains("refused an upstream redirect"),
        "{}",
        berth.log()
    );
    // The upstream's own host is what the operator configured: followed.
    let r = curl(
        "GET",
        &format!("{}/v2/up.test/own/app/blobs/{digest}", berth.url()),
    )
    .send();
    r.expect_status(200);
    assert_eq!(r.body, blob);
    let log = nginx.access_log();
    assert_eq!(log.matches("/v2/plain/app/blobs/").count(), 1, "{log}");
}

/// A token realm on another port of the upstream's host, over plain http:
/// asked anonymously (its listener sees no Authorization), unless the
/// upstream is configured insecure, when the configured Basic credentials
/// go. A realm on another private address is not contacted at all.
#[test]
fn plain_http_realms_get_no_credentials() {
    let realm = Counting::start("127.0.0.1", Answer::Http(r#"{"token":"t0ken"}"#));
    let far = Counting::start("127.0.0.2", Answer::Http(r#"{"token":"t0ken"}"#));
    let (r, f) = (realm.port(), far.port());
    let nginx = Nginx::start(&format!(
        "    location = /nginx-ready {{ return 200 'ok'; }}\n\
         location /v2/far/ {{ add_header WWW-Authenticate 'Bearer realm=\"https://127.0.0.2:{f}/token\",service=\"up\"' always; return 401; }}\n\
         location /v2/ {{ add_header WWW-Authenticate 'Bearer realm=\"http://127.0.0.1:{r}/token\",service=\"up\"' always; return 401; }}\n"
    ));
    let dir = tempfile::tempdir().expect("temp");
    let config = |insecure: bool| {
        let path = dir.path().join(format!("berth-{insecure}.toml"));
        std::fs::write(
            &path,
            format!(
                "[upstreams.\"up.test\"]\nurl = \"{}\"\nusername = \"robot\"\npassword = \"s3cret-pass\"\ninsecure = {insecure}\n",
                nginx.url()
            ),
        )
        .expect("write config");
        path
    };
    let basic = format!("Basic {}", b64("robot:s3cret-pass"));

    let berth = Server::start_with(&[format!("--config={}", config(false).display())]);
    let resp = curl(
        "GET",
        &format!("{}/v2/up.test/team/app/manifests/v1", berth.url()),
    )
    .send();
    assert_eq!(resp.status, 502, "{}", resp.describe());
    let heads = realm.heads();
    assert!(!heads.is_empty(), "the realm was not asked at all");
    for h in &heads {
        assert!(
            !h.to_ascii_lowercase().contains("authorization:"),
            "credentials went to a plain-http realm:\n{h}"
        );
    }
    // The registry itself never got the password either: only the token.
    let log = nginx.access_log();
    assert!(!log.contains(&basic), "{log}");
    assert!(log.contains("auth=[Bearer t0ken]"), "{log}");

    // Another private address: refused before any connection.
    let resp = curl(
        "GET",
        &format!("{}/v2/up.test/far/app/manifests/v1", berth.url()),
    )
    .send();
    assert_eq!(resp.status, 502, "{}", resp.describe());
    assert_eq!(far.count(), 0, "the realm on 127.0.0.2 was contacted");

    // Marked insecure, the operator allows credentials in the clear.
    let before = realm.heads().len();
    let insecure = Server::start_with(&[format!("--config={}", config(true).display())]);
    curl(
        "GET",
        &format!("{}/v2/up.test/team/app/manifests/v1", insecure.url()),
    )
    .send();
    let heads = realm.heads();
    assert!(
        heads[before..]
            .iter()
            .any(|h| h.contains(&format!("uthorization: {basic}"))),
        "insecure upstream: the realm did not get the credentials: {:?}",
        &heads[before..]
    );

    // A token service the operator names as the upstream's own
    // (`trusted_hosts`, as GitLab's on another host) is contacted even on
    // a private address. (It speaks plain HTTP to berth's https, so the
    // handshake fails: no credentials reach it either way.)
    let trusted = dir.path().join("berth-trusted.toml");
    std::fs::write(
        &trusted,
        format!(
            "[upstreams.\"up.test\"]\nurl = \"{}\"\nusername = \"robot\"\npassword = \"s3cret-pass\"\ntrusted_hosts = [\"127.0.0.2\"]\n",
            nginx.url()
        ),
    )
    .expect("write config");
    let with_trusted = Server::start_with(&[format!("--config={}", trusted.display())]);
    let resp = curl(
        "GET",
        &format!("{}/v2/up.test/far/app/manifests/v1", with_trusted.url()),
    )
    .send();
    assert_eq!(resp.status, 502, "{}", resp.describe());
    assert!(
        far.count() >= 1,
        "the trusted realm on 127.0.0.2 was not contacted"
    );
    for h in far.heads() {
        assert!(
            !h.contains(&basic),
            "credentials reached a realm over a failed handshake:\n{h}"
        );
    }
}

/// An upstream configured with credentials (nginx demanding them as
/// Basic) answers a blob GET with a 307 to another port of its own host (a
/// storage node: a counting listener serving the blob). berth follows it
/// (its own host over http is allowed: the upstream is configured plain
/// http) but the listener gets no Authorization, while nginx did get the
/// Basic credentials; berth's log, at trace level, holds neither the
/// password nor its Basic form.
#[test]
fn credentials_do_not_follow_a_redirect_to_another_port() {
    const BLOB: &str = r#"{"stored":"behind a redirect"}"#;
    let digest = sha256(BLOB.as_bytes());
    let store = Counting::start("127.0.0.1", Answer::Http(BLOB));
    let s = store.port();
    let password = "r3direct-Pass";
    let encoded = b64(&format!("robot:{password}"));
    let basic = format!("Basic {encoded}");
    let demand = format!(
        "if ($http_authorization != \"{basic}\") {{ add_header WWW-Authenticate 'Basic realm=\"up\"' always; return 401; }}"
    );
    let nginx = Nginx::start(&format!(
        "    location = /nginx-ready {{ return 200 'ok'; }}\n\
         location ~ ^/v2/.+/blobs/ {{ {demand} return 307 http://127.0.0.1:{s}/store$request_uri; }}\n\
         location /v2/ {{ {demand} return 404; }}\n"
    ));
    let dir = tempfile::tempdir().expect("temp");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.\"up.test\"]\nurl = \"{}\"\nusername = \"robot\"\npassword = \"{password}\"\n",
            nginx.url()
        ),
    )
    .expect("write config");
    let berth = Server::start_with_log(&[format!("--config={}", config.display())], "trace");

    let r = curl(
        "GET",
        &format!("{}/v2/up.test/team/app/blobs/{digest}", berth.url()),
    )
    .send();
    r.expect_status(200);
    assert_eq!(r.body, BLOB.as_bytes());

    // The redirect was followed, without the credentials...
    let heads = store.heads();
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with(&format!("GET /store/v2/team/app/blobs/{digest} "))),
        "the storage node was not asked for the blob: {heads:?}"
    );
    for h in &heads {
        assert!(
            !h.to_ascii_lowercase().contains("authorization:"),
            "an Authorization header followed the redirect to another port:\n{h}"
        );
        assert!(
            !h.contains(&encoded),
            "the credentials reached the storage node:\n{h}"
        );
    }
    // ...which the registry itself did get, on the request it redirected.
    let access = nginx.access_log();
    assert!(
        access
            .lines()
            .any(|l| l.starts_with("GET /v2/team/app/blobs/")
                && l.contains(&format!("auth=[{basic}]"))),
        "{access}"
    );

    // Nothing secret in berth's log, at the most verbose level.
    let log = berth.log();
    assert!(
        log.contains("TRACE"),
        "the log is not at trace level:\n{log}"
    );
    for secret in [password, encoded.as_str(), basic.as_str()] {
        assert!(!log.contains(secret), "the log contains {secret:?}");
    }
}

/// Without an `[auth]` table, each upstream with credentials (username and
/// password, or from an auth file) is named in a warning at start: anyone
/// who reaches berth pulls what they reach. Not for an anonymous upstream,
/// not with an `[auth]` table; never with the credentials in the log.
#[test]
fn upstream_credentials_without_access_control_are_warned_about() {
    let dir = tempfile::tempdir().expect("temp");
    let closed = ClosedPort::new();
    let nowhere = format!("http://127.0.0.1:{}", closed.port());
    let auth_file = dir.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"files.test":{{"auth":"{}"}}}}}}"#,
            b64("filer:f1le-Pass")
        ),
    )
    .expect("write auth.json");
    let upstreams = format!(
        "[upstreams.\"up.test\"]\nurl = \"{nowhere}\"\nusername = \"robot\"\npassword = \"w4rn-Pass\"\n\
         [upstreams.\"files.test\"]\nurl = \"{nowhere}\"\nauth_file = \"{}\"\n\
         [upstreams.\"anon.test\"]\nurl = \"{nowhere}\"\n",
        auth_file.display()
    );
    let open = dir.path().join("open.toml");
    std::fs::write(&open, &upstreams).expect("write config");
    let berth = Server::start_with_log(&[format!("--config={}", open.display())], "trace");
    let log = berth.log();
    let warned = |host: &str| {
        log.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&format!("upstream {host} "))
                && l.contains("no [auth] table")
                && l.contains("anyone who reaches berth")
        })
    };
    assert!(warned("up.test"), "no warning for up.test:\n{log}");
    assert!(warned("files.test"), "no warning for files.test:\n{log}");
    assert!(
        !warned("anon.test"),
        "an anonymous upstream was warned about:\n{log}"
    );
    for secret in [
        "w4rn-Pass".to_string(),
        "f1le-Pass".to_string(),
        b64("robot:w4rn-Pass"),
        b64("filer:f1le-Pass"),
    ] {
        assert!(!log.contains(&secret), "the log contains {secret:?}");
    }

    // With access control on, the same upstreams are no warning.
    let ht = htpasswd_file(dir.path(), &["ops"], "0ps-Pass");
    let closed = dir.path().join("closed.toml");
    std::fs::write(
        &closed,
        format!(
            "[auth]\nhtpasswd = \"{}\"\n\n[[policy]]\nrepositories = [\"up.test/**\"]\nsubjects = [\"ops\"]\nactions = [\"pull\"]\n\n{upstreams}",
            ht.display()
        ),
    )
    .expect("write config");
    let guarded = Server::start_with(&[format!("--config={}", closed.display())]);
    let log = guarded.log();
    assert!(log.contains("access control is on"), "{log}");
    assert!(!log.contains("no [auth] table"), "{log}");
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---------------------------------------------------------------------------
// Blob isolation

fn blob_status(server: &Server, method: &str, path: &str) -> common::Resp {
    curl(method, &format!("{}{path}", server.url())).send()
}

/// A blob pushed only to `team/secret` is not readable through mirror
/// names: on an `--offline` server, nor when the mirror's upstream (a
/// loopback berth) lacks it; reads add nothing to the catalog. Once the
/// upstream has it in that repository, the stored copy is served after one
/// upstream HEAD (no second download).
#[test]
fn blobs_are_served_only_from_repositories_that_hold_them() {
    let secret = pseudo_random(64 * 1024, 77);
    let paths = |d: &str| {
        vec![
            format!("/v2/docker.io/attacker/x/blobs/{d}"),
            format!("/v2/attacker/x/blobs/{d}?ns=docker.io"),
            format!("/v2/team/other/blobs/{d}"),
        ]
    };

    let offline = Server::start_with(&["--offline".into()]);
    let d = push_blob(&offline, "team/secret", &secret);
    for p in paths(&d) {
        blob_status(&offline, "GET", &p).expect_error(404, "BLOB_UNKNOWN");
        blob_status(&offline, "HEAD", &p).expect_status(404);
    }
    blob_status(&offline, "GET", "/v2/docker.io/attacker/x/manifests/latest").expect_status(404);
    blob_status(&offline, "GET", &format!("/v2/team/secret/blobs/{d}")).expect_status(200);
    assert_eq!(catalog(&offline), vec!["team/secret".to_string()]);

    // Online, docker.io pointed at a loopback berth that lacks the blob.
    let upstream = Server::start();
    let berth = Server::start_with(&[format!("--upstream=docker.io={}", upstream.url())]);
    let d = push_blob(&berth, "team/secret", &secret);
    for p in paths(&d) {
        blob_status(&berth, "GET", &p).expect_error(404, "BLOB_UNKNOWN");
        blob_status(&berth, "HEAD", &p).expect_status(404);
    }
    assert_eq!(catalog(&berth), vec!["team/secret".to_string()]);

    // The upstream has it in lib/app: served through docker.io/lib/app.
    push_blob(&upstream, "lib/app", &secret);
    let r = blob_status(&berth, "GET", &format!("/v2/docker.io/lib/app/blobs/{d}"));
    r.expect_status(200);
    assert_eq!(r.body, secret);
    assert_eq!(
        catalog(&berth),
        vec!["docker.io/lib/app".to_string(), "team/secret".to_string()]
    );
    let up_log = upstream.log();
    let blob_path = format!("path=/v2/lib/app/blobs/{d}");
    assert_eq!(
        up_log
            .lines()
            .filter(|l| l.contains("method=HEAD") && l.contains(&blob_path))
            .count(),
        1,
        "{up_log}"
    );
    assert_eq!(
        up_log
            .lines()
            .filter(|l| l.contains("method=GET") && l.contains(&blob_path))
            .count(),
        0,
        "the stored copy was downloaded again: {up_log}"
    );
    // Still not through the repository the upstream lacks it in.
    blob_status(
        &berth,
        "GET",
        &format!("/v2/docker.io/attacker/x/blobs/{d}"),
    )
    .expect_error(404, "BLOB_UNKNOWN");
}
