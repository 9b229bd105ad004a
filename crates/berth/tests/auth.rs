//! Access control against a running `berth serve` with an `[auth]` table:
//! an authorization matrix driven with curl (subjects × operations ×
//! repositories, storage unchanged after every denial), the token flow
//! (GET and POST, refresh, expiry, insufficient_scope), API tokens, failed
//! login limits, bad input, and the real clients (skopeo, podman).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

// ---------------------------------------------------------------------------
// Set-up

const PASSWORD: &str = "s3cret-Pass";

/// An htpasswd file made by the real `htpasswd -B` for `users` (all with
/// [`PASSWORD`]).
fn htpasswd(dir: &Path, users: &[&str]) -> PathBuf {
    require_tool("htpasswd");
    let file = dir.join("htpasswd");
    for (i, user) in users.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.arg("-B").arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        run(cmd.arg(&file).arg(user).arg(PASSWORD));
    }
    file
}

/// The matrix's policy: readers and writers of `team/**`, admins
/// everywhere (and, named explicitly, in Docker Hub's mirror namespace),
/// `ops` everywhere through `**` only, anonymous pulls of the mirror.
fn policy_config(htpasswd: &Path, ttl: &str, extra_auth: &str) -> String {
    format!(
        r#"
offline = true

[auth]
htpasswd = "{}"
token_ttl = "{ttl}"
groups = {{ admins = ["admin"] }}
{extra_auth}

[[policy]]
repositories = ["team/**"]
subjects = ["reader"]
actions = ["pull"]

[[policy]]
repositories = ["team/**"]
subjects = ["writer", "ci"]
actions = ["pull", "push", "delete"]

[[policy]]
repositories = ["**"]
subjects = ["group:admins", "ops"]
actions = ["pull", "push", "delete"]

[[policy]]
repositories = ["docker.io/**", "quay.io/**"]
subjects = ["group:admins"]
actions = ["push", "delete"]

[[policy]]
repositories = ["docker.io/**", "registry.k8s.io/**"]
subjects = ["anonymous"]
actions = ["pull"]

# A mirror whose upstream needs credentials: only those named may read it.
[[policy]]
repositories = ["registry.corp.test/**"]
subjects = ["reader"]
actions = ["pull"]

[[policy]]
repositories = ["registry.corp.test/**"]
subjects = ["group:admins"]
actions = ["push", "delete"]

[upstreams."registry.corp.test"]
url = "https://registry.corp.test"
username = "berth-robot"
password = "upstream-secret"
"#,
        htpasswd.display()
    )
}

/// A server with the matrix's policy; its root, htpasswd and config live in
/// `dir` (so a restart can reuse them).
struct AuthServer {
    server: Server,
    dir: tempfile::TempDir,
}

impl AuthServer {
    fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.dir.path().join("berth.toml").display().to_string(),
        ]
    }
}

fn start_auth(extra_auth: &str) -> AuthServer {
    start_auth_ttl("5m", extra_auth)
}

fn start_auth_ttl(ttl: &str, extra_auth: &str) -> AuthServer {
    start_auth_with(ttl, extra_auth, false)
}

/// [`start_auth_ttl`] over TLS (a CA and certificate made with openssl,
/// which curl trusts; curl speaks HTTP/2 by ALPN).
fn start_auth_ttl_tls(ttl: &str, extra_auth: &str) -> AuthServer {
    start_auth_with(ttl, extra_auth, true)
}

fn start_auth_with(ttl: &str, extra_auth: &str, tls: bool) -> AuthServer {
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd(dir.path(), &["reader", "writer", "admin", "ops"]);
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, policy_config(&ht, ttl, extra_auth)).unwrap();
    let root = dir.path().join("root");
    let mut args = vec![format!("--config={}", config.display())];
    let server = if tls {
        let ca = make_ca(dir.path(), "auth-ca");
        let (cert, key) = make_server_cert(dir.path(), &ca, "auth-server");
        args.push(format!("--tls-cert={}", cert.display()));
        args.push(format!("--tls-key={}", key.display()));
        let client = TlsClient {
            ca: ca.cert,
            creds: None,
            ipv6: false,
            http1: false,
        };
        Server::start_tls(&root, &args, client)
    } else {
        Server::start_on_with(&root, &args)
    };
    AuthServer { server, dir }
}

/// `berth token create` against the server's root; the token text.
fn create_token(root: &Path, user: &str, extra: &[&str]) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["token", "create", "--user", user, "--root"])
        .arg(root)
        .args(extra));
    let text = out.stdout_str().trim().to_string();
    assert!(text.starts_with("berth_"), "{}", out.describe());
    text
}

/// The kinds of repository the matrix covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Local,
    /// A public registry's mirror (docker.io): anonymous pulls allowed.
    PublicMirror,
    /// A mirror whose upstream needs credentials berth holds.
    PrivateMirror,
}

#[derive(Clone, Debug)]
enum Cred {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Cred {
    fn user(name: &str) -> Cred {
        Cred::Basic(name.into(), PASSWORD.into())
    }

    fn apply(&self, req: Req) -> Req {
        match self {
            Cred::Anonymous => req,
            Cred::Basic(u, p) => req.header("Authorization", &basic(u, p)),
            Cred::Bearer(t) => req.header("Authorization", &format!("Bearer {t}")),
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn req(cred: &Cred, method: &str, url: &str) -> Req {
    cred.apply(curl(method, url))
}

fn push_blob_as(server: &Server, cred: &Cred, repo: &str, bytes: &[u8]) -> Resp {
    let digest = sha256(bytes);
    req(
        cred,
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/?digest={digest}", server.url()),
    )
    .body(bytes.to_vec())
    .send()
}

fn put_manifest_as(server: &Server, cred: &Cred, repo: &str, tag: &str, bytes: &[u8]) -> Resp {
    req(
        cred,
        "PUT",
        &format!("{}/v2/{repo}/manifests/{tag}", server.url()),
    )
    .header("Content-Type", OCI_MANIFEST)
    .body(bytes.to_vec())
    .send()
}

/// A small image (config + layer) pushed as `cred`; (manifest digest,
/// manifest bytes, layer digest).
fn push_image_as(
    server: &Server,
    cred: &Cred,
    repo: &str,
    tag: &str,
    seed: u64,
) -> (String, Vec<u8>, String) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "author": format!("auth-test-{seed}"),
    }))
    .unwrap();
    let layer = pseudo_random(700 + seed as usize, seed);
    push_blob_as(server, cred, repo, &config).expect_status(201);
    push_blob_as(server, cred, repo, &layer).expect_status(201);
    let manifest = image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
        None,
    );
    put_manifest_as(server, cred, repo, tag, &manifest).expect_status(201);
    (sha256(&manifest), manifest, sha256(&layer))
}

