//! Real clients against `berth serve` over TLS with access control on:
//!
//! - curl through the token flow: the 401 challenge names an `https://`
//!   realm with the host and port the client used (HTTP/2 and HTTP/1.1),
//!   GET and POST token requests, bearer tokens, insufficient_scope;
//! - skopeo: `login --cert-dir --authfile`, `--creds`, push and pull;
//! - podman: `login --cert-dir`, `push --creds`, pull;
//! - containerd: `ctr --hosts-dir` with the hosts.toml that
//!   `berth runtime-config containerd --mirror https://... --ca CA` wrote,
//!   and `--user`, pulling through the mirror; the CRI plugin (PullImage, as
//!   kubelet calls it) with that hosts.toml as `config_path` and
//!   credentials in `registry.configs."<mirror>".auth`;
//! - Docker: `login`, `push`, `pull` with the CA in `certs.d/<host:port>/`;
//! - `--tls-auto`: the CA from `berth ca export` is what clients trust.
//!
//! The CA is made with `openssl` unless `--tls-auto` makes it. Every daemon
//! the tests start is stopped by a Drop guard; every wait is bounded.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::*;

const PASSWORD: &str = "tls-Auth-Pass";

/// readers pull `team/**`, writers push there, admins preload the
/// `reg.test` mirror namespace, which readers may pull through.
fn policy(htpasswd: &Path) -> String {
    format!(
        r#"
[auth]
htpasswd = "{}"

[[policy]]
repositories = ["team/**", "reg.test/**"]
subjects = ["reader"]
actions = ["pull"]

[[policy]]
repositories = ["team/**"]
subjects = ["writer"]
actions = ["pull", "push", "delete"]

[[policy]]
repositories = ["**", "reg.test/**"]
subjects = ["admin"]
actions = ["pull", "push", "delete"]
"#,
        htpasswd.display()
    )
}

/// A TLS server with [`policy`]; curl requests carry no credentials unless
/// a test adds them. Files live in `dir`.
struct Setup {
    server: Server,
    /// The CA clients trust.
    ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    /// `--tls-cert/--tls-key` from an openssl CA (`dns` added to the
    /// certificate's names), on `[::1]` when `ipv6`.
    fn openssl(dns: Option<&str>, ipv6: bool) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = make_ca(dir.path(), "tls-auth-ca");
        let (cert, key) = make_server_cert_with(dir.path(), &ca, "server", dns);
        let config = write_config(dir.path());
        let server = Server::start_tls(
            &dir.path().join("root"),
            &[
                format!("--tls-cert={}", cert.display()),
                format!("--tls-key={}", key.display()),
                format!("--config={}", config.display()),
            ],
            TlsClient {
                ca: ca.cert.clone(),
                creds: None,
                ipv6,
                http1: false,
            },
        );
        Setup {
            server,
            ca: ca.cert,
            dir,
        }
    }

    /// `--tls-auto`; the CA is what `berth ca export` prints.
    fn tls_auto() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path());
        let root = dir.path().join("root");
        let server = Server::start_tls(
            &root,
            &[
                "--tls-auto".into(),
                format!("--config={}", config.display()),
            ],
            TlsClient {
                ca: dir.path().join("exported-ca.crt"),
                creds: None,
                ipv6: false,
                http1: false,
            },
        );
        let export = run(Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["ca", "export", "--root"])
            .arg(&root))
        .stdout;
        assert!(String::from_utf8_lossy(&export).starts_with("-----BEGIN CERTIFICATE-----"));
        let ca = dir.path().join("exported-ca.crt");
        std::fs::write(&ca, &export).expect("write exported CA");
        Setup { server, ca, dir }
    }

    /// A containers-style cert dir holding the CA as `ca.crt`.
    fn cert_dir(&self) -> PathBuf {
        let d = self.dir.path().join("certs");
        std::fs::create_dir_all(&d).expect("cert dir");
        std::fs::copy(&self.ca, d.join("ca.crt")).expect("copy CA");
        d
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let ht = htpasswd_file(dir, &["reader", "writer", "admin"], PASSWORD);
    let config = dir.join("berth.toml");
    std::fs::write(&config, policy(&ht)).expect("write berth.toml");
    config
}

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"))
    )
}

fn creds(user: &str) -> String {
    format!("{user}:{PASSWORD}")
}

