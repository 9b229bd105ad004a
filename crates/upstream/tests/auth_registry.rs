//! The auth flows against a real Distribution 2.8 registry.
//!
//! - Basic: `auth: htpasswd`, credentials given directly or read from a
//!   Docker `config.json`.
//! - Bearer: `auth: token`. Distribution verifies every token itself (issuer,
//!   audience, expiry, RS256 signature chained to the configured certificate,
//!   and the granted access against what each request needs). Debian has no
//!   token server, so this file runs a small one: it checks Basic
//!   credentials, grants access by a fixed policy and signs JWTs with the
//!   `openssl` CLI. It is not a registry; every registry answer here comes
//!   from Distribution. skopeo, an independent client, pushes through the
//!   same token server, which shows the server issues tokens real clients
//!   and Distribution agree on.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_reference::{Digest, ManifestRef, RepositoryName};
use berth_upstream::{
    AuthFile, Credentials, UpstreamClient, UpstreamConfig, UpstreamError, OCI_MANIFEST,
};
use bytes::Bytes;
use common::{Layout, Registry, RegistryAuth};
use futures::StreamExt;
use url::Url;

const USER: &str = "berth";
const PASSWORD: &str = "s3cret:with:colons";
const REFRESH_TOKEN: &str = "refresh-token-for-berth";

fn repo(s: &str) -> RepositoryName {
    s.parse().expect("repository name")
}

fn tag(s: &str) -> ManifestRef {
    s.parse().expect("tag")
}