/// Every file under the root (path and size) and the digest of every tag
/// of the given repositories, as the admin sees them.
fn snapshot(server: &Server, repos: &[(&str, &[&str])]) -> (BTreeMap<String, u64>, Vec<String>) {
    // Tags first: reading them may record a pull, which must not show up as
    // a change between two snapshots.
    let tags = tag_digests(server, repos);
    let mut files = BTreeMap::new();
    let mut stack = vec![server.root.clone()];
    let mut steps = 0;
    while let Some(dir) = stack.pop() {
        steps += 1;
        assert!(steps < 100_000, "root walk did not end");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(&server.root)
                    .unwrap()
                    .display()
                    .to_string();
                files.insert(rel, meta.len());
            }
        }
    }
    (files, tags)
}

fn tag_digests(server: &Server, repos: &[(&str, &[&str])]) -> Vec<String> {
    let admin = Cred::user("admin");
    let mut tags = Vec::new();
    for (repo, names) in repos {
        for tag in *names {
            let r = req(
                &admin,
                "HEAD",
                &format!("{}/v2/{repo}/manifests/{tag}", server.url()),
            )
            .header("Accept", OCI_MANIFEST)
            .send();
            tags.push(format!(
                "{repo}:{tag}={} {}",
                r.status,
                r.header("docker-content-digest").unwrap_or("-")
            ));
        }
    }
    tags
}

// ---------------------------------------------------------------------------
// The matrix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Pull,
    GetBlob,
    Push,
    OverwriteTag,
    DeleteManifest,
    DeleteBlob,
    MountForbidden,
}

const OPS: [Op; 7] = [
    Op::Pull,
    Op::GetBlob,
    Op::Push,
    Op::OverwriteTag,
    Op::DeleteManifest,
    Op::DeleteBlob,
    Op::MountForbidden,
];

/// What exists in one repository of the matrix.
struct Fixture {
    repo: &'static str,
    v1: (String, Vec<u8>, String),
    other: (String, Vec<u8>, String),
    victim: (String, Vec<u8>, String),
    doomed_blob: Vec<u8>,
}

fn fixture(server: &Server, repo: &'static str, seed: u64) -> Fixture {
    let admin = Cred::user("admin");
    let v1 = push_image_as(server, &admin, repo, "v1", seed);
    let other = push_image_as(server, &admin, repo, "other", seed + 1);
    let victim = push_image_as(server, &admin, repo, "victim", seed + 2);
    let doomed_blob = pseudo_random(333, seed + 3);
    push_blob_as(server, &admin, repo, &doomed_blob).expect_status(201);
    Fixture {
        repo,
        v1,
        other,
        victim,
        doomed_blob,
    }
}

/// Put back what an allowed operation changed.
fn restore(server: &Server, f: &Fixture, op: Op) {
    let admin = Cred::user("admin");
    match op {
        Op::OverwriteTag => {
            put_manifest_as(server, &admin, f.repo, "v1", &f.v1.1).expect_status(201);
        }
        Op::DeleteManifest => {
            put_manifest_as(server, &admin, f.repo, "victim", &f.victim.1).expect_status(201);
        }
        Op::DeleteBlob => {
            push_blob_as(server, &admin, f.repo, &f.doomed_blob).expect_status(201);
        }
        _ => {}
    }
}

fn perform(server: &Server, cred: &Cred, f: &Fixture, op: Op, secret_blob: &str) -> Resp {
    let base = format!("{}/v2/{}", server.url(), f.repo);
    match op {
        Op::Pull => req(cred, "GET", &format!("{base}/manifests/v1"))
            .header("Accept", OCI_MANIFEST)
            .send(),
        Op::GetBlob => req(cred, "GET", &format!("{base}/blobs/{}", f.v1.2)).send(),
        Op::Push => push_blob_as(server, cred, f.repo, &pseudo_random(99, 4242)),
        Op::OverwriteTag => put_manifest_as(server, cred, f.repo, "v1", &f.other.1),
        Op::DeleteManifest => {
            req(cred, "DELETE", &format!("{base}/manifests/{}", f.victim.0)).send()
        }
        Op::DeleteBlob => req(
            cred,
            "DELETE",
            &format!("{base}/blobs/{}", sha256(&f.doomed_blob)),
        )
        .send(),
        Op::MountForbidden => req(
            cred,
            "POST",
            &format!("{base}/blobs/uploads/?mount={secret_blob}&from=secret/vault"),
        )
        .send(),
    }
}

