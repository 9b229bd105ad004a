//! `berth serve` over TLS, driven by real clients:
//!
//! - `--tls-cert/--tls-key` from an `openssl`-made CA: curl with
//!   `--cacert` over HTTP/2 (ALPN) and HTTP/1.1, TLS 1.2 and 1.3; skopeo
//!   pushing and pulling with `--cert-dir`;
//! - certificate rotation: the files are replaced, the next new connection
//!   gets the new certificate, a keep-alive connection opened before goes on
//!   working (a rustls + hyper client holds it);
//! - `--tls-auto`: `berth ca export` prints the CA, skopeo trusts it through
//!   `--cert-dir`, `--tls-san` names are in the certificate, a restart on
//!   the same root keeps the CA; a certificate falling due (made by
//!   `openssl ca` from berth's CA) is renewed while the server runs;
//! - uploads berth refuses before reading their bodies are answered to a
//!   curl still sending, over HTTP/2 and HTTP/1.1;
//! - without TLS flags berth speaks plain HTTP.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// A TLS berth

/// `berth serve` with TLS arguments, ready once curl gets a 200 from `/v2/`
/// over https (certificate not checked: readiness only).
struct TlsServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(root: &Path, extra: &[String]) -> TlsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        for attempt in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let log = dir.path().join(format!("berth-{attempt}.log"));
            let logfile = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
            cmd.arg("serve")
                .arg(format!("--listen=127.0.0.1:{port}"))
                .arg("--root")
                .arg(root)
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(logfile.try_clone().expect("clone"))
                .stderr(logfile);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("BERTH_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = cmd.spawn().expect("spawn berth");
            let deadline = Instant::now() + Duration::from_secs(30);
            let url = format!("https://127.0.0.1:{port}/v2/");
            let mut exited = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                let out = run_unchecked(
                    Command::new("curl")
                        .args([
                            "-sk",
                            "--noproxy",
                            "*",
                            "--max-time",
                            "2",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                        ])
                        .arg(&url),
                );
                if out.stdout_str() == "200" {
                    return TlsServer {
                        child: Some(child),
                        port,
                        log,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if !(exited && text.contains("in use")) {
                panic!("berth serve (TLS) not ready on {port}\n{text}");
            }
        }
        panic!("berth serve (TLS) could not bind a port in 5 attempts");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- berth serve log ---\n{}", self.log());
        }
    }
}