fn client(reg: &Registry, creds: Option<Credentials>) -> UpstreamClient {
    let cfg = UpstreamConfig::for_registry(&reg.host())
        .expect("config")
        .with_base_url(Url::parse(&reg.url()).expect("url"))
        .with_credentials(creds)
        // The token server here speaks plain HTTP: credentials go to a
        // plain-http realm only for an upstream marked insecure.
        .with_insecure(true)
        .expect("insecure");
    UpstreamClient::new(cfg).expect("client")
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn drain(s: berth_upstream::BlobStream) -> Vec<u8> {
    let mut s = s;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_htpasswd() {
    let reg = blocking(|| {
        Registry::start(
            RegistryAuth::Htpasswd {
                user: USER.into(),
                password: PASSWORD.into(),
            },
            None,
        )
    });
    let layout = Layout::build(1 << 20, 11);
    blocking(|| {
        layout.push(
            "single",
            &reg,
            "team/app",
            "v1",
            Some(&format!("{USER}:{PASSWORD}")),
        )
    });

    // Anonymous: the registry asks for Basic and we have nothing to give.
    let anon = client(&reg, None);
    let e = anon
        .manifest_get(&repo("team/app"), &tag("v1"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e:?}");
    assert!(
        e.is_unavailable(),
        "an auth failure means: serve what you have"
    );

    // Wrong password.
    let wrong = client(&reg, Some(Credentials::new(USER, "nope")));
    let e = wrong
        .manifest_head(&repo("team/app"), &tag("v1"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, UpstreamError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );

    // Credentials read from a Docker config.json (base64 "auth" field).
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &cfg_path,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .expect("write config.json");
    let creds = AuthFile::load(&cfg_path)
        .expect("auth file")
        .credentials_for(&reg.host());
    assert!(creds.is_some());
    let c = client(&reg, creds);
    c.ping().await.expect("ping with credentials");
    let m = c
        .manifest_get(&repo("team/app"), &tag("v1"), &[])
        .await
        .expect("manifest");
    assert_eq!(m.digest, layout.manifest.digest);
    let big = &layout.layers[1];
    let body = c
        .blob_get(&repo("team/app"), &big.digest, None)
        .await
        .expect("blob");
    assert_eq!(drain(body.stream).await, big.bytes);

    // Pushing with Basic: a streamed body goes out authenticated up front.
    let data = Bytes::from(common::pseudo_random(700_000, 5));
    let d = Digest::sha256_of(&data);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    c.blob_upload(
        &repo("team/pushed"),
        &d,
        data.len() as u64,
        futures::stream::iter(chunks),
    )
    .await
    .expect("streamed upload with basic auth");
    assert!(c
        .blob_exists(&repo("team/pushed"), &d)
        .await
        .expect("exists"));
    let mut all = c.catalog(Some(1)).await.expect("catalog");
    all.sort();
    assert_eq!(all, vec!["team/app", "team/pushed"]);
}

// ---------------------------------------------------------------------------
// A token server for Distribution's `auth: token`.

/// (account or "-", scopes asked for)
type TokenRequest = (String, Vec<String>);

#[derive(Clone)]
struct TokenServer {
    key: PathBuf,
    /// The signing certificate, base64 DER, for the JWT `x5c` header.
    x5c: String,
    issuer: String,
    service: String,
    requests: Arc<AtomicUsize>,
    lifetime_s: Arc<AtomicU64>,
    /// Answer with OAuth2's `access_token` field instead of `token`.
    oauth_field: Arc<AtomicBool>,
    /// (account or "-", scopes) per request.
    seen: Arc<Mutex<Vec<TokenRequest>>>,
    /// OAuth2 POSTs served.
    posts: Arc<AtomicUsize>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenServer {
    fn new(dir: &std::path::Path) -> (TokenServer, PathBuf) {
        common::require_tool("openssl");
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        common::run(
            std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=berth test token issuer",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let der = dir.join("token.der");
        common::run(
            std::process::Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert)
                .arg("-out")
                .arg(&der),
        );
        let x5c =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der).expect("der"));
        let server = TokenServer {
            key,
            x5c,
            issuer: "berth-test-issuer".into(),
            service: "berth-test-registry".into(),
            requests: Arc::default(),
            lifetime_s: Arc::new(AtomicU64::new(300)),
            oauth_field: Arc::default(),
            seen: Arc::default(),
            posts: Arc::default(),
        };
        (server, cert)
    }

    async fn sign(&self, claims: serde_json::Value) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut child = tokio::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl dgst");
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).await.expect("write");
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("openssl in time")
            .expect("openssl output");
        assert!(out.status.success(), "openssl dgst failed");
        format!("{input}.{}", b64url(&out.stdout))
    }
}

async fn token_endpoint(
    State(s): State<TokenServer>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let q = q.unwrap_or_default();
    let mut service = String::new();
    let mut scopes = Vec::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "service" => service = v.into_owned(),
            "scope" => scopes.extend(v.split(' ').map(str::to_string)),
            _ => {}
        }
    }
    let account = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(h) => {
            let decoded = h
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((u, p)) if u == USER && p == PASSWORD => Some(u.to_string()),
                _ => {
                    return (
                        StatusCode::UNAUTHORIZED,
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                    )
                        .into_response()
                }
            }
        }
    };
    let oauth = s.oauth_field.load(Ordering::SeqCst);
    issue(&s, account, service, scopes, oauth).await
}

/// The OAuth2 form: `POST` with `grant_type=refresh_token`.
async fn token_post(State(s): State<TokenServer>, body: String) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    s.posts.fetch_add(1, Ordering::SeqCst);
    let mut service = String::new();
    let mut scopes = Vec::new();
    let mut grant = String::new();
    let mut refresh = String::new();
    for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
        match k.as_ref() {
            "service" => service = v.into_owned(),
            "scope" => scopes.extend(v.split(' ').filter(|x| !x.is_empty()).map(str::to_string)),
            "grant_type" => grant = v.into_owned(),
            "refresh_token" => refresh = v.into_owned(),
            _ => {}
        }
    }
    if grant != "refresh_token" || refresh != REFRESH_TOKEN {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_grant"}"#).into_response();
    }
    issue(&s, Some(USER.to_string()), service, scopes, true).await
}