/// The status an allowed operation answers with.
fn allowed_status(op: Op, may_pull_secret: bool) -> u16 {
    match op {
        Op::Pull | Op::GetBlob => 200,
        Op::Push | Op::OverwriteTag => 201,
        Op::DeleteManifest | Op::DeleteBlob => 202,
        // A mount from where the caller may not read is an ordinary upload.
        Op::MountForbidden if may_pull_secret => 201,
        Op::MountForbidden => 202,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden,
}

#[test]
fn authorization_matrix_of_subjects_operations_and_repositories() {
    let a = start_auth("max_login_failures = 10000");
    let server = &a.server;
    let local = fixture(server, "team/app", 10);
    let mirror = fixture(server, "docker.io/library/x", 20);
    let private = fixture(server, "registry.corp.test/private/x", 40);
    let admin = Cred::user("admin");
    let (_, _, secret_blob) = push_image_as(server, &admin, "secret/vault", "v1", 31);

    let narrow = create_token(&server.root, "ci", &["--scope", "pull:team/**"]);
    let expired = create_token(&server.root, "writer", &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));

    use Expect::*;
    let subjects: Vec<(&str, Cred)> = vec![
        ("anonymous", Cred::Anonymous),
        ("reader", Cred::user("reader")),
        ("writer", Cred::user("writer")),
        ("admin", admin.clone()),
        ("ops", Cred::user("ops")),
        ("narrow token", Cred::Basic("ci".into(), narrow)),
        ("expired token", Cred::Basic("writer".into(), expired)),
        (
            "wrong password",
            Cred::Basic("writer".into(), "nope".into()),
        ),
    ];
    // (subject, repository class, operation): reads, writes. The private
    // mirror (its upstream needs credentials) is readable by the reader it
    // names, the admins, and `ops` through `**`; never anonymously.
    let expect = |subject: &str, class: Class, op: Op| -> Expect {
        let read = matches!(op, Op::Pull | Op::GetBlob);
        if class == Class::PrivateMirror {
            return match subject {
                "expired token" | "wrong password" | "anonymous" => Unauthorized,
                "admin" => Allowed,
                "reader" | "ops" if read => Allowed,
                _ => Forbidden,
            };
        }
        let mirror_repo = class == Class::PublicMirror;
        match (subject, mirror_repo) {
            ("expired token" | "wrong password", _) => Unauthorized,
            ("anonymous", false) => Unauthorized,
            ("anonymous", true) if read => Allowed,
            ("anonymous", true) => Unauthorized,
            ("reader", _) if read => Allowed,
            ("reader", _) => Forbidden,
            ("writer", false) => Allowed,
            ("writer", true) if read => Allowed,
            ("writer", true) => Forbidden,
            ("admin", _) => Allowed,
            // `**` does not reach into a mirror namespace for writes.
            ("ops", false) => Allowed,
            ("ops", true) if read => Allowed,
            ("ops", true) => Forbidden,
            // pull:team/** narrows ci's write rights (and its mirror reads).
            ("narrow token", false) if read => Allowed,
            ("narrow token", _) => Forbidden,
            _ => unreachable!("{subject}"),
        }
    };
    let tagged: [(&str, &[&str]); 4] = [
        ("team/app", &["v1", "other", "victim"]),
        ("docker.io/library/x", &["v1", "other", "victim"]),
        ("registry.corp.test/private/x", &["v1", "other", "victim"]),
        ("secret/vault", &["v1"]),
    ];
    let mut checked = 0;
    for (name, cred) in &subjects {
        for (f, class) in [
            (&local, Class::Local),
            (&mirror, Class::PublicMirror),
            (&private, Class::PrivateMirror),
        ] {
            for op in OPS {
                let want = expect(name, class, op);
                let before = snapshot(server, &tagged);
                let r = perform(server, cred, f, op, &secret_blob);
                let ctx = format!("{name} {op:?} {}", f.repo);
                match want {
                    Allowed => {
                        let may_pull_secret = matches!(*name, "admin" | "ops");
                        assert_eq!(
                            r.status,
                            allowed_status(op, may_pull_secret),
                            "{ctx}\n{}",
                            r.describe()
                        );
                        restore(server, f, op);
                    }
                    Unauthorized => {
                        r.expect_error(401, "UNAUTHORIZED");
                        let c = r.header("www-authenticate").unwrap_or_default();
                        assert!(
                            c.starts_with("Bearer realm=\"http://127.0.0.1:")
                                && c.contains("/token\",service=\"berth\"")
                                && c.contains(&format!("scope=\"repository:{}:", f.repo)),
                            "{ctx}: challenge {c:?}"
                        );
                    }
                    Forbidden => {
                        r.expect_error(403, "DENIED");
                    }
                }
                if want != Allowed {
                    let after = snapshot(server, &tagged);
                    assert_eq!(before.1, after.1, "{ctx}: tags changed after a denial");
                    assert_eq!(before.0, after.0, "{ctx}: files changed after a denial");
                }
                checked += 1;
            }
        }
        // The catalog: 401 without credentials, else only what the caller may pull.
        let r = req(cred, "GET", &format!("{}/v2/_catalog", server.url())).send();
        let want_list: Option<Vec<&str>> = match *name {
            "anonymous" | "expired token" | "wrong password" => None,
            "reader" => Some(vec![
                "docker.io/library/x",
                "registry.corp.test/private/x",
                "team/app",
            ]),
            "writer" => Some(vec!["docker.io/library/x", "team/app"]),
            "narrow token" => Some(vec!["team/app"]),
            _ => Some(vec![
                "docker.io/library/x",
                "registry.corp.test/private/x",
                "secret/vault",
                "team/app",
            ]),
        };
        match want_list {
            None => {
                r.expect_error(401, "UNAUTHORIZED");
            }
            Some(list) => {
                r.expect_status(200);
                assert_eq!(
                    r.json()["repositories"],
                    serde_json::json!(list),
                    "{name}: catalog"
                );
            }
        }
    }
    assert_eq!(checked, subjects.len() * 3 * OPS.len());

    // The mirror's v1 is still the admin's preload: nothing overwrote it.
    let r = req(
        &Cred::Anonymous,
        "GET",
        &format!("{}/v2/docker.io/library/x/manifests/v1", server.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    r.expect_status(200);
    assert_eq!(r.body, mirror.v1.1);
    // ...also under the forms a node pulls it by.
    let r = req(
        &Cred::Anonymous,
        "GET",
        &format!("{}/v2/x/manifests/v1?ns=docker.io", server.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    r.expect_status(200);
    assert_eq!(sha256(&r.body), mirror.v1.0);

    // Audit: pushes, deletes and denials are logged with user and address;
    // no secret is.
    let log = server.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("berth::audit")).collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("user=\"writer\"") || l.contains("user=writer")),
        "no audit line for writer:\n{}",
        audit.join("\n")
    );
    for needle in [
        "outcome=\"denied\"",
        "outcome=\"bad-credentials\"",
        "client=127.0.0.1",
    ] {
        assert!(
            audit.iter().any(|l| l.contains(needle)),
            "no audit line with {needle}:\n{}",
            audit.join("\n")
        );
    }
    assert!(
        audit
            .iter()
            .any(|l| l.contains("delete") && l.contains("outcome=\"ok\"")),
        "{}",
        audit.join("\n")
    );
    for secret in [PASSWORD, "nope", "berth_", "Basic ", "Bearer "] {
        assert!(!log.contains(secret), "the log contains {secret:?}");
    }
}

// ---------------------------------------------------------------------------
// The token flow

fn token_url(server: &Server, query: &str) -> String {
    format!("{}/token?service=berth{query}", server.url())
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn form_post(server: &Server, form: &str) -> Resp {
    curl("POST", &format!("{}/token", server.url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.as_bytes().to_vec())
        .send()
}

#[test]
fn token_flow_get_post_refresh_and_insufficient_scope() {
    let a = start_auth("");
    let server = &a.server;
    let writer = Cred::user("writer");
    push_image_as(server, &writer, "team/app", "v1", 1);

    // The challenge names the endpoint and the scope.
    let r = curl("GET", &format!("{}/v2/team/app/manifests/v1", server.url())).send();
    r.expect_error(401, "UNAUTHORIZED");
    let c = r.header("www-authenticate").unwrap().to_string();
    assert_eq!(
        c,
        format!(
            "Bearer realm=\"{}/token\",service=\"berth\",scope=\"repository:team/app:pull\"",
            server.url()
        )
    );
    // /v2/ itself: 401 for anonymous (realm discovery), 200 once authenticated.
    let r = curl("GET", &format!("{}/v2/", server.url())).send();
    r.expect_status(401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
    req(&writer, "GET", &format!("{}/v2/", server.url()))
        .send()
        .expect_status(200);
    // The realm follows Host and X-Forwarded-Proto.
    let r = curl("GET", &format!("{}/v2/", server.url()))
        .header("Host", "registry.example:8443")
        .header("X-Forwarded-Proto", "https")
        .send();
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm=\"https://registry.example:8443/token\""),
        "{}",
        r.describe()
    );

    // GET with Basic credentials and repeated scopes: only what policy grants.
    let r = req(
        &Cred::user("reader"),
        "GET",
        &token_url(
            server,
            "&scope=repository:team/app:pull,push&scope=repository:other/x:pull&offline_token=true&client_id=test&account=reader",
        ),
    )
    .send();
    r.expect_status(200);
    let body = r.json();
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"], body["token"]);
    assert_eq!(body["expires_in"], 300);
    let issued_at = body["issued_at"].as_str().unwrap();
    assert!(
        issued_at.ends_with('Z') && issued_at.len() == 20,
        "{issued_at}"
    );
    assert!(body["refresh_token"].is_string());
    let c = claims(&token);
    assert_eq!(c["sub"], "reader");
    assert_eq!(
        c["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
    let bearer = Cred::Bearer(token.clone());
    req(
        &bearer,
        "GET",
        &format!("{}/v2/team/app/manifests/v1", server.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send()
    .expect_status(200);
    req(&bearer, "GET", &format!("{}/v2/", server.url()))
        .send()
        .expect_status(200);
    // The token lacks push and reader may not push: 403.
    push_blob_as(server, &bearer, "team/app", b"x").expect_error(403, "DENIED");

    // writer's token for pull only: pushing needs a new token (insufficient_scope).
    let r = req(
        &writer,
        "GET",
        &token_url(server, "&scope=repository:team/app:pull"),
    )
    .send();
    r.expect_status(200);
    assert!(
        r.json().get("refresh_token").is_none(),
        "no offline_token, no refresh token"
    );
    let pull_only = Cred::Bearer(r.json()["token"].as_str().unwrap().to_string());
    let r = push_blob_as(server, &pull_only, "team/app", b"y");
    r.expect_error(401, "UNAUTHORIZED");
    let c = r.header("www-authenticate").unwrap();
    assert!(
        c.contains("scope=\"repository:team/app:pull,push\"")
            && c.contains("error=\"insufficient_scope\""),
        "{c}"
    );

    // Anonymous GET: a token with what anonymous may do, no refresh token.
    let r = curl(
        "GET",
        &token_url(server, "&scope=repository:docker.io/alpine:pull,push&scope=repository:team/app:pull&offline_token=true"),
    )
    .send();
    r.expect_status(200);
    let c = claims(r.json()["token"].as_str().unwrap());
    assert_eq!(c["sub"], "");
    // Scope names are resolved as request paths are.
    assert_eq!(
        c["access"],
        serde_json::json!([{"type": "repository", "name": "docker.io/library/alpine", "actions": ["pull"]}])
    );
    assert!(r.json().get("refresh_token").is_none());

    // POST password grant (containerd's first try): a refresh token comes along.
    let r = form_post(
        server,
        &format!("grant_type=password&username=writer&password={PASSWORD}&service=berth&client_id=containerd&scope=repository%3Ateam%2Fapp%3Apull%2Cpush"),
    );
    r.expect_status(200);
    let body = r.json();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        c["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    let push_token = Cred::Bearer(body["access_token"].as_str().unwrap().to_string());
    push_blob_as(server, &push_token, "team/app", b"pushed with a token").expect_status(201);
    // A wrong password: 401 (containerd then falls back to GET).
    form_post(
        server,
        "grant_type=password&username=writer&password=bad&service=berth",
    )
    .expect_status(401);
    form_post(server, "grant_type=client_credentials").expect_status(400);
    // Refresh grant: a new access token for the same user.
    let r = form_post(
        server,
        &format!("grant_type=refresh_token&refresh_token={refresh}&service=berth&scope=repository:team/app:delete"),
    );
    r.expect_status(200);
    let c = claims(r.json()["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "writer");
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["delete"]));
    // A refresh token is not an access token, and an access token no refresh token.
    req(
        &Cred::Bearer(refresh.clone()),
        "GET",
        &format!("{}/v2/", server.url()),
    )
    .send()
    .expect_status(401);
    form_post(
        server,
        &format!(
            "grant_type=refresh_token&refresh_token={}",
            token_of(&push_token)
        ),
    )
    .expect_status(401);

    // Tokens survive a restart (the key is kept under ROOT/auth, 0600).
    let key = server.root.join("auth/token.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let root = server.root.clone();
    let args = a.args();
    let AuthServer { server, dir } = a;
    drop(server);
    let again = Server::start_on_with(&root, &args);
    req(
        &bearer,
        "GET",
        &format!("{}/v2/team/app/manifests/v1", again.url()),
    )
    .header("Accept", OCI_MANIFEST)
    .send()
    .expect_status(200);
    drop(again);
    drop(dir);
}

fn token_of(c: &Cred) -> String {
    match c {
        Cred::Bearer(t) => t.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn bearer_tokens_expire_and_refresh_tokens_renew_them() {
    // token_ttl below the 60 s minimum is refused at start.
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd(dir.path(), &["u"]);
    let cfg = dir.path().join("short.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nhtpasswd = \"{}\"\ntoken_ttl = \"30s\"\n",
            ht.display()
        ),
    )
    .unwrap();
    let out = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"))
            .arg("--config")
            .arg(&cfg),
    );
    assert!(
        !out.status.success() && out.stderr.contains("token_ttl"),
        "{}",
        out.describe()
    );

    // A 60 s token (the minimum) really stops working: over TLS, as
    // clients off the machine reach berth.
    let a = start_auth_ttl_tls("60s", "");
    let server = &a.server;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let writer = Cred::user("writer");
    push_image_as(server, &writer, "team/app", "v1", 3);
    let r = req(
        &writer,
        "GET",
        &token_url(server, "&scope=repository:team/app:pull&offline_token=true"),
    )
    .send();
    r.expect_status(200);
    assert_eq!(r.json()["expires_in"], 60);
    let token = Cred::Bearer(r.json()["token"].as_str().unwrap().to_string());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let exp = claims(r.json()["token"].as_str().unwrap())["exp"]
        .as_u64()
        .unwrap();
    let pull = |c: &Cred| {
        req(
            c,
            "GET",
            &format!("{}/v2/team/app/manifests/v1", server.url()),
        )
        .header("Accept", OCI_MANIFEST)
        .send()
    };
    pull(&token).expect_status(200);
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now > exp {
            break;
        }
        assert!(Instant::now() < deadline, "token exp {exp} never passed");
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = pull(&token);
    r.expect_error(401, "UNAUTHORIZED");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));
    // The refresh token still gets a fresh one.
    let r = form_post(
        server,
        &format!("grant_type=refresh_token&refresh_token={refresh}&scope=repository:team/app:pull"),
    );
    r.expect_status(200);
    pull(&Cred::Bearer(
        r.json()["access_token"].as_str().unwrap().to_string(),
    ))
    .expect_status(200);
}

// ---------------------------------------------------------------------------
// API tokens, rate limits, bad input

#[test]
fn api_tokens_are_listed_without_secrets_and_revocable() {
    let a = start_auth("");
    let server = &a.server;
    let token = create_token(
        &server.root,
        "ci",
        &["--scope", "push:team/**", "--expires", "90d"],
    );
    let ci = Cred::Basic("ci".into(), token.clone());
    push_image_as(server, &ci, "team/ci", "v1", 7);
    // Outside its scope (ci may push only team/** anyway) and another user name: refused.
    push_blob_as(server, &ci, "other/x", b"z").expect_error(403, "DENIED");
    push_blob_as(
        server,
        &Cred::Basic("writer".into(), token.clone()),
        "team/ci",
        b"z",
    )
    .expect_status(401);
    // At the token endpoint too.
    let r = req(
        &ci,
        "GET",
        &token_url(server, "&scope=repository:team/ci:pull,push"),
    )
    .send();
    r.expect_status(200);
    assert_eq!(
        claims(r.json()["token"].as_str().unwrap())["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );

    let list = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["token", "list", "--root"])
        .arg(&server.root));
    let text = list.stdout_str();
    let id = token.split('_').nth(1).unwrap();
    assert!(
        text.contains(id) && text.contains("ci") && text.contains("push:team/**"),
        "{text}"
    );
    assert!(
        !text.contains(token.splitn(3, '_').nth(2).unwrap()),
        "secret listed: {text}"
    );
    // Stored hashed, private.
    let stored = server.root.join(format!("auth/tokens/{id}.json"));
    let record = std::fs::read_to_string(&stored).unwrap();
    assert!(
        !record.contains(&token) && record.contains(&sha256(token.as_bytes())[7..]),
        "{record}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );

    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["token", "revoke", id, "--root"])
        .arg(&server.root));
    push_blob_as(server, &ci, "team/ci", b"after revoke").expect_error(401, "UNAUTHORIZED");
    let again = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["token", "revoke", id, "--root"])
            .arg(&server.root),
    );
    assert!(
        !again.status.success() && again.stderr.contains("no token"),
        "{}",
        again.describe()
    );
    let bad = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "token",
                "create",
                "--user",
                "ci",
                "--scope",
                "write:team",
                "--root",
            ])
            .arg(&server.root),
    );
    assert!(
        !bad.status.success() && bad.stderr.contains("scope"),
        "{}",
        bad.describe()
    );
}