/// curl's verbose run of one GET (no credentials), for what the Req helper
/// does not show: the HTTP version and the challenge.
fn curl_challenge(ca: &Path, url: &str, http: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp");
    let head = dir.path().join("head");
    let out = run(Command::new(require_tool("curl"))
        .args(["-sS", "--noproxy", "*", "--max-time", "20", http])
        .args(["-o", "/dev/null", "-w", "%{http_version}", "-D"])
        .arg(&head)
        .arg("--cacert")
        .arg(ca)
        .arg(url));
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    let challenge = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("www-authenticate")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no challenge in\n{headers}"));
    (out.stdout_str(), challenge)
}

/// Push a small image as `user` with Basic credentials over curl.
fn push_as(server: &Server, user: &str, repo: &str, tag: &str, seed: u64) -> String {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "author": format!("tls-auth-{seed}"),
    }))
    .expect("config");
    let layer = pseudo_random(900, seed);
    for blob in [&config, &layer] {
        curl(
            "POST",
            &format!(
                "{}/v2/{repo}/blobs/uploads/?digest={}",
                server.url(),
                sha256(blob)
            ),
        )
        .header("Authorization", &basic(user))
        .body(blob.clone())
        .send()
        .expect_status(201);
    }
    let manifest = image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
        None,
    );
    curl(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{tag}", server.url()),
    )
    .header("Authorization", &basic(user))
    .header("Content-Type", OCI_MANIFEST)
    .body(manifest.clone())
    .send()
    .expect_status(201);
    sha256(&manifest)
}

// ---------------------------------------------------------------------------
// curl

/// The token flow as a client follows it, over TLS: the challenge's realm is
/// `https://<the host:port the client used>/token`, over HTTP/2 (ALPN) and
/// HTTP/1.1; the realm hands out tokens for GET (Basic) and POST (password
/// and refresh grants); a pull token cannot push (insufficient_scope).
#[test]
fn curl_token_flow_over_tls_with_an_https_realm() {
    let s = Setup::openssl(None, false);
    let server = &s.server;
    push_as(server, "writer", "team/app", "v1", 1);
    let tags = format!("{}/v2/team/app/tags/list", server.url());
    let want = format!(
        "Bearer realm=\"{}/token\",service=\"berth\",scope=\"repository:team/app:pull\"",
        server.url()
    );
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (got_version, challenge) = curl_challenge(&s.ca, &tags, flag);
        assert_eq!(got_version, version);
        assert_eq!(challenge, want, "over HTTP/{version}");
    }
    // By name too: the realm follows the name the client used.
    let (_, challenge) = curl_challenge(
        &s.ca,
        &format!("https://localhost:{}/v2/team/app/tags/list", server.port),
        "--http2",
    );
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"https://localhost:{}/token\"",
            server.port
        )),
        "{challenge}"
    );

    // GET the realm with Basic credentials and the challenge's scope.
    let realm = format!("{}/token", server.url());
    let r = curl(
        "GET",
        &format!("{realm}?service=berth&scope=repository:team/app:pull"),
    )
    .header("Authorization", &basic("reader"))
    .send();
    r.expect_status(200);
    let token = r.json()["token"].as_str().expect("token").to_string();
    // [`policy`] sets no token_ttl: the documented default, 5 minutes.
    assert_eq!(r.json()["expires_in"], 300, "{}", r.body_str());
    curl("GET", &tags)
        .header("Authorization", &format!("Bearer {token}"))
        .send()
        .expect_status(200);
    // A wrong password gets no token.
    curl(
        "GET",
        &format!("{realm}?service=berth&scope=repository:team/app:pull"),
    )
    .header(
        "Authorization",
        &format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("reader:wrong")
        ),
    )
    .send()
    .expect_status(401);
    // reader may not push at all: 403 with reader's token.
    curl(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/", server.url()),
    )
    .header("Authorization", &format!("Bearer {token}"))
    .send()
    .expect_status(403);
    // writer's pull-only token does not push: insufficient_scope, so
    // clients ask the (https) realm again.
    let r = curl(
        "GET",
        &format!("{realm}?service=berth&scope=repository:team/app:pull"),
    )
    .header("Authorization", &basic("writer"))
    .send();
    r.expect_status(200);
    let pull_only = r.json()["token"].as_str().expect("token").to_string();
    let r = curl(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/", server.url()),
    )
    .header("Authorization", &format!("Bearer {pull_only}"))
    .send();
    r.expect_status(401);
    let c = r.header("www-authenticate").unwrap_or_default();
    assert!(
        c.contains("error=\"insufficient_scope\"") && c.contains("https://"),
        "{}",
        r.describe()
    );

    // The POST form: password grant with an offline (refresh) token, then
    // the refresh grant; both tokens pull.
    let r = curl("POST", &realm)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username=writer&password={PASSWORD}&service=berth&client_id=test&access_type=offline&scope=repository:team/app:pull,push"
        ))
        .send();
    r.expect_status(200);
    let access = r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    curl(
        "POST",
        &format!("{}/v2/team/app/blobs/uploads/", server.url()),
    )
    .header("Authorization", &format!("Bearer {access}"))
    .send()
    .expect_status(202);
    let r = curl("POST", &realm)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={refresh}&service=berth&client_id=test&scope=repository:team/app:pull"
        ))
        .send();
    r.expect_status(200);
    let renewed = r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    curl("GET", &tags)
        .header("Authorization", &format!("Bearer {renewed}"))
        .send()
        .expect_status(200);
}