/// curl with verification against `ca`; its verbose stderr tells the
/// negotiated TLS version and HTTP version.
fn curl_tls(ca: &Path, url: &str, extra: &[&str]) -> Output {
    run_unchecked(
        Command::new(require_tool("curl"))
            .args([
                "-sS",
                "-v",
                "--noproxy",
                "*",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .arg("--cacert")
            .arg(ca)
            .args(extra)
            .arg(url),
    )
}

fn expect_ok(out: &Output, http_version: &str, tls_version: &str) {
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(
        out.stdout_str(),
        format!("200 {http_version}"),
        "{}",
        out.describe()
    );
    let err = out.stderr.clone();
    assert!(
        err.contains(&format!("SSL connection using {tls_version}")),
        "not {tls_version}:\n{err}"
    );
}

/// A cert dir for skopeo: the CA as `ca.crt`.
fn cert_dir(parent: &Path, ca: &Path) -> PathBuf {
    let d = parent.join("certs");
    std::fs::create_dir_all(&d).expect("cert dir");
    std::fs::copy(ca, d.join("ca.crt")).expect("copy CA");
    d
}

/// Push an umoci image with skopeo (verifying TLS against `certs`), read it
/// back, and compare the manifest bytes.
fn skopeo_roundtrip(scratch: &Path, certs: &Path, host: &str) {
    let layout = Layout::init(&scratch.join("layout"));
    layout.build("v1", 2, 5, "amd64");
    let (digest, manifest) = layout.manifest("v1");
    let dest = format!("docker://{host}/team/app:v1");
    run(skopeo(scratch)
        .args(["copy", "--dest-cert-dir"])
        .arg(certs)
        .arg(layout.oci_ref("v1"))
        .arg(&dest));
    let raw = run(skopeo(scratch)
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(certs)
        .arg(&dest))
    .stdout;
    assert_eq!(raw, manifest, "manifest bytes differ");
    let copy = Layout::init(&scratch.join("copy"));
    run(skopeo(scratch)
        .args(["copy", "--src-cert-dir"])
        .arg(certs)
        .arg(&dest)
        .arg(copy.oci_ref("v1")));
    assert_eq!(copy.manifest("v1").0, digest);
    // Without the CA the certificate is refused.
    let out = run_unchecked(skopeo(scratch).args(["inspect", "--raw"]).arg(&dest));
    assert!(
        !out.status.success(),
        "untrusted CA accepted: {}",
        out.describe()
    );
}

#[test]
fn tls_files_serve_http2_http11_tls12_tls13_and_skopeo() {
    let dir = tempfile::tempdir().expect("temp");
    let ca = make_ca(dir.path(), "test-ca");
    let (cert, key) = make_server_cert(dir.path(), &ca, "server");
    let server = TlsServer::start(
        &dir.path().join("root"),
        &[
            format!("--tls-cert={}", cert.display()),
            format!("--tls-key={}", key.display()),
        ],
    );
    let v2 = format!("{}/v2/", server.url());
    expect_ok(&curl_tls(&ca.cert, &v2, &["--http2"]), "2", "TLSv1.3");
    expect_ok(&curl_tls(&ca.cert, &v2, &["--http1.1"]), "1.1", "TLSv1.3");
    expect_ok(
        &curl_tls(&ca.cert, &v2, &["--tlsv1.2", "--tls-max", "1.2", "--http2"]),
        "2",
        "TLSv1.2",
    );
    expect_ok(
        &curl_tls(
            &ca.cert,
            &v2,
            &["--tlsv1.2", "--tls-max", "1.2", "--http1.1"],
        ),
        "1.1",
        "TLSv1.2",
    );
    expect_ok(
        &curl_tls(
            &ca.cert,
            &format!("https://localhost:{}/v2/", server.port),
            &["--tlsv1.3"],
        ),
        "2",
        "TLSv1.3",
    );
    // TLS 1.1 and plain HTTP on the TLS port are refused.
    let out = curl_tls(&ca.cert, &v2, &["--tlsv1.1", "--tls-max", "1.1"]);
    assert!(
        !out.status.success(),
        "TLS 1.1 accepted: {}",
        out.describe()
    );
    assert_ne!(
        raw_status(server.addr(), "GET", "/v2/"),
        Some(200),
        "plain HTTP answered on the TLS port"
    );
    let scratch = tempfile::tempdir().expect("scratch");
    let certs = cert_dir(scratch.path(), &ca.cert);
    skopeo_roundtrip(scratch.path(), &certs, &server.host());
}

/// Replace `cert`/`key` with the contents of other files, each atomically.
fn replace(dest: &Path, src: &Path) {
    let tmp = dest.with_extension("new");
    std::fs::copy(src, &tmp).expect("copy");
    std::fs::rename(&tmp, dest).expect("rename");
}

fn roots(cas: &[&Path]) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for ca in cas {
        for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("read CA") {
            store.add(c.expect("CA PEM")).expect("add CA");
        }
    }
    store
}

#[test]
fn rotated_certificate_files_are_picked_up_and_open_connections_keep_working() {
    let dir = tempfile::tempdir().expect("temp");
    let ca1 = make_ca(dir.path(), "ca-one");
    let ca2 = make_ca(dir.path(), "ca-two");
    let (c1, k1) = make_server_cert(dir.path(), &ca1, "one");
    let (c2, k2) = make_server_cert(dir.path(), &ca2, "two");
    let live_cert = dir.path().join("tls.crt");
    let live_key = dir.path().join("tls.key");
    std::fs::copy(&c1, &live_cert).expect("copy");
    std::fs::copy(&k1, &live_key).expect("copy");
    let server = TlsServer::start(
        &dir.path().join("root"),
        &[
            format!("--tls-cert={}", live_cert.display()),
            format!("--tls-key={}", live_key.display()),
        ],
    );
    let v2 = format!("{}/v2/", server.url());
    expect_ok(&curl_tls(&ca1.cert, &v2, &[]), "2", "TLSv1.3");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use http_body_util::Empty;
        use hyper_util::rt::TokioIo;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(&[&ca1.cert, &ca2.cert]))
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let first_cert = tls.get_ref().1.peer_certificates().expect("peer certs")[0].clone();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        let get = || {
            hyper::Request::get("/v2/")
                .header("host", "localhost")
                .body(Empty::<bytes::Bytes>::new())
                .expect("request")
        };
        let resp = send.send_request(get()).await.expect("first request");
        assert_eq!(resp.status(), 200);

        // Rotate: key first, then certificate (as cert-manager's Secret
        // update lands both), and wait for the server to look again.
        replace(&live_key, &k2);
        replace(&live_cert, &c2);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = curl_tls(&ca2.cert, &v2, &[]);
            if out.stdout_str() == "200 2" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate was not served: {}",
                out.describe()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = curl_tls(&ca1.cert, &v2, &[]);
        assert!(
            !out.status.success(),
            "old CA still accepted: {}",
            out.describe()
        );

        // The connection from before still works, on the old certificate.
        for _ in 0..3 {
            let resp = send
                .send_request(get())
                .await
                .expect("request on the old connection");
            assert_eq!(resp.status(), 200);
        }
        let one_der = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_file(&c1).expect("cert one")
        };
        assert_eq!(
            first_cert, one_der,
            "the first connection saw another certificate"
        );
    });
    assert!(
        server.log().contains("TLS certificate reloaded"),
        "{}",
        server.log()
    );
}