#[test]
fn failed_logins_are_rate_limited_per_address() {
    let a = start_auth("max_login_failures = 3");
    let server = &a.server;
    let url = format!("{}/v2/team/app/tags/list", server.url());
    let wrong = Cred::Basic("writer".into(), "wrong".into());
    for _ in 0..3 {
        req(&wrong, "GET", &url).send().expect_status(401);
    }
    let r = req(&wrong, "GET", &url).send();
    r.expect_error(429, "TOOMANYREQUESTS");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even the right password waits, here and at the token endpoint.
    req(&Cred::user("writer"), "GET", &url)
        .send()
        .expect_status(429);
    req(&Cred::user("writer"), "GET", &token_url(server, ""))
        .send()
        .expect_status(429);

    // Per address: 127.0.0.2 (another client on the same loopback, berth
    // sees it as the peer address) logs in while 127.0.0.1 is held back...
    let from_other = |u: &str| {
        req(&Cred::user("writer"), "GET", u)
            .source_address("127.0.0.2")
            .send()
    };
    let r = from_other(&format!("{}/v2/", server.url()));
    r.expect_status(200);
    let r = from_other(&token_url(server, "&scope=repository:team/app:pull"));
    r.expect_status(200);
    assert!(r.json()["token"].as_str().is_some(), "{}", r.describe());
    // ...and its success does not lift 127.0.0.1's limit.
    req(&Cred::user("writer"), "GET", &url)
        .send()
        .expect_status(429);
    // Malformed credentials while limited: 429 as well, and audited (as
    // every denial is) at /v2/ and at the token endpoint.
    let token_endpoint = token_url(server, "");
    for u in [&url, &token_endpoint] {
        curl("GET", u)
            .header("Authorization", "Basic !!not-base64!!")
            .send()
            .expect_status(429);
    }
    let log = server.log();
    let limited: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("berth::audit") && l.contains("rate-limited"))
        .filter(|l| l.contains("user=\"-\"") || l.contains("user=-"))
        .collect();
    assert!(
        limited.iter().any(|l| l.contains("team/app")),
        "no audit line for the malformed credentials at /v2/:\n{log}"
    );
    assert!(
        limited.iter().any(|l| l.contains("login")),
        "no audit line for the malformed credentials at /token:\n{log}"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains("berth::audit"))
            .all(|l| !l.contains("client=127.0.0.2") || !l.contains("rate-limited")),
        "127.0.0.2 was rate limited:\n{log}"
    );
}