// ---------------------------------------------------------------------------
// skopeo and podman

fn skopeo_push_pull(s: &Setup, scratch: &Path) {
    let server = &s.server;
    let certs = s.cert_dir();
    let src = Layout::init(&scratch.join("src"));
    src.build("v1", 2, 21, "amd64");
    let (digest, _) = src.manifest("v1");
    let dest = format!("docker://{}/team/sko:v1", server.host());
    let authfile = scratch.join("auth.json");
    let authfile_arg = authfile.display().to_string();

    // login verifies the certificate and the password.
    let out = run_unchecked(skopeo(scratch).args([
        "login",
        "--authfile",
        &scratch.join("bad.json").display().to_string(),
        "-u",
        "writer",
        "-p",
        "wrong",
        &server.host(),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    let out = run_unchecked(skopeo(scratch).args([
        "login",
        "--authfile",
        &scratch.join("nocert.json").display().to_string(),
        "-u",
        "writer",
        "-p",
        PASSWORD,
        &server.host(),
    ]));
    assert!(
        !out.status.success(),
        "login without the CA succeeded: {}",
        out.describe()
    );
    run(skopeo(scratch)
        .args(["login", "--cert-dir"])
        .arg(&certs)
        .args(["--authfile", &authfile_arg, "-u", "writer", "-p", PASSWORD])
        .arg(server.host()));
    // push with the login's auth file
    run(skopeo(scratch)
        .args(["copy", "--dest-cert-dir"])
        .arg(&certs)
        .args(["--authfile", &authfile_arg])
        .arg(src.oci_ref("v1"))
        .arg(&dest));
    // reader pulls with --creds; reader may not push.
    let raw = run(skopeo(scratch)
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&certs)
        .args(["--creds", &creds("reader")])
        .arg(&dest))
    .stdout;
    assert_eq!(sha256(&raw), digest);
    let back = Layout {
        dir: scratch.join("back"),
    };
    run(skopeo(scratch)
        .args(["copy", "--src-cert-dir"])
        .arg(&certs)
        .args(["--src-creds", &creds("reader")])
        .arg(&dest)
        .arg(back.oci_ref("v1")));
    assert_eq!(back.manifest("v1").0, digest);
    let out = run_unchecked(
        skopeo(scratch)
            .args(["copy", "--dest-cert-dir"])
            .arg(&certs)
            .args(["--dest-creds", &creds("reader")])
            .arg(src.oci_ref("v1"))
            .arg(format!("docker://{}/team/sko:v2", server.host())),
    );
    assert!(!out.status.success(), "{}", out.describe());
    // Anonymous: refused.
    let out = run_unchecked(
        skopeo(scratch)
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&certs)
            .arg(&dest),
    );
    assert!(!out.status.success(), "{}", out.describe());
}

#[test]
fn skopeo_login_creds_authfile_push_and_pull_over_tls() {
    let s = Setup::openssl(None, false);
    let scratch = tempfile::tempdir().expect("scratch");
    skopeo_push_pull(&s, scratch.path());
}

#[test]
fn podman_login_push_and_pull_over_tls() {
    let s = Setup::openssl(None, false);
    let server = &s.server;
    let certs = s.cert_dir();
    let dir = tempfile::tempdir().expect("temp");
    std::fs::create_dir_all(dir.path().join("xdg")).expect("xdg dir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("hello.txt"), "hello over TLS\n").expect("file");
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .expect("Containerfile");
    let image = format!("{}/team/pod:v1", server.host());
    run(podman(dir.path())
        .args(["build", "--pull=never", "-t", &image])
        .arg(&ctx));
    let cert_dir = certs.display().to_string();

    let out = run_unchecked(podman(dir.path()).args(["push", "--cert-dir", &cert_dir, &image]));
    assert!(
        !out.status.success(),
        "push without login\n{}",
        out.describe()
    );
    let out = run_unchecked(podman(dir.path()).args([
        "login",
        "-u",
        "writer",
        "-p",
        PASSWORD,
        &server.host(),
    ]));
    assert!(
        !out.status.success(),
        "login without the CA\n{}",
        out.describe()
    );
    run(podman(dir.path()).args([
        "login",
        "--cert-dir",
        &cert_dir,
        "-u",
        "writer",
        "-p",
        PASSWORD,
        &server.host(),
    ]));
    run(podman(dir.path()).args(["push", "--cert-dir", &cert_dir, &image]));
    let local_id =
        run(podman(dir.path()).args(["image", "inspect", "--format", "{{.Id}}", &image]))
            .stdout_str();
    run(podman(dir.path()).args(["rmi", &image]));
    run(podman(dir.path()).args(["logout", &server.host()]));
    // reader pulls with --creds, and may not push.
    run(podman(dir.path()).args([
        "pull",
        "--cert-dir",
        &cert_dir,
        "--creds",
        &creds("reader"),
        &image,
    ]));
    let pulled_id =
        run(podman(dir.path()).args(["image", "inspect", "--format", "{{.Id}}", &image]))
            .stdout_str();
    assert_eq!(local_id.trim(), pulled_id.trim());
    let out = run_unchecked(podman(dir.path()).args([
        "push",
        "--cert-dir",
        &cert_dir,
        "--creds",
        &creds("reader"),
        &image,
        &format!("docker://{}/team/pod:v2", server.host()),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    // writer pushes with --creds.
    run(podman(dir.path()).args([
        "push",
        "--cert-dir",
        &cert_dir,
        "--creds",
        &creds("writer"),
        &image,
        &format!("docker://{}/team/pod:v3", server.host()),
    ]));
}

// ---------------------------------------------------------------------------
// containerd

/// `berth runtime-config containerd --mirror https://HOST --ca CA` writes
/// the hosts.toml; `ctr --hosts-dir` with `--user` pulls `reg.test/...`
/// through it, verifying berth's certificate against the CA.
#[test]
fn ctr_pulls_through_the_generated_hosts_toml_with_credentials() {
    let s = Setup::openssl(None, false);
    let server = &s.server;
    let digest = push_as(server, "admin", "reg.test/team/app", "v1", 31);
    let hosts = s.dir.path().join("hosts");
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["runtime-config", "containerd", "--mirror"])
        .arg(server.url())
        .args(["--registries", "reg.test", "--ca"])
        .arg(&s.ca)
        .arg("--dest")
        .arg(&hosts));
    let toml_text = std::fs::read_to_string(hosts.join("reg.test/hosts.toml")).expect("hosts.toml");
    assert!(
        toml_text.contains(&format!("[host.\"{}\"]", server.url())),
        "{toml_text}"
    );
    let containerd = Containerd::start();
    let fetch = |user: Option<&str>| {
        let mut cmd = containerd.ctr();
        cmd.args(["content", "fetch", "--hosts-dir"]).arg(&hosts);
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        run_unchecked(cmd.arg("reg.test/team/app:v1"))
    };
    let out = fetch(None);
    assert!(!out.status.success(), "anonymous pull: {}", out.describe());
    let out = fetch(Some("reader:wrong"));
    assert!(!out.status.success(), "wrong password: {}", out.describe());
    let out = fetch(Some(&creds("reader")));
    assert!(out.status.success(), "{}", out.describe());
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(listed.contains(&digest), "{digest} not in\n{listed}");
    // Without the CA in hosts.toml containerd refuses the certificate.
    let bare = s.dir.path().join("bare");
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["runtime-config", "containerd", "--mirror"])
        .arg(server.url())
        .args(["--registries", "reg.test", "--dest"])
        .arg(&bare));
    let out = run_unchecked(
        containerd
            .ctr()
            .args(["content", "fetch", "--hosts-dir"])
            .arg(&bare)
            .args(["--user", &creds("reader"), "reg.test/team/app:v1"]),
    );
    assert!(
        !out.status.success(),
        "pulled without trusting the CA: {}",
        out.describe()
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("path=/token") && l.contains("status=200")),
        "containerd did not go through /token:\n{log}"
    );
}