#[test]
fn tls_auto_ca_export_and_skopeo_with_cert_dir() {
    let dir = tempfile::tempdir().expect("temp");
    let root = dir.path().join("root");
    let mut server = TlsServer::start(
        &root,
        &["--tls-auto".into(), "--tls-san=registry.test".into()],
    );
    let export = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["ca", "export", "--root"])
        .arg(&root))
    .stdout;
    let on_disk = std::fs::read(root.join("tls/ca.crt")).expect("ROOT/tls/ca.crt");
    assert_eq!(export, on_disk);
    assert!(String::from_utf8_lossy(&export).starts_with("-----BEGIN CERTIFICATE-----"));
    let ca = dir.path().join("exported-ca.crt");
    std::fs::write(&ca, &export).expect("write CA");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("tls/ca.key"))
        .expect("ca.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    for host in ["127.0.0.1", "localhost", "registry.test"] {
        let out = curl_tls(
            &ca,
            &format!("https://{host}:{}/v2/", server.port),
            &[
                "--resolve",
                &format!("registry.test:{}:127.0.0.1", server.port),
            ],
        );
        expect_ok(&out, "2", "TLSv1.3");
    }
    let scratch = tempfile::tempdir().expect("scratch");
    let certs = cert_dir(scratch.path(), &ca);
    skopeo_roundtrip(scratch.path(), &certs, &server.host());

    // A restart on the same root keeps the CA and serves what was pushed.
    server.stop();
    let again = TlsServer::start(
        &root,
        &["--tls-auto".into(), "--tls-san=registry.test".into()],
    );
    assert_eq!(std::fs::read(root.join("tls/ca.crt")).expect("ca"), on_disk);
    let out = curl_tls(&ca, &format!("{}/v2/team/app/tags/list", again.url()), &[]);
    expect_ok(&out, "2", "TLSv1.3");

    // `ca export` without a CA says so and fails.
    let out = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["ca", "export", "--root"])
            .arg(dir.path().join("nothing-here")),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.clone().contains("--tls-auto"),
        "{}",
        out.describe()
    );
}

/// The `expire date` curl's verbose output reports for the served
/// certificate.
fn served_expiry(out: &Output) -> String {
    let err = out.stderr.clone();
    err.lines()
        .find_map(|l| {
            l.trim_start_matches(['*', ' '])
                .strip_prefix("expire date: ")
        })
        .unwrap_or_else(|| panic!("no expire date in curl's output:\n{err}"))
        .to_string()
}

/// `secs` since the epoch as `openssl ca` takes a date (GeneralizedTime).
fn openssl_date(secs: u64) -> String {
    let out = run(Command::new("date")
        .arg("-u")
        .arg(format!("-d@{secs}"))
        .arg("+%Y%m%d%H%M%SZ"));
    out.stdout_str().trim().to_string()
}