#[test]
fn bad_credentials_and_tokens_are_clean_401s() {
    let a = start_auth("max_login_failures = 1000");
    let server = &a.server;
    let other = start_auth("");
    let url = format!("{}/v2/team/app/tags/list", server.url());
    let writer = Cred::user("writer");
    push_image_as(server, &writer, "team/app", "v1", 5);

    // A token from another berth (its own key): foreign.
    let r = req(
        &writer,
        "GET",
        &token_url(&other.server, "&scope=repository:team/app:pull"),
    )
    .send();
    let foreign = r.json()["token"].as_str().unwrap().to_string();
    // A genuine one, then altered.
    let r = req(
        &writer,
        "GET",
        &token_url(server, "&scope=repository:team/app:pull"),
    )
    .send();
    let genuine = r.json()["token"].as_str().unwrap().to_string();
    req(&Cred::Bearer(genuine.clone()), "GET", &url)
        .send()
        .expect_status(200);
    let mut resigned = genuine.clone();
    let last = resigned.pop().unwrap();
    resigned.push(if last == 'A' { 'B' } else { 'A' });
    let (h, rest) = genuine.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let more = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&{
            let mut c = claims(&genuine);
            c["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
            c
        })
        .unwrap(),
    );
    let widened = format!("{h}.{more}.{sig}");
    let alg_none = format!(
        "{}.{more}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    for (what, token) in [
        ("foreign", foreign.as_str()),
        ("wrong signature", resigned.as_str()),
        ("widened claims", widened.as_str()),
        ("alg none", alg_none.as_str()),
        ("malformed", "not-a-token"),
        ("empty parts", ".."),
    ] {
        let r = req(&Cred::Bearer(token.to_string()), "GET", &url).send();
        assert_eq!(r.status, 401, "{what}\n{}", r.describe());
        assert_eq!(r.error_codes(), vec!["UNAUTHORIZED"], "{what}");
        let r = req(
            &Cred::Bearer(token.to_string()),
            "DELETE",
            &format!("{}/v2/team/app/manifests/v1", server.url()),
        )
        .send();
        assert_eq!(r.status, 401, "{what}");
    }
    // Odd Authorization headers.
    let huge = format!("Bearer {}", "A".repeat(64 * 1024));
    let r = curl("GET", &url).header("Authorization", &huge).send();
    assert!(r.status == 401 || r.status == 431, "{}", r.describe());
    for header in [
        "Basic !!!not-base64".to_string(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(b"no-colon")
        ),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(b"\xff\xfe:\xc3\x28")
        ),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(b"writer:\xff\xfe")
        ),
        "Digest username=\"writer\"".to_string(),
        "Bearer".to_string(),
    ] {
        let r = curl("GET", &url).header("Authorization", &header).send();
        assert_eq!(r.status, 401, "{header}\n{}", r.describe());
        let r = curl("GET", &token_url(server, ""))
            .header("Authorization", &header)
            .send();
        assert_eq!(r.status, 401, "token endpoint, {header}\n{}", r.describe());
    }
    // Raw non-UTF-8 bytes in the header itself.
    let mut cmd = Command::new("curl");
    use std::os::unix::ffi::OsStrExt;
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(std::ffi::OsStr::from_bytes(
            b"Authorization: Basic \xff\xfe\xfd",
        ))
        .arg(&url);
    assert_eq!(run(&mut cmd).stdout_str(), "401");
    // The server is still serving.
    req(&writer, "GET", &url).send().expect_status(200);
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn config_errors_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let ht = dir.path().join("bad-htpasswd");
    let good = htpasswd(dir.path(), &["alice"]);
    let good_line = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        &ht,
        format!("{good_line}bob:$apr1$Vd1k0F7A$1n8cx9IWfO1ZlcgjiQOl7/\n"),
    )
    .unwrap();
    let start = |config: &str| {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, config).unwrap();
        run_unchecked(
            Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["serve", "--listen", "127.0.0.1:0", "--root"])
                .arg(dir.path().join("root"))
                .arg("--config")
                .arg(&cfg),
        )
    };
    let out = start(&format!("[auth]\nhtpasswd = \"{}\"\n", ht.display()));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains(&ht.display().to_string())
            && out.stderr.contains("line 2")
            && out.stderr.contains("$apr1$"),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"));
    for (config, needle) in [
        (format!("[auth]\nhtpasswd = \"{}\"\npassword = \"x\"\n", good.display()), "password"),
        (
            format!("[auth]\nhtpasswd = \"{}\"\n[[policy]]\nrepositories = [\"a\"]\nsubjects = [\"group:nope\"]\nactions = [\"pull\"]\n", good.display()),
            "nope",
        ),
        ("[[policy]]\nrepositories = [\"a\"]\nsubjects = [\"x\"]\nactions = [\"pull\"]\n".to_string(), "[auth]"),
        (format!("[auth]\nhtpasswd = \"{}/missing\"\n", dir.path().display()), "missing"),
    ] {
        let out = start(&config);
        assert!(!out.status.success() && out.stderr.contains(needle), "{needle}\n{}", out.describe());
    }
}