/// A CRI PullImage (what kubelet does), retrying only while the CRI
/// service says it is not initialized yet (at most 30 s).
fn cri_pull(containerd: &Containerd, image: &str) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match cri_pull_image(&containerd.socket, image) {
            Err(e) if e.contains("not initialized") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// containerd 1.6's CRI plugin pulls `reg.test/...` through berth over TLS:
/// the hosts.toml `berth runtime-config containerd --ca` wrote (its
/// `config_path`) carries the CA, and the credentials are the plugin's
/// `registry.configs."<mirror host>".auth`. Without them the pull fails.
#[test]
fn containerd_cri_plugin_pulls_over_tls_with_credentials() {
    let s = Setup::openssl(None, false);
    let server = &s.server;
    // An image containerd can unpack (umoci-built), preloaded by admin.
    let scratch = tempfile::tempdir().expect("scratch");
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 1, 61, "amd64");
    let (digest, _) = src.manifest("v1");
    run(skopeo(scratch.path())
        .args(["copy", "--dest-cert-dir"])
        .arg(s.cert_dir())
        .args(["--dest-creds", &creds("admin")])
        .arg(src.oci_ref("v1"))
        .arg(format!("docker://{}/reg.test/team/cri:v1", server.host())));
    let hosts = s.dir.path().join("cri-hosts");
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["runtime-config", "containerd", "--mirror"])
        .arg(server.url())
        .args(["--registries", "reg.test", "--ca"])
        .arg(&s.ca)
        .arg("--dest")
        .arg(&hosts));
    let image = "reg.test/team/cri:v1";

    // Anonymous: berth refuses, the pull fails.
    {
        let containerd = Containerd::start_with_cri(Some(&hosts));
        match cri_pull(&containerd, image) {
            Ok(r) => panic!("anonymous CRI pull succeeded: {r}"),
            Err(e) => assert!(
                e.contains("authorization failed") || e.contains("401"),
                "not refused by berth: {e}"
            ),
        }
    }

    let auth = format!(
        "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{}\".auth]\n  username = \"reader\"\n  password = \"{PASSWORD}\"\n",
        server.host()
    );
    let containerd = Containerd::start_with_cri_extra(Some(&hosts), &auth);
    let image_ref = cri_pull(&containerd, image).unwrap_or_else(|e| {
        panic!(
            "CRI PullImage failed: {e}\n--- containerd log\n{}\n--- berth log\n{}",
            containerd.log(),
            server.log()
        )
    });
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let listed = run(Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&containerd.socket)
        .args(["--namespace", "k8s.io", "images", "ls"]))
    .stdout_str();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(image) && l.contains(&digest)),
        "{image} at {digest} not in\n{listed}"
    );
}