/// `--tls-auto` renews at run time: a certificate from berth's own CA,
/// for the same names, issued by `openssl ca` three hours long with ten
/// seconds to go before its last third, is served at start; once due, the
/// running server issues a new one (90 days) and new connections get it,
/// still trusted through the exported CA.
#[test]
fn tls_auto_renews_a_due_certificate_while_running() {
    require_tool("openssl");
    let dir = tempfile::tempdir().expect("temp");
    let root = dir.path().join("root");
    let args = ["--tls-auto".to_string()];
    let mut first = TlsServer::start(&root, &args);
    first.stop();
    let tls = root.join("tls");
    let ca = tls.join("ca.crt");

    // The names berth's certificate covers, as openssl prints them.
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(tls.join("server.crt")));
    let sans = out
        .stdout_str()
        .lines()
        .nth(1)
        .expect("a subjectAltName line")
        .trim()
        .replace("IP Address:", "IP:")
        .replace(", ", ",");
    let work = dir.path().join("openssl-ca");
    std::fs::create_dir_all(work.join("new")).expect("mkdir");
    std::fs::write(work.join("index.txt"), "").expect("index");
    std::fs::write(work.join("serial"), "1000\n").expect("serial");
    let config = work.join("ca.cnf");
    std::fs::write(
        &config,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {w}/index.txt\nnew_certs_dir = {w}/new\n\
             serial = {w}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
             [any]\ncommonName = supplied\n[server]\nsubjectAltName = {sans}\n\
             basicConstraints = CA:FALSE\nkeyUsage = digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n",
            w = work.display()
        ),
    )
    .expect("ca.cnf");
    run(Command::new("openssl").current_dir(&work).args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "short.key",
        "-out",
        "short.csr",
    ]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Lifetime 3 h 15 s from two hours ago: the last third starts 10 s
    // from now.
    let (start, end) = (now - 7200, now + 3615);
    run(Command::new("openssl").current_dir(&work).args([
        "ca",
        "-batch",
        "-notext",
        "-config",
        "ca.cnf",
        "-extensions",
        "server",
        "-cert",
        &ca.display().to_string(),
        "-keyfile",
        &tls.join("ca.key").display().to_string(),
        "-startdate",
        &openssl_date(start),
        "-enddate",
        &openssl_date(end),
        "-in",
        "short.csr",
        "-out",
        "short.crt",
    ]));
    std::fs::copy(work.join("short.key"), tls.join("server.key")).expect("key");
    std::fs::copy(work.join("short.crt"), tls.join("server.crt")).expect("cert");

    let server = TlsServer::start(&root, &args);
    let started = Instant::now();
    let url = format!("{}/v2/", server.url());
    let out = curl_tls(&ca, &url, &[]);
    expect_ok(&out, "2", "TLSv1.3");
    let at_start = served_expiry(&out);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the server took too long to start for this test's timing"
    );
    let hand_made = run(Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(work.join("short.crt")))
    .stdout_str();
    assert_eq!(
        hand_made.trim(),
        format!("notAfter={at_start}"),
        "not the hand-made certificate"
    );
    assert!(
        !server.log().contains("issued a server certificate"),
        "renewed at start, not at run time:\n{}",
        server.log()
    );

    // Due 10 s after it was made: a new one within 30 s after that.
    let deadline = Instant::now() + Duration::from_secs(40);
    let renewed = loop {
        let out = curl_tls(&ca, &url, &[]);
        expect_ok(&out, "2", "TLSv1.3");
        let expiry = served_expiry(&out);
        if expiry != at_start {
            break expiry;
        }
        assert!(
            Instant::now() < deadline,
            "still serving the certificate expiring {at_start} ({hand_made}):\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        server.log().contains("issued a server certificate"),
        "{}",
        server.log()
    );
    // 90 days on, and the file on disk is the one served.
    let on_disk = run(Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-checkend", "7689600", "-in"])
        .arg(tls.join("server.crt")));
    assert!(on_disk.status.success(), "{}", on_disk.describe());
    assert_eq!(
        on_disk.stdout_str().lines().next(),
        Some(format!("notAfter={renewed}").as_str())
    );
}

#[test]
fn without_tls_flags_berth_speaks_plain_http() {
    let server = Server::start();
    curl("GET", &format!("{}/v2/", server.url()))
        .send()
        .expect_status(200);
    let out = run_unchecked(
        Command::new("curl")
            .args(["-sk", "--noproxy", "*", "--max-time", "5"])
            .arg(format!("https://127.0.0.1:{}/v2/", server.port)),
    );
    assert!(
        !out.status.success(),
        "TLS answered without TLS flags: {}",
        out.describe()
    );
}