// ---------------------------------------------------------------------------
// Real clients

#[test]
fn skopeo_with_creds_and_login_authfile() {
    let a = start_auth("");
    let server = &a.server;
    let scratch = tempfile::tempdir().unwrap();
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 2, 11, "amd64");
    let (digest, _) = src.manifest("v1");
    let dest = format!("docker://{}/team/sko:v1", server.host());

    // Without credentials: refused.
    let out = run_unchecked(skopeo(scratch.path()).args([
        "copy",
        "--dest-tls-verify=false",
        &src.oci_ref("v1"),
        &dest,
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    // reader may not push.
    let out = run_unchecked(skopeo(scratch.path()).args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("reader:{PASSWORD}"),
        &src.oci_ref("v1"),
        &dest,
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.to_lowercase().contains("denied"),
        "{}",
        out.describe()
    );
    // writer may.
    run(skopeo(scratch.path()).args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("writer:{PASSWORD}"),
        &src.oci_ref("v1"),
        &dest,
    ]));
    run(skopeo(scratch.path()).args([
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("reader:{PASSWORD}"),
        &dest,
        &format!("oci:{}:v1", scratch.path().join("back").display()),
    ]));
    let back = Layout {
        dir: scratch.path().join("back"),
    };
    assert_eq!(back.manifest("v1").0, digest);

    // skopeo login writes an auth file that later commands use.
    let authfile = scratch.path().join("auth.json");
    run(skopeo(scratch.path()).args([
        "login",
        "--tls-verify=false",
        "--authfile",
        &authfile.display().to_string(),
        "-u",
        "writer",
        "-p",
        PASSWORD,
        &server.host(),
    ]));
    let out = run_unchecked(skopeo(scratch.path()).args([
        "login",
        "--tls-verify=false",
        "--authfile",
        &scratch.path().join("bad.json").display().to_string(),
        "-u",
        "writer",
        "-p",
        "wrong",
        &server.host(),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    run(skopeo(scratch.path()).args([
        "copy",
        "--dest-tls-verify=false",
        "--authfile",
        &authfile.display().to_string(),
        &src.oci_ref("v1"),
        &format!("docker://{}/team/sko:v2", server.host()),
    ]));
    let raw = run(skopeo(scratch.path()).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        &authfile.display().to_string(),
        &format!("docker://{}/team/sko:v2", server.host()),
    ]))
    .stdout;
    assert_eq!(sha256(&raw), digest);
    run(skopeo(scratch.path()).args([
        "delete",
        "--tls-verify=false",
        "--authfile",
        &authfile.display().to_string(),
        &format!("docker://{}/team/sko:v2", server.host()),
    ]));
}

#[test]
fn podman_login_push_and_pull() {
    let a = start_auth("");
    let server = &a.server;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("xdg")).unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from podman\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let image = format!("{}/team/pod:v1", server.host());
    run(podman(dir.path())
        .args(["build", "--pull=never", "-t", &image])
        .arg(&ctx));

    let out = run_unchecked(podman(dir.path()).args(["push", "--tls-verify=false", &image]));
    assert!(
        !out.status.success(),
        "push without login\n{}",
        out.describe()
    );
    let out = run_unchecked(podman(dir.path()).args([
        "login",
        "--tls-verify=false",
        "-u",
        "writer",
        "-p",
        "wrong",
        &server.host(),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    run(podman(dir.path()).args([
        "login",
        "--tls-verify=false",
        "-u",
        "writer",
        "-p",
        PASSWORD,
        &server.host(),
    ]));
    run(podman(dir.path()).args(["push", "--tls-verify=false", &image]));
    let local_id =
        run(podman(dir.path()).args(["image", "inspect", "--format", "{{.Id}}", &image]))
            .stdout_str();
    run(podman(dir.path()).args(["rmi", &image]));
    run(podman(dir.path()).args(["logout", &server.host()]));
    // reader pulls it back.
    run(podman(dir.path()).args([
        "login",
        "--tls-verify=false",
        "-u",
        "reader",
        "-p",
        PASSWORD,
        &server.host(),
    ]));
    run(podman(dir.path()).args(["pull", "--tls-verify=false", &image]));
    let pulled_id =
        run(podman(dir.path()).args(["image", "inspect", "--format", "{{.Id}}", &image]))
            .stdout_str();
    assert_eq!(local_id.trim(), pulled_id.trim());
    // ...but may not push.
    let out = run_unchecked(podman(dir.path()).args([
        "push",
        "--tls-verify=false",
        &image,
        &format!("docker://{}/team/pod:v2", server.host()),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
}

/// `berth serve` with `RUST_LOG=trace`, its log in `log`; the child and its
/// `http://127.0.0.1:PORT` (read from the "berth is serving" line).
fn start_traced(
    config: &Path,
    root: &Path,
    log: &Path,
    envs: &[(&str, &str)],
) -> (std::process::Child, String) {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("berth is serving")) {
            let addr = line
                .split("address=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("no address in {line}"))
                .to_string();
            return (child, format!("http://{addr}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("berth exited with {status}\n{text}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth not serving after 60 s\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_credential_reaches_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd(dir.path(), &["reader", "writer", "admin", "ops"]);
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, policy_config(&ht, "5m", "")).unwrap();
    let root = dir.path().join("root");
    let log = dir.path().join("trace.log");
    let (mut child, url) = start_traced(&config, &root, &log, &[]);
    let api = create_token(&root, "ci", &["--scope", "push:team/**"]);
    let writer = Cred::user("writer");
    let secrets_used = {
        let mut used = vec![PASSWORD.to_string(), api.clone(), basic("writer", PASSWORD)];
        let u = |s: &str| format!("{url}{s}");
        req(&writer, "GET", &u("/v2/")).send().expect_status(200);
        req(
            &Cred::Basic("ci".into(), api.clone()),
            "POST",
            &u("/v2/team/a/blobs/uploads/"),
        )
        .send()
        .expect_status(202);
        let r = req(
            &writer,
            "GET",
            &u("/token?service=berth&scope=repository:team/a:pull,push&offline_token=true"),
        )
        .send();
        r.expect_status(200);
        let token = r.json()["token"].as_str().unwrap().to_string();
        let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
        req(
            &Cred::Bearer(token.clone()),
            "GET",
            &u("/v2/team/a/tags/list"),
        )
        .send()
        .expect_status(404);
        let r = curl("POST", &u("/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&refresh_token={refresh}&scope=repository:team/a:pull"
            ))
            .send();
        r.expect_status(200);
        used.push(r.json()["access_token"].as_str().unwrap().to_string());
        let r = curl("POST", &u("/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=password&username=writer&password={PASSWORD}"
            ))
            .send();
        r.expect_status(200);
        req(
            &Cred::Basic("writer".into(), "wrong-Pass-1".into()),
            "GET",
            &u("/v2/"),
        )
        .send()
        .expect_status(401);
        used.extend([token, refresh, "wrong-Pass-1".into()]);
        used
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    // Whatever the libraries emit at trace level is in this log, with berth's own lines.
    assert!(
        text.contains("berth::request") && text.contains("berth::audit"),
        "no request or audit lines:\n{text:.2000}"
    );
    for secret in &secrets_used {
        assert!(
            !text.contains(secret.as_str()),
            "log contains a credential ({:.12}…)",
            secret
        );
    }
    assert!(
        !text.to_ascii_lowercase().contains("authorization:"),
        "an Authorization header in the log"
    );
}

#[test]
fn containerd_ctr_pulls_with_user_credentials() {
    let a = start_auth("");
    let server = &a.server;
    let (digest, _, layer) = push_image_as(server, &Cred::user("writer"), "team/ctr", "v1", 41);
    let containerd = Containerd::start();
    let image = format!("{}/team/ctr:v1", server.host());
    // Without credentials, and with a wrong password: refused.
    let out = run_unchecked(
        containerd
            .ctr()
            .args(["content", "fetch", "--plain-http", &image]),
    );
    assert!(!out.status.success(), "{}", out.describe());
    let out = run_unchecked(containerd.ctr().args([
        "content",
        "fetch",
        "--plain-http",
        "--user",
        "reader:wrong",
        &image,
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    // containerd's token flow (POST form first) with reader's password.
    run(containerd.ctr().args([
        "content",
        "fetch",
        "--plain-http",
        "--user",
        &format!("reader:{PASSWORD}"),
        &image,
    ]));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(
        listed.contains(&digest) && listed.contains(&layer),
        "{listed}"
    );
    // Nodes pull through the mirror with `?ns=`: anonymously where the
    // policy lets anonymous pull (docker.io/**)...
    let admin = Cred::user("admin");
    let (hub_digest, _, _) = push_image_as(server, &admin, "docker.io/library/x", "v1", 42);
    let scratch = tempfile::tempdir().unwrap();
    let hub_hosts = containerd_hosts_dir(scratch.path(), "docker.io", &server.url());
    run(containerd
        .ctr()
        .args(["content", "fetch", "--hosts-dir"])
        .arg(&hub_hosts)
        .arg("docker.io/library/x:v1"));
    // ...and with credentials and a token whose scope names the resolved
    // mirror repository where it does not (quay.io: admins only).
    let (quay_digest, _, _) = push_image_as(server, &admin, "quay.io/team/x", "v1", 43);
    let quay_hosts = containerd_hosts_dir(&scratch.path().join("q"), "quay.io", &server.url());
    let out = run_unchecked(
        containerd
            .ctr()
            .args(["content", "fetch", "--hosts-dir"])
            .arg(&quay_hosts)
            .args(["--user", &format!("reader:{PASSWORD}"), "quay.io/team/x:v1"]),
    );
    assert!(!out.status.success(), "{}", out.describe());
    run(containerd
        .ctr()
        .args(["content", "fetch", "--hosts-dir"])
        .arg(&quay_hosts)
        .args(["--user", &format!("admin:{PASSWORD}"), "quay.io/team/x:v1"]));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    assert!(
        listed.contains(&hub_digest) && listed.contains(&quay_digest),
        "{listed}"
    );
    // It went through /token: POST (password grant) answered 200.
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains("method=POST")
            && l.contains("path=/token")
            && l.contains("status=200")),
        "no POST /token in:\n{log}"
    );
    // The request lines name the client, the user and containerd's `ns`.
    assert!(
        log.lines().any(|l| l.contains("berth::request")
            && l.contains("client=127.0.0.1")
            && l.contains("user=\"admin\"")
            && l.contains("ns=\"quay.io\"")
            && l.contains("agent=\"containerd/")),
        "no request line with client, user, ns and agent in:\n{log}"
    );
}

#[test]
fn docker_login_push_and_pull() {
    let a = start_auth("");
    let server = &a.server;
    let scratch = tempfile::tempdir().unwrap();
    let src = Layout::init(&scratch.path().join("src"));
    src.build("v1", 1, 51, "amd64");
    let archive = scratch.path().join("image.tar");
    let image = format!("{}/team/dock:v1", server.host());
    run(skopeo(scratch.path()).args([
        "copy",
        &src.oci_ref("v1"),
        &format!("docker-archive:{}:{image}", archive.display()),
    ]));
    let daemon = Dockerd::start();
    run(daemon.docker().arg("load").arg("-i").arg(&archive));
    let id = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]))
    .stdout_str();

    let out = run_unchecked(daemon.docker().args(["push", &image]));
    assert!(
        !out.status.success(),
        "push without login\n{}",
        out.describe()
    );
    let out = run_unchecked(daemon.docker().args([
        "login",
        "-u",
        "writer",
        "-p",
        "wrong",
        &server.host(),
    ]));
    assert!(!out.status.success(), "{}", out.describe());
    run(daemon
        .docker()
        .args(["login", "-u", "writer", "-p", PASSWORD, &server.host()]));
    run(daemon.docker().args(["push", &image]));
    run(daemon.docker().args(["logout", &server.host()]));
    run(daemon.docker().args(["rmi", &image]));
    run(daemon
        .docker()
        .args(["login", "-u", "reader", "-p", PASSWORD, &server.host()]));
    run(daemon.docker().args(["pull", &image]));
    let pulled = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]))
    .stdout_str();
    assert_eq!(id.trim(), pulled.trim());
    // reader may not push.
    let other = format!("{}/team/dock:v2", server.host());
    run(daemon.docker().args(["tag", &image, &other]));
    let out = run_unchecked(daemon.docker().args(["push", &other]));
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        format!("{}{}", out.stderr, out.stdout_str()).contains("denied"),
        "{}",
        out.describe()
    );
}

#[test]
fn without_an_auth_table_everything_is_allowed_and_there_is_no_token_endpoint() {
    let server = Server::start();
    push_image_as(&server, &Cred::Anonymous, "team/open", "v1", 61);
    push_image_as(
        &server,
        &Cred::Anonymous,
        "docker.io/library/open",
        "v1",
        62,
    );
    curl("GET", &format!("{}/v2/", server.url()))
        .send()
        .expect_status(200);
    let r = curl("GET", &format!("{}/v2/_catalog", server.url())).send();
    r.expect_status(200);
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["docker.io/library/open", "team/open"])
    );
    curl(
        "GET",
        &format!("{}/token?scope=repository:team/open:pull", server.url()),
    )
    .send()
    .expect_status(404);
    // Credentials are ignored rather than refused.
    req(
        &Cred::Basic("nobody".into(), "x".into()),
        "GET",
        &format!("{}/v2/team/open/tags/list", server.url()),
    )
    .send()
    .expect_status(200);
    assert!(!server.root.join("auth").exists());
}

#[test]
fn berth_auth_environment_overrides_the_auth_table() {
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd(dir.path(), &["reader", "writer", "admin", "ops"]);
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, policy_config(&ht, "5m", "")).unwrap();
    let log = dir.path().join("serve.log");
    let (mut child, url) = start_traced(
        &config,
        &dir.path().join("root"),
        &log,
        &[
            ("BERTH_AUTH_TOKEN_TTL", "2m"),
            ("BERTH_AUTH_SERVICE", "registry.test"),
            ("BERTH_AUTH_REALM", "https://auth.test/token"),
        ],
    );
    let r = curl("GET", &format!("{url}/v2/team/a/tags/list")).send();
    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
    let r = req(
        &Cred::user("writer"),
        "GET",
        &format!("{url}/token?service=registry.test&scope=repository:team/a:pull"),
    )
    .send();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        challenge.starts_with("Bearer realm=\"https://auth.test/token\",service=\"registry.test\""),
        "{challenge}"
    );
    r.expect_status(200);
    assert_eq!(r.json()["expires_in"], 120);
    assert_eq!(
        claims(r.json()["token"].as_str().unwrap())["aud"],
        "registry.test"
    );
}