// ---------------------------------------------------------------------------
// --tls-auto

/// With `--tls-auto` the CA `berth ca export` prints is what clients trust:
/// curl's challenge is https, skopeo logs in, pushes and pulls.
#[test]
fn tls_auto_with_users_and_the_exported_ca() {
    let s = Setup::tls_auto();
    let (_, challenge) = curl_challenge(
        &s.ca,
        &format!("{}/v2/team/x/tags/list", s.server.url()),
        "--http2",
    );
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}/token\"", s.server.url())),
        "{challenge}"
    );
    let scratch = tempfile::tempdir().expect("scratch");
    skopeo_push_pull(&s, scratch.path());
}

// ---------------------------------------------------------------------------
// Docker

/// A hosts file for dockerd's own mount namespace: the machine's
/// `/etc/hosts` plus `name` for `::1`.
///
/// dockerd treats every registry whose address is in 127.0.0.0/8 as
/// insecure: it then skips certificate verification and never reads
/// `certs.d`, so a test on 127.0.0.1 would not show that the CA is used. It
/// would not accept `[::1]:PORT` in an image name either (Docker 20.10's
/// reference grammar has no IPv6 literals). So berth listens on `[::1]` and
/// the test names it through a host name that resolves there for that
/// daemon alone (the machine's `/etc/hosts` is left as it is).
fn hosts_naming_ipv6_loopback(dir: &Path, name: &str) -> PathBuf {
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&format!("::1 {name}\n"));
    let path = dir.join("hosts");
    std::fs::write(&path, text).expect("write the test's hosts file");
    path
}