/// With access control on, serving plain HTTP on an address other hosts
/// reach is warned about; on loopback, or over TLS, it is not. The
/// non-loopback address is on a veth pair in a network namespace the
/// test creates (`unshare --net`), so nothing outside it can connect.
#[test]
fn plain_http_with_users_on_a_network_address_is_warned_about() {
    assert!(is_root(), "a network namespace needs root");
    require_tool("unshare");
    require_tool("ip");
    let dir = tempfile::tempdir().expect("temp");
    let ht = htpasswd_file(dir.path(), &["u"], "pw-for-the-warning");
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, everything_for(&ht, "u")).expect("config");
    let ca = make_ca(dir.path(), "warn-ca");
    let (cert, key) = make_server_cert(dir.path(), &ca, "warn-server");
    // berth's log after it ran three seconds on `listen` in the namespace.
    let log_of = |name: &str, listen: &str, tls: bool| -> String {
        let log = dir.path().join(format!("{name}.log"));
        let mut serve = format!(
            "timeout -s TERM 3 \"$BERTH\" serve --listen {listen} --root {root} --config {config}",
            root = dir.path().join(format!("root-{name}")).display(),
            config = config.display()
        );
        if tls {
            serve.push_str(&format!(
                " --tls-cert {} --tls-key {}",
                cert.display(),
                key.display()
            ));
        }
        let script = format!(
            "ip link set lo up && ip link add berth0 type veth peer name berth1 && \
             ip addr add 10.250.0.1/24 dev berth0 && ip link set berth0 up && \
             ip link set berth1 up && \
             {serve} >{log} 2>&1; true",
            log = log.display()
        );
        run(Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .env("BERTH", env!("CARGO_BIN_EXE_berth"))
            .env("RUST_LOG", "info"));
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let warning = "speaks plain HTTP on a non-loopback address";
    let exposed = log_of("exposed", "10.250.0.1:5000", false);
    assert!(exposed.contains("berth is serving"), "{exposed}");
    assert!(exposed.contains(warning), "{exposed}");
    let everywhere = log_of("everywhere", "0.0.0.0:5000", false);
    assert!(everywhere.contains(warning), "{everywhere}");
    let local = log_of("loopback", "127.0.0.1:5000", false);
    assert!(
        local.contains("berth is serving") && !local.contains(warning),
        "{local}"
    );
    let tls = log_of("tls", "10.250.0.1:5000", true);
    assert!(
        tls.contains("berth is serving") && !tls.contains(warning),
        "{tls}"
    );
    // The password is in no line.
    for text in [&exposed, &everywhere, &local, &tls] {
        assert!(!text.contains("pw-for-the-warning"));
    }
}