#[test]
fn catalog_pages_hold_only_what_the_caller_may_pull() {
    let a = start_auth("");
    let server = &a.server;
    let admin = Cred::user("admin");
    for repo in ["aaa/x", "team/a", "mmm/x", "team/b", "team/c", "zzz/x"] {
        push_image_as(server, &admin, repo, "v1", 70);
    }
    let reader = Cred::user("reader");
    let mut url = format!("{}/v2/_catalog?n=2", server.url());
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = req(&reader, "GET", &url).send();
        r.expect_status(200);
        let page: Vec<String> = serde_json::from_value(r.json()["repositories"].clone()).unwrap();
        assert!(page.len() <= 2, "{page:?}");
        seen.extend(page);
        match r.header("link") {
            Some(link) => {
                let path = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string();
                url = format!("{}{path}", server.url());
            }
            None => break,
        }
    }
    assert_eq!(seen, vec!["team/a", "team/b", "team/c"]);
    let r = req(&admin, "GET", &format!("{}/v2/_catalog", server.url())).send();
    assert_eq!(r.json()["repositories"].as_array().unwrap().len(), 6);
}

/// With access control on, a blob pushed only to a repository some users
/// may not read is served through no mirror name (a path or `?ns=`), to
/// anyone, the admin included: a mirror repository holds only what its
/// upstream gave it (this server is offline, so nothing). Nor does asking
/// create a repository or a catalog entry.
#[test]
fn a_private_blob_is_not_served_through_mirror_names_to_anyone() {
    let a = start_auth("");
    let server = &a.server;
    let admin = Cred::user("admin");
    let (_, _, secret_blob) = push_image_as(server, &admin, "secret/vault", "v1", 61);
    let catalog = |c: &Cred| {
        req(c, "GET", &format!("{}/v2/_catalog", server.url()))
            .send()
            .json()["repositories"]
            .clone()
    };
    let before = catalog(&admin);
    let subjects = [
        ("anonymous", Cred::Anonymous),
        ("reader", Cred::user("reader")),
        ("writer", Cred::user("writer")),
        ("admin", admin.clone()),
    ];
    for (who, cred) in &subjects {
        for path in [
            format!("/v2/docker.io/attacker/anything/blobs/{secret_blob}"),
            format!("/v2/attacker/anything/blobs/{secret_blob}?ns=docker.io"),
            format!("/v2/docker.io/library/x/blobs/{secret_blob}"),
        ] {
            for method in ["GET", "HEAD"] {
                let r = req(cred, method, &format!("{}{path}", server.url())).send();
                assert_eq!(r.status, 404, "{who} {method} {path}: {}", r.describe());
                if method == "GET" {
                    assert!(r.body_str().contains("BLOB_UNKNOWN"), "{who} {path}");
                }
            }
        }
    }
    // The blob is still where it was pushed, and nothing new is listed.
    req(
        &admin,
        "GET",
        &format!("{}/v2/secret/vault/blobs/{secret_blob}", server.url()),
    )
    .send()
    .expect_status(200);
    assert_eq!(catalog(&admin), before);
}