/// `/etc/docker/certs.d/<host:port>/ca.crt` (where dockerd reads it; it has
/// no flag for another place), removed when dropped.
struct DockerCerts {
    dir: PathBuf,
    /// `/etc/docker/certs.d` when this guard created it (removed if empty).
    created_parent: Option<PathBuf>,
}

impl DockerCerts {
    fn install(host: &str, ca: &Path) -> DockerCerts {
        let parent = Path::new("/etc/docker/certs.d");
        let created_parent = (!parent.exists()).then(|| parent.to_path_buf());
        let dir = parent.join(host);
        std::fs::create_dir_all(&dir).expect("create /etc/docker/certs.d/<host>");
        std::fs::copy(ca, dir.join("ca.crt")).expect("install ca.crt");
        DockerCerts {
            dir,
            created_parent,
        }
    }
}

impl Drop for DockerCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(parent) = &self.created_parent {
            // Only if empty: another test may have put its own host there.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[test]
fn docker_login_push_and_pull_over_tls_with_the_ca_in_certs_d() {
    assert!(is_root(), "dockerd and /etc/docker/certs.d need root");
    let name = format!("berth-tls-{}.test", std::process::id());
    let s = Setup::openssl(Some(&name), true);
    let server = &s.server;
    let registry = format!("{name}:{}", server.port);
    let scratch = tempfile::tempdir().expect("scratch");
    let hosts = hosts_naming_ipv6_loopback(scratch.path(), &name);
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 1, 51, "amd64");
    let archive = scratch.path().join("image.tar");
    let image = format!("{registry}/team/dock:v1");
    run(skopeo(scratch.path()).args([
        "copy",
        &src.oci_ref("v1"),
        &format!("docker-archive:{}:{image}", archive.display()),
    ]));
    let daemon = Dockerd::start_with("{}", Some(&hosts));
    run(daemon.docker().arg("load").arg("-i").arg(&archive));
    let id = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]))
    .stdout_str();

    // Before the CA is installed the certificate is refused.
    let out = run_unchecked(
        daemon
            .docker()
            .args(["login", "-u", "writer", "-p", PASSWORD, &registry]),
    );
    assert!(
        !out.status.success(),
        "login without the CA\n{}",
        out.describe()
    );
    let text = format!("{}{}", out.stderr, out.stdout_str());
    assert!(
        text.contains("x509") || text.contains("certificate"),
        "{}",
        out.describe()
    );
    let _certs = DockerCerts::install(&registry, &s.ca);

    let out = run_unchecked(daemon.docker().args(["push", &image]));
    assert!(
        !out.status.success(),
        "push without login\n{}",
        out.describe()
    );
    let out = run_unchecked(
        daemon
            .docker()
            .args(["login", "-u", "writer", "-p", "wrong", &registry]),
    );
    assert!(!out.status.success(), "{}", out.describe());
    run(daemon
        .docker()
        .args(["login", "-u", "writer", "-p", PASSWORD, &registry]));
    run(daemon.docker().args(["push", &image]));
    run(daemon.docker().args(["logout", &registry]));
    run(daemon.docker().args(["rmi", &image]));
    run(daemon
        .docker()
        .args(["login", "-u", "reader", "-p", PASSWORD, &registry]));
    run(daemon.docker().args(["pull", &image]));
    let pulled = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]))
    .stdout_str();
    assert_eq!(id.trim(), pulled.trim());
    let other = format!("{registry}/team/dock:v2");
    run(daemon.docker().args(["tag", &image, &other]));
    let out = run_unchecked(daemon.docker().args(["push", &other]));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        format!("{}{}", out.stderr, out.stdout_str()).contains("denied"),
        "{}",
        out.describe()
    );
    // berth served TLS only, and dockerd got its tokens from the realm
    // (https, on the name it used: the only way to reach this port).
    let log = server.log();
    assert!(log.contains("scheme=https"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("path=/token") && l.contains("status=200")),
        "dockerd did not go through /token:\n{log}"
    );
}