/// `berth runtime-config --tls-auto-root ROOT` installs the server's CA
/// where each runtime reads it, and the real consumers then trust berth:
/// containerd (`ctr content fetch --hosts-dir` with the generated
/// hosts.toml naming `berth-ca.crt` beside it), skopeo with the generated
/// registries.conf drop-in and `certs.d/<mirror>/ca.crt`; k3s's
/// `configs.<mirror>.tls.ca_file` and Docker's certs.d are checked as files.
#[test]
fn runtime_config_installs_the_tls_auto_ca() {
    let dir = tempfile::tempdir().expect("temp");
    let root = dir.path().join("root");
    let server = TlsServer::start(&root, &["--tls-auto".into()]);
    let ca = std::fs::read_to_string(root.join("tls/ca.crt")).expect("CA");
    let mirror = format!("https://{}", server.host());
    // Preload an image under the registry name the nodes will pull.
    let scratch = tempfile::tempdir().expect("scratch");
    let trust = cert_dir(scratch.path(), &root.join("tls/ca.crt"));
    let layout = Layout::init(&scratch.path().join("layout"));
    layout.build("v1", 1, 9, "amd64");
    let (digest, _) = layout.manifest("v1");
    run(skopeo(scratch.path())
        .args(["copy", "--dest-cert-dir"])
        .arg(&trust)
        .arg(layout.oci_ref("v1"))
        .arg(format!("docker://{}/reg.test/team/app:v1", server.host())));
    let rc = |target: &str, extra: &[String]| {
        run(Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "runtime-config",
                target,
                "--mirror",
                &mirror,
                "--registries",
                "reg.test",
                "--tls-auto-root",
            ])
            .arg(&root)
            .args(extra));
    };

    // containerd
    let hosts = dir.path().join("certs.d-containerd");
    rc("containerd", &[format!("--dest={}", hosts.display())]);
    let installed = hosts.join("reg.test").join("berth-ca.crt");
    assert_eq!(
        std::fs::read_to_string(&installed).expect("installed CA"),
        ca
    );
    let toml_text = std::fs::read_to_string(hosts.join("reg.test/hosts.toml")).expect("hosts.toml");
    assert!(
        toml_text.contains(&installed.display().to_string()),
        "{toml_text}"
    );
    let containerd = Containerd::start();
    run(containerd
        .ctr()
        .args([
            "content",
            "fetch",
            "--platform",
            "linux/amd64",
            "--hosts-dir",
        ])
        .arg(&hosts)
        .arg("reg.test/team/app:v1"));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(
        listed.contains(&digest),
        "{digest} not in containerd:\n{listed}"
    );

    // Podman/skopeo: the drop-in plus certs.d/<mirror>/ca.crt.
    let conf = dir.path().join("registries.conf.d/90-berth-mirror.conf");
    let certs = dir.path().join("containers-certs.d");
    rc(
        "podman",
        &[
            format!("--dest={}", conf.display()),
            format!("--certs-dir={}", certs.display()),
        ],
    );
    let mirror_certs = certs.join(server.host());
    assert_eq!(
        std::fs::read_to_string(mirror_certs.join("ca.crt")).expect("certs.d CA"),
        ca
    );
    let out = scratch.path().join("out");
    run(skopeo(scratch.path())
        .arg("--registries-conf")
        .arg(&conf)
        .args(["copy", "--src-cert-dir"])
        .arg(&mirror_certs)
        .arg("docker://reg.test/team/app:v1")
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(Layout { dir: out }.manifest("v1").0, digest);

    // k3s and Docker.
    let k3s = dir.path().join("k3s/registries.yaml");
    rc("k3s", &[format!("--dest={}", k3s.display())]);
    let k3s_ca = dir.path().join("k3s/berth-ca.crt");
    assert_eq!(std::fs::read_to_string(&k3s_ca).expect("k3s CA"), ca);
    let yaml: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&k3s).expect("yaml")).expect("parse yaml");
    assert_eq!(
        yaml["configs"][server.host()]["tls"]["ca_file"],
        serde_json::Value::String(k3s_ca.display().to_string()),
        "{yaml}"
    );
    let docker_certs = dir.path().join("docker-certs.d");
    rc(
        "docker",
        &[
            format!("--dest={}", dir.path().join("daemon.json").display()),
            format!("--certs-dir={}", docker_certs.display()),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(docker_certs.join(server.host()).join("ca.crt"))
            .expect("docker CA"),
        ca
    );
    drop(server);
}

/// berth refuses these uploads before reading their bodies; it reads the
/// rest before answering, so curl, still sending several MiB, gets the
/// answer over HTTP/2 and HTTP/1.1 (curl 7.88 saw a stream error or a
/// broken pipe when the answer came first). Repeated: the failure was a
/// race with the client's sending.
#[test]
fn uploads_refused_before_their_bodies_are_read_still_get_the_answer() {
    let body = vec![b'x'; 8 << 20];
    for http1 in [false, true] {
        let server = Server::start_tls_user_http(http1);
        let base = server.url();
        for round in 0..3 {
            let ctx = format!("HTTP/{} round {round}", if http1 { "1.1" } else { "2" });
            let r = curl(
                "PATCH",
                &format!("{base}/v2/team/app/blobs/uploads/0b5c3a6e-unknown-{round}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(body.clone())
            .send();
            assert_eq!(r.status, 404, "{ctx}: {}", r.describe());
            assert!(r.body_str().contains("BLOB_UPLOAD_UNKNOWN"), "{ctx}");

            let r = curl("PUT", &format!("{base}/v2/team/app/manifests/huge"))
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .body(body.clone())
                .send();
            assert!(matches!(r.status, 413 | 400), "{ctx}: {}", r.describe());

            let r = curl("POST", &format!("{base}/v2/team/app/blobs/uploads/")).send();
            assert_eq!(r.status, 202, "{ctx}: {}", r.describe());
            let location = r.header("location").unwrap_or_default().to_string();
            let location = if location.starts_with('/') {
                format!("{base}{location}")
            } else {
                location
            };
            // A chunk that does not start at 0.
            let r = curl("PATCH", &location)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", &format!("100-{}", 100 + body.len() - 1))
                .body(body.clone())
                .send();
            assert_eq!(r.status, 416, "{ctx}: {}", r.describe());
        }
        // Nothing of the refused bodies was stored.
        assert_eq!(
            curl("GET", &format!("{base}/v2/team/app/manifests/huge"))
                .send()
                .status,
            404
        );
    }
}