async fn issue(
    s: &TokenServer,
    account: Option<String>,
    service: String,
    scopes: Vec<String>,
    oauth: bool,
) -> Response {
    s.seen.lock().expect("lock").push((
        account.clone().unwrap_or_else(|| "-".into()),
        scopes.clone(),
    ));
    if service != s.service {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    // Policy: an account gets what it asks for; anonymous gets pull on public/*.
    let mut access = Vec::new();
    for scope in &scopes {
        let Some((rest, actions)) = scope.rsplit_once(':') else {
            continue;
        };
        let Some((ty, name)) = rest.split_once(':') else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| {
                account.is_some()
                    || (*a == "pull" && ty == "repository" && name.starts_with("public/"))
            })
            .collect();
        access.push(serde_json::json!({"type": ty, "name": name, "actions": granted}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let lifetime = s.lifetime_s.load(Ordering::SeqCst);
    let jti = s.requests.load(Ordering::SeqCst);
    let claims = serde_json::json!({
        "iss": s.issuer, "sub": account.clone().unwrap_or_default(), "aud": s.service,
        "exp": now + lifetime, "nbf": now - 1, "iat": now, "jti": format!("t{jti}"),
        "access": access,
    });
    let token = s.sign(claims).await;
    let field = if oauth { "access_token" } else { "token" };
    let body = serde_json::json!({ field: token, "expires_in": lifetime });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

struct TokenSetup {
    server: TokenServer,
    reg: Registry,
    _dir: tempfile::TempDir,
}

async fn start_token_registry() -> TokenSetup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, cert) = blocking(|| TokenServer::new(dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route(
            "/token",
            axum::routing::get(token_endpoint).post(token_post),
        )
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let auth = RegistryAuth::Token {
        realm: format!("http://{addr}/token"),
        service: server.service.clone(),
        issuer: server.issuer.clone(),
        cert,
    };
    let reg = blocking(|| Registry::start(auth, None));
    TokenSetup {
        server,
        reg,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_anonymous_and_credentialed() {
    let t = start_token_registry().await;
    let reg = &t.reg;
    let layout = Layout::build(1 << 20, 12);
    let creds = format!("{USER}:{PASSWORD}");
    blocking(|| {
        layout.push("single", reg, "public/app", "v1", Some(&creds));
        layout.push("single", reg, "private/app", "v1", Some(&creds));
    });

    // Anonymous pull of a public repository: one token, reused for the
    // manifest, the HEAD and every blob of that repository.
    let anon = client(reg, None);
    let before = t.server.requests.load(Ordering::SeqCst);
    let m = anon
        .manifest_get(&repo("public/app"), &tag("v1"), &[])
        .await
        .expect("anonymous pull");
    assert_eq!(m.digest, layout.manifest.digest);
    anon.manifest_head(&repo("public/app"), &tag("v1"), &[])
        .await
        .expect("head");
    for l in &layout.layers {
        let b = anon
            .blob_get(&repo("public/app"), &l.digest, None)
            .await
            .expect("blob");
        assert_eq!(drain(b.stream).await, l.bytes);
    }
    assert_eq!(
        t.server.requests.load(Ordering::SeqCst) - before,
        1,
        "one token for the whole pull"
    );
    {
        let seen = t.server.seen.lock().expect("lock");
        let last = seen.last().expect("a token request");
        assert_eq!(
            last.0, "-",
            "anonymous token request carries no credentials"
        );
        assert_eq!(last.1, vec!["repository:public/app:pull"]);
    }

    // Control: Distribution checks the tokens itself. A token with the right
    // claims signed by a key it does not trust is refused.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let (forger, _) = blocking(|| TokenServer::new(other_dir.path()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let forged = forger
        .sign(serde_json::json!({
            "iss": t.server.issuer, "sub": USER, "aud": t.server.service,
            "exp": now + 300, "nbf": now - 1, "iat": now, "jti": "forged",
            "access": [{"type": "repository", "name": "private/app", "actions": ["pull"]}],
        }))
        .await;
    let status = reqwest::Client::new()
        .get(format!("{}v2/private/app/manifests/v1", reg.url()))
        .bearer_auth(forged)
        .send()
        .await
        .expect("raw request")
        .status();
    assert_eq!(status.as_u16(), 401, "a forged token must be refused");

    // Anonymous pull of a private repository: the token grants nothing,
    // Distribution refuses it.
    let e = anon
        .manifest_get(&repo("private/app"), &tag("v1"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e:?}");
    assert!(e.is_unavailable());
    assert!(e.to_string().contains("insufficient_scope"), "{e}");
    // Anonymous push: refused.
    let e = anon
        .blob_upload_bytes(
            &repo("public/app"),
            &Digest::sha256_of(b"x"),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e:?}");

    // Wrong password: the token server refuses.
    let wrong = client(reg, Some(Credentials::new(USER, "wrong")));
    let e = wrong
        .manifest_get(&repo("public/app"), &tag("v1"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, UpstreamError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("bad credentials"), "{e}");

    // Credentialed: private pull, push (upload, mount, manifest), catalog.
    let c = client(reg, Some(Credentials::new(USER, PASSWORD)));
    let m = c
        .manifest_get(&repo("private/app"), &tag("v1"), &[])
        .await
        .expect("credentialed pull");
    assert_eq!(m.digest, layout.manifest.digest);
    let dst = repo("private/copy");
    c.blob_upload_bytes(
        &dst,
        &layout.config.digest,
        Bytes::from(layout.config.bytes.clone()),
    )
    .await
    .expect("upload config");
    for l in &layout.layers {
        match c
            .blob_mount(&dst, &l.digest, &repo("private/app"))
            .await
            .expect("mount")
        {
            berth_upstream::MountOutcome::Mounted => {}
            berth_upstream::MountOutcome::Upload(_) => panic!("expected a mount"),
        }
    }
    let d = c
        .manifest_put(&dst, &tag("v1"), OCI_MANIFEST, m.bytes.clone())
        .await
        .expect("manifest put");
    assert_eq!(d, layout.manifest.digest);
    {
        let seen = t.server.seen.lock().expect("lock");
        assert!(
            seen.iter().any(|(a, s)| a == USER
                && s.contains(&"repository:private/copy:pull,push".to_string())
                && s.contains(&"repository:private/app:pull".to_string())),
            "a mount asks for push on the target and pull on the source: {seen:?}"
        );
    }
    let mut all = c.catalog(Some(1)).await.expect("catalog");
    all.sort();
    assert_eq!(all, vec!["private/app", "private/copy", "public/app"]);

    // An OAuth2 refresh token (config.json's identitytoken) instead of a password.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("config.json");
    std::fs::write(
        &cfg_path,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}","identitytoken":"{REFRESH_TOKEN}"}}}}}}"#,
            reg.host(),
            base64::engine::general_purpose::STANDARD
                .encode("00000000-0000-0000-0000-000000000000:")
        ),
    )
    .expect("config.json");
    let creds = AuthFile::load(&cfg_path)
        .expect("auth file")
        .credentials_for(&reg.host());
    let oauth = client(reg, creds);
    let posts = t.server.posts.load(Ordering::SeqCst);
    let m = oauth
        .manifest_get(&repo("private/app"), &tag("v1"), &[])
        .await
        .expect("pull with an identity token");
    assert_eq!(m.digest, layout.manifest.digest);
    assert_eq!(t.server.posts.load(Ordering::SeqCst) - posts, 1);
    let bad = client(
        reg,
        Some(Credentials::with_identity_token("x", "not-the-token")),
    );
    let e = bad
        .manifest_get(&repo("private/app"), &tag("v1"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, UpstreamError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    let tags = c.tags_list(&dst, Some(10)).await.expect("tags");
    assert_eq!(tags, vec!["v1"]);
    c.manifest_delete(&dst, &ManifestRef::Digest(d.clone()))
        .await
        .expect("delete");
    assert!(c
        .manifest_head(&dst, &ManifestRef::Digest(d), &[])
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refetched_when_they_expire() {
    let t = start_token_registry().await;
    let layout = Layout::build(1024, 13);
    blocking(|| {
        layout.push(
            "single",
            &t.reg,
            "public/app",
            "v1",
            Some(&format!("{USER}:{PASSWORD}")),
        )
    });
    // Short-lived tokens, in OAuth2's field name.
    t.server.lifetime_s.store(4, Ordering::SeqCst);
    t.server.oauth_field.store(true, Ordering::SeqCst);
    let c = client(&t.reg, None);
    let before = t.server.requests.load(Ordering::SeqCst);
    for _ in 0..3 {
        c.manifest_head(&repo("public/app"), &tag("v1"), &[])
            .await
            .expect("head");
    }
    assert_eq!(
        t.server.requests.load(Ordering::SeqCst) - before,
        1,
        "cached within its lifetime"
    );
    // A 4 s token is used for 3 s (a quarter of its lifetime is the margin).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    c.manifest_head(&repo("public/app"), &tag("v1"), &[])
        .await
        .expect("head after expiry");
    assert_eq!(
        t.server.requests.load(Ordering::SeqCst) - before,
        2,
        "refetched after expiry"
    );
    // Concurrent first requests of a fresh client share one token.
    let fresh = client(&t.reg, None);
    let n0 = t.server.requests.load(Ordering::SeqCst);
    let (app, v1) = (repo("public/app"), tag("v1"));
    let heads = (0..4).map(|_| fresh.manifest_head(&app, &v1, &[]));
    for r in futures::future::join_all(heads).await {
        r.expect("concurrent head");
    }
    assert_eq!(
        t.server.requests.load(Ordering::SeqCst) - n0,
        1,
        "one token fetch for concurrent requests"
    );
    // Another scope is another token.
    let e = c
        .manifest_head(&repo("public/other"), &tag("v1"), &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(t.server.requests.load(Ordering::SeqCst) - before, 4);
}

/// A redirector in front of the registry, as registry.k8s.io is in front of
/// regional registries: every request gets a 307 to the same path there.
async fn start_redirector(target: String, hits: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let target = target.clone();
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    header::LOCATION,
                    format!("{}{}", target.trim_end_matches('/'), path),
                )],
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_flow_through_a_redirecting_front() {
    let t = start_token_registry().await;
    let layout = Layout::build(1 << 20, 14);
    blocking(|| {
        layout.push(
            "single",
            &t.reg,
            "public/app",
            "v1",
            Some(&format!("{USER}:{PASSWORD}")),
        )
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let front = start_redirector(t.reg.url(), hits.clone()).await;
    let cfg = UpstreamConfig::for_registry("front.example")
        .expect("config")
        .with_base_url(Url::parse(&front).expect("url"));
    let c = UpstreamClient::new(cfg).expect("client");
    let before = t.server.requests.load(Ordering::SeqCst);
    let m = c
        .manifest_get(&repo("public/app"), &tag("v1"), &[])
        .await
        .expect("pull through the redirect");
    assert_eq!(m.digest, layout.manifest.digest);
    for l in &layout.layers {
        let b = c
            .blob_get(&repo("public/app"), &l.digest, None)
            .await
            .expect("blob through the redirect");
        assert_eq!(drain(b.stream).await, l.bytes);
    }
    assert!(
        hits.load(Ordering::SeqCst) >= 3,
        "requests went through the front"
    );
    assert_eq!(
        t.server.requests.load(Ordering::SeqCst) - before,
        1,
        "the token survives redirects that drop the Authorization header"
    );
}
