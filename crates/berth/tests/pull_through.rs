//! The pull-through cache against real registries on loopback (issue 3).
//!
//! The upstream is Debian's `docker-registry` (Distribution 2.8) with its
//! storage in a temporary directory; images are pushed into it with skopeo.
//! Every claim about upstream traffic is read from the upstream's own access
//! log, one line per request, so it counts what really crossed the wire.
//! The clients are real ones where it matters: skopeo (path-prefix form and a
//! registries.conf mirror), containerd 1.6's `ctr` with a hosts.toml (the
//! `?ns=` form), curl, and plain HTTP/1.1 connections for the concurrency
//! test. Corrupted and truncated upstream bytes are made by editing the
//! blob's data file in the upstream's storage, so a real registry serves them.
//!
//! Token (Bearer) auth: Debian packages no token server for Distribution, so
//! the credentialed upstream here uses `auth: htpasswd` (Basic), which the
//! issue allows; the client's Bearer flow is tested against Distribution's
//! `auth: token` in `crates/upstream/tests/auth_registry.rs`.
//!
//! Tools (docker-registry, skopeo, containerd/ctr, htpasswd, curl) must be
//! installed: a missing one fails the test. Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The upstream's name in repository names; `--upstream` points it at the
/// loopback registry, and nothing else could resolve it.
const UP: &str = "registry.upstream.test";

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

fn upstream_flag(host: &str, up: &Distribution) -> String {
    format!("--upstream={host}={}", up.url())
}

/// Images written into an OCI layout: `v1` and `v2` (amd64, three layers
/// each, one of them over a MiB so blobs span many fill flushes), `arm`
/// (arm64) and `multi`, an index of `v1` and `arm`.
struct Fixture {
    scratch: tempfile::TempDir,
    layout: Layout,
    v1: ImageInfo,
    v2: ImageInfo,
    arm: ImageInfo,
    index_digest: String,
    index: Vec<u8>,
}

fn layer(seed: u64, len: usize) -> Vec<u8> {
    let data = pseudo_random(len, seed);
    let note = format!("layer seed {seed}\n");
    tar_layer(&[
        TarEntry {
            name: "data.bin",
            data: &data,
        },
        TarEntry {
            name: "note.txt",
            data: note.as_bytes(),
        },
    ])
}

fn fixture(seed: u64) -> Fixture {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let layout = Layout::create(&scratch.path().join("layout"));
    let v1 = layout.add_image(
        "v1",
        "amd64",
        &[
            layer(seed * 10 + 1, 1_500_000),
            layer(seed * 10 + 2, 40_000),
            layer(seed * 10 + 3, 300),
        ],
    );
    let v2 = layout.add_image(
        "v2",
        "amd64",
        &[
            layer(seed * 10 + 4, 700_000),
            layer(seed * 10 + 5, 5_000),
            layer(seed * 10 + 6, 100),
        ],
    );
    let arm = layout.add_image("arm", "arm64", &[layer(seed * 10 + 7, 20_000)]);
    let (index_digest, index) = layout.make_index("multi", &[("v1", "amd64"), ("arm", "arm64")]);
    Fixture {
        scratch,
        layout,
        v1,
        v2,
        arm,
        index_digest,
        index,
    }
}

impl Fixture {
    fn push(&self, up: &Distribution, tag: &str, repo_tag: &str) {
        up.push(
            self.scratch.path(),
            &self.layout.oci_ref(tag),
            repo_tag,
            None,
        );
    }
}

fn get(server: &Server, path: &str) -> Resp {
    curl("GET", &format!("{}{path}", server.url()))
        .header("Accept", ACCEPT)
        .send()
}

/// `GET` a manifest and check it is exactly `bytes`.
#[track_caller]
fn expect_manifest(server: &Server, path: &str, bytes: &[u8]) {
    let r = get(server, path);
    r.expect_status(200);
    assert!(
        r.body == bytes,
        "{path}: not the upstream's manifest bytes\n{}",
        r.describe()
    );
    r.expect_header("Docker-Content-Digest", &sha256(bytes));
}

/// `GET` every blob and check its bytes hash to its digest.
#[track_caller]
fn expect_blobs(server: &Server, repo_path: &str, digests: &[String], query: &str) {
    for d in digests {
        let r = get(server, &format!("/v2/{repo_path}/blobs/{d}{query}"));
        r.expect_status(200);
        assert_eq!(sha256(&r.body), *d, "blob bytes through berth");
    }
}

/// Wait (bounded) until the upstream's access log holds `want` requests
/// `METHOD PATH`; return how many it holds then. Access-log lines are written
/// just after a response completes, so a count read at once may lag by one.
fn upstream_count(up: &Distribution, method: &str, path: &str, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = up.requests(method, path);
        if n >= want || Instant::now() > deadline {
            // Give a line that would exceed `want` the same chance to show up.
            std::thread::sleep(Duration::from_millis(100));
            return up.requests(method, path);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Requests the upstream logged, after letting the last lines land.
fn upstream_lines(up: &Distribution) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    up.request_lines()
}

// ---------------------------------------------------------------------------

/// The `?ns=` form (what containerd sends), Docker Hub name normalisation,
/// the path-prefix form and `--default-upstream` all land in one mirror
/// repository, which the upstream fills once; an index is cached as is and
/// its children fetched when asked for; what the upstream does not have is
/// MANIFEST_UNKNOWN / BLOB_UNKNOWN, not a 5xx; the counters agree with the
/// upstream's log.
#[test]
fn ns_form_fetches_once_then_every_form_is_served_from_the_cache() {
    let fx = fixture(1);
    let up = Distribution::start();
    fx.push(&up, "v1", "library/app:v1");
    fx.push(&up, "multi", "library/app:multi");
    let berth = Server::start_with(&[
        upstream_flag("docker.io", &up),
        "--default-upstream=docker.io".into(),
    ]);
    let pushed = up.request_lines().len();

    // Cold: one GET of the tag, one of each blob.
    expect_manifest(&berth, "/v2/app/manifests/v1?ns=docker.io", &fx.v1.manifest);
    expect_blobs(&berth, "app", &fx.v1.blobs(), "?ns=docker.io");
    assert_eq!(
        upstream_count(&up, "GET", "/v2/library/app/manifests/v1", 1),
        1
    );
    for d in fx.v1.blobs() {
        assert_eq!(
            upstream_count(&up, "GET", &format!("/v2/library/app/blobs/{d}"), 1),
            1,
            "{d}"
        );
    }

    // Warm, through every form that names the same repository: no upstream traffic.
    let before = upstream_lines(&up).len();
    for path in [
        "/v2/app/manifests/v1?ns=docker.io",
        "/v2/library/app/manifests/v1?ns=index.docker.io",
        "/v2/docker.io/library/app/manifests/v1",
        "/v2/docker.io/app/manifests/v1",
        "/v2/app/manifests/v1",
        "/v2/library/app/manifests/v1",
    ] {
        expect_manifest(&berth, path, &fx.v1.manifest);
    }
    expect_manifest(
        &berth,
        &format!("/v2/app/manifests/{}?ns=docker.io", fx.v1.manifest_digest),
        &fx.v1.manifest,
    );
    expect_blobs(&berth, "docker.io/library/app", &fx.v1.blobs(), "");
    expect_blobs(&berth, "app", &fx.v1.blobs(), "");
    let lines = upstream_lines(&up);
    assert_eq!(
        lines.len(),
        before,
        "warm reads reached the upstream: {:?}",
        &lines[before..]
    );

    // Multi-arch: the index as is; a child only when asked for, once.
    let arm_path = format!("/v2/library/app/manifests/{}", fx.arm.manifest_digest);
    expect_manifest(&berth, "/v2/app/manifests/multi?ns=docker.io", &fx.index);
    let r = get(&berth, "/v2/app/manifests/multi?ns=docker.io");
    r.expect_header("Content-Type", OCI_INDEX);
    assert_eq!(upstream_count(&up, "GET", &arm_path, 0), 0);
    for _ in 0..2 {
        expect_manifest(
            &berth,
            &format!("/v2/app/manifests/{}?ns=docker.io", fx.arm.manifest_digest),
            &fx.arm.manifest,
        );
    }
    assert_eq!(upstream_count(&up, "GET", &arm_path, 1), 1);

    // What the upstream lacks is a 404 with the spec's code, never a 5xx.
    let absent = sha256(b"never pushed anywhere");
    get(&berth, "/v2/app/manifests/nope?ns=docker.io").expect_error(404, "MANIFEST_UNKNOWN");
    get(&berth, &format!("/v2/app/manifests/{absent}?ns=docker.io"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    get(&berth, "/v2/no/such/repo/manifests/v1?ns=docker.io").expect_status(404);
    get(&berth, &format!("/v2/app/blobs/{absent}?ns=docker.io")).expect_error(404, "BLOB_UNKNOWN");
    let r = curl(
        "HEAD",
        &format!("{}/v2/app/blobs/{absent}?ns=docker.io", berth.url()),
    )
    .send();
    r.expect_status(404);

    // The counters agree with what the upstream saw.
    let to_upstream: Vec<String> = upstream_lines(&up)[pushed..]
        .iter()
        .filter(|l| l.contains("/v2/library/") || l.contains("/v2/no/"))
        .cloned()
        .collect();
    let blob_bytes: u64 = fx
        .v1
        .blobs()
        .iter()
        .map(|d| fx.layout.blob(d).len() as u64)
        .sum::<u64>();
    assert_eq!(
        berth.metric("berth_cache_upstream_requests_total") as usize,
        to_upstream.len(),
        "berth_cache_upstream_requests_total vs the upstream's log: {to_upstream:#?}"
    );
    assert_eq!(
        berth.metric("berth_cache_upstream_bytes_total") as u64,
        blob_bytes
    );
    assert!(berth.metric("berth_cache_hits_total") >= 14.0);
    assert!(berth.metric("berth_cache_misses_total") >= 6.0);
    assert_eq!(berth.metric("berth_cache_stale_serves_total"), 0.0);
}

/// The path-prefix form with skopeo, and a multi-arch pull of one platform
/// through it: the other platform's manifest and layers never leave the
/// upstream.
#[test]
fn path_prefix_form_with_skopeo_fetches_only_the_platform_asked_for() {
    let fx = fixture(2);
    let up = Distribution::start();
    fx.push(&up, "multi", "team/app:multi");
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let out = fx.scratch.path().join("out");

    // skopeo inspect --raw: the index byte for byte.
    let raw = run(skopeo(fx.scratch.path()).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/{UP}/team/app:multi", berth.host()),
    ]));
    assert_eq!(raw.stdout, fx.index, "the index is cached as is");

    // arm64 only.
    run(skopeo(fx.scratch.path()).args([
        "--override-arch",
        "arm64",
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/{UP}/team/app:multi", berth.host()),
        &format!("oci:{}:arm", out.display()),
    ]));
    let copied = Layout {
        dir: out.to_path_buf(),
    };
    assert_eq!(copied.manifest("arm").0, fx.arm.manifest_digest);
    for d in fx.arm.blobs() {
        assert!(copied.has_blob(&d));
        assert!(berth.holds_blob(&d), "{d} cached");
    }
    let lines = upstream_lines(&up);
    assert_eq!(
        up.requests(
            "GET",
            &format!("/v2/team/app/manifests/{}", fx.v1.manifest_digest)
        ),
        0,
        "the amd64 manifest was fetched though nobody asked: {lines:#?}"
    );
    for d in fx.v1.layer_digests.iter() {
        assert_eq!(up.requests("GET", &format!("/v2/team/app/blobs/{d}")), 0);
        assert!(!berth.holds_blob(d));
    }

    // Then amd64, by digest, as a node of that platform would.
    run(skopeo(fx.scratch.path()).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!(
            "docker://{}/{UP}/team/app@{}",
            berth.host(),
            fx.v1.manifest_digest
        ),
        &format!("oci:{}:amd", out.display()),
    ]));
    assert_eq!(copied.manifest("amd").0, fx.v1.manifest_digest);
    for d in fx.v1.blobs() {
        assert_eq!(sha256(&berth.stored_blob(&d)), d);
    }
}

/// skopeo configured the way a node is: `registries.conf` sends pulls of the
/// upstream to berth as a mirror. The upstream's own name does not resolve,
/// so the image can only have come through berth.
#[test]
fn skopeo_pulls_through_a_registries_conf_mirror() {
    let fx = fixture(3);
    let up = Distribution::start();
    fx.push(&up, "v1", "team/app:v1");
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let conf = fx.scratch.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{UP}\"\nlocation = \"{UP}\"\n\n[[registry.mirror]]\nlocation = \"{}/{UP}\"\ninsecure = true\n",
            berth.host()
        ),
    )
    .expect("write registries.conf");
    let out = fx.scratch.path().join("out");
    // skopeo 1.9 reads no CONTAINERS_REGISTRIES_CONF; its (hidden) flag is the way.
    run(skopeo(fx.scratch.path())
        .arg("--registries-conf")
        .arg(&conf)
        .args([
            "copy",
            "--preserve-digests",
            &format!("docker://{UP}/team/app:v1"),
            &format!("oci:{}:v1", out.display()),
        ]));
    let copied = Layout { dir: out };
    assert_eq!(copied.manifest("v1").0, fx.v1.manifest_digest);
    for d in fx.v1.blobs() {
        assert_eq!(sha256(&copied.blob(&d)), d);
        assert_eq!(
            upstream_count(&up, "GET", &format!("/v2/team/app/blobs/{d}"), 1),
            1
        );
    }
    assert!(
        berth
            .log()
            .contains(&format!("/v2/{UP}/team/app/manifests/v1")),
        "skopeo did not ask berth\n{}",
        berth.log()
    );
}

/// containerd 1.6 (`ctr content fetch --hosts-dir`) with a hosts.toml that
/// makes berth the only host for the upstream: ctr sends `?ns=HOST`, and
/// fetches the index plus the one platform it runs on.
#[test]
fn containerd_fetches_through_a_hosts_toml_mirror() {
    let fx = fixture(4);
    let mut up = Distribution::start();
    fx.push(&up, "multi", "team/app:multi");
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let hosts = containerd_hosts_dir(fx.scratch.path(), UP, &berth.url());
    let containerd = Containerd::start();
    let image = format!("{UP}/team/app:multi");
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
        .arg(&image));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    let mut want = vec![fx.index_digest.clone(), fx.v1.manifest_digest.clone()];
    want.extend(fx.v1.blobs());
    for d in &want {
        assert!(
            listed.contains(d.as_str()),
            "{d} not in containerd:\n{listed}"
        );
    }
    assert!(!listed.contains(&fx.arm.manifest_digest));
    for d in fx.v1.blobs() {
        assert!(berth.holds_blob(&d));
    }
    assert_eq!(
        upstream_count(
            &up,
            "GET",
            &format!("/v2/team/app/manifests/{}", fx.arm.manifest_digest),
            0
        ),
        0
    );
    // containerd asked with ?ns=: the repository in its paths has no host.
    assert!(
        berth.log().contains("/v2/team/app/manifests/multi"),
        "{}",
        berth.log()
    );

    // A second node, with the upstream gone: berth alone serves the pull.
    up.stop();
    let second = Containerd::start();
    run(second
        .ctr()
        .args([
            "content",
            "fetch",
            "--platform",
            "linux/amd64",
            "--hosts-dir",
        ])
        .arg(&hosts)
        .arg(&image));
    let listed = run(second.ctr().args(["content", "ls", "-q"])).stdout_str();
    for d in &want {
        assert!(
            listed.contains(d.as_str()),
            "{d} not in the second containerd"
        );
    }
}

/// An upstream that requires credentials (Distribution with htpasswd,
/// bcrypt): given in the config file directly or through a Docker auth file
/// they work; wrong ones are an error for content never cached, and when the
/// upstream starts refusing berth's credentials, cached tags keep being served.
#[test]
fn credentialed_upstream_from_config_and_auth_file() {
    use base64::Engine as _;
    const USER: &str = "puller";
    const PASS: &str = "pull:pass word";
    let fx = fixture(5);
    let mut up = Distribution::start_with(DistributionOptions {
        htpasswd: Some((USER.into(), PASS.into())),
        ..Default::default()
    });
    up.push(
        fx.scratch.path(),
        &fx.layout.oci_ref("v1"),
        "team/app:v1",
        Some(&format!("{USER}:{PASS}")),
    );
    let anonymous = curl("GET", &format!("{}/v2/team/app/manifests/v1", up.url())).send();
    anonymous.expect_status(401);

    let config = |name: &str, auth: &str| {
        let path = fx.scratch.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[upstreams.\"{UP}\"]\nurl = \"{}\"\ntag_ttl = \"1s\"\n{auth}\n",
                up.url()
            ),
        )
        .expect("write config");
        format!("--config={}", path.display())
    };
    let direct = Server::start_with(&[config(
        "direct.toml",
        &format!("username = \"{USER}\"\npassword = \"{PASS}\""),
    )]);
    expect_manifest(
        &direct,
        &format!("/v2/{UP}/team/app/manifests/v1"),
        &fx.v1.manifest,
    );
    expect_blobs(&direct, &format!("{UP}/team/app"), &fx.v1.blobs(), "");

    let auth_json = fx.scratch.path().join("auth.json");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(
        &auth_json,
        format!("{{\"auths\": {{\"{UP}\": {{\"auth\": \"{token}\"}}}}}}"),
    )
    .expect("write auth.json");
    let from_file = Server::start_with(&[config(
        "file.toml",
        &format!("auth_file = \"{}\"", auth_json.display()),
    )]);
    expect_manifest(
        &from_file,
        &format!("/v2/{UP}/team/app/manifests/v1"),
        &fx.v1.manifest,
    );
    expect_blobs(&from_file, &format!("{UP}/team/app"), &fx.v1.blobs(), "");

    let wrong = Server::start_with(&[config(
        "wrong.toml",
        &format!("username = \"{USER}\"\npassword = \"not it\""),
    )]);
    let r = get(&wrong, &format!("/v2/{UP}/team/app/manifests/v1"));
    assert!(
        r.status == 502 || r.status == 401 || r.status == 403,
        "refused credentials must not look like success, a missing manifest or a crash\n{}",
        r.describe()
    );
    let r = get(
        &wrong,
        &format!("/v2/{UP}/team/app/blobs/{}", fx.v1.config_digest),
    );
    assert!(matches!(r.status, 401 | 403 | 502), "{}", r.describe());
    assert!(!wrong.holds_blob(&fx.v1.config_digest));

    // The upstream changes the password: berth's tag is past its TTL, the
    // revalidation is refused, and the cached tag is served.
    up.set_htpasswd(USER, "a new password");
    std::thread::sleep(Duration::from_millis(1200));
    let stale_before = direct.metric("berth_cache_stale_serves_total");
    expect_manifest(
        &direct,
        &format!("/v2/{UP}/team/app/manifests/v1"),
        &fx.v1.manifest,
    );
    expect_blobs(&direct, &format!("{UP}/team/app"), &fx.v1.blobs(), "");
    assert_eq!(
        direct.metric("berth_cache_stale_serves_total"),
        stale_before + 1.0
    );
}

/// What a [`FailingUpstream`] does with each request.
#[derive(Clone, Copy)]
enum Failing {
    /// Answer with this status line and an empty body.
    Status(&'static str),
    /// Read the request and never answer (until stopped).
    Hang,
}

/// A stand-in upstream for the failures Distribution cannot be made to
/// produce (5xx, 429, a server that accepts and never answers). Serves at
/// most 200 connections and for at most 60 s; stops when dropped.
struct FailingUpstream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FailingUpstream {
    fn start(port: u16, how: Failing) -> FailingUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the upstream's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut held = Vec::new();
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline && held.len() < 200 {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 4096];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        if let Failing::Status(status) = how {
                            let _ = s.write_all(
                                format!(
                                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
                                )
                                .as_bytes(),
                            );
                        }
                        // Kept open: a hanging upstream never closes either.
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FailingUpstream {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FailingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The upstream goes away, then answers 503, then 429: tags past their TTL
/// and content by digest keep being served (stale serves counted), content
/// never cached is an upstream error, not a 500 nor a 404. Then `--offline`
/// on the same root serves what is held and never contacts the upstream,
/// though it is back.
#[test]
fn an_upstream_that_goes_away_or_fails_leaves_the_cache_serving() {
    let fx = fixture(6);
    let mut up = Distribution::start();
    fx.push(&up, "v1", "team/app:v1");
    fx.push(&up, "multi", "team/app:multi");
    fx.push(&up, "v2", "team/app:v2");
    let mut berth = Server::start_with(&[upstream_flag(UP, &up), "--tag-ttl=1s".into()]);
    let repo = format!("{UP}/team/app");
    let v1 = format!("/v2/{repo}/manifests/v1");
    let multi = format!("/v2/{repo}/manifests/multi");
    let by_digest = format!("/v2/{repo}/manifests/{}", fx.v1.manifest_digest);
    expect_manifest(&berth, &v1, &fx.v1.manifest);
    expect_manifest(&berth, &multi, &fx.index);
    expect_blobs(&berth, &repo, &fx.v1.blobs(), "");

    let check_cached = |berth: &Server| {
        expect_manifest(berth, &v1, &fx.v1.manifest);
        expect_manifest(berth, &multi, &fx.index);
        expect_manifest(berth, &by_digest, &fx.v1.manifest);
        expect_blobs(berth, &repo, &fx.v1.blobs(), "");
    };

    // Gone: connection refused.
    up.stop();
    std::thread::sleep(Duration::from_millis(1200));
    check_cached(&berth);
    assert_eq!(berth.metric("berth_cache_stale_serves_total"), 2.0);
    let r = get(&berth, &format!("/v2/{repo}/manifests/v2"));
    assert_eq!(
        r.status,
        502,
        "never cached, upstream down\n{}",
        r.describe()
    );
    let r = get(
        &berth,
        &format!("/v2/{repo}/blobs/{}", fx.v2.layer_digests[0]),
    );
    assert_eq!(r.status, 502, "{}", r.describe());

    // 503 and 429 from the upstream's address.
    for (status, code) in [
        ("503 Service Unavailable", 502),
        ("429 Too Many Requests", 429),
    ] {
        let failing = FailingUpstream::start(up.port, Failing::Status(status));
        std::thread::sleep(Duration::from_millis(1100));
        let stale = berth.metric("berth_cache_stale_serves_total");
        check_cached(&berth);
        assert_eq!(
            berth.metric("berth_cache_stale_serves_total"),
            stale + 2.0,
            "upstream answering {status}"
        );
        let r = get(&berth, &format!("/v2/{repo}/manifests/v2"));
        assert_eq!(
            r.status,
            code,
            "upstream answering {status}\n{}",
            r.describe()
        );
        drop(failing);
    }

    // Offline on the same root, with the upstream healthy again.
    up.restart();
    let root = berth.root.clone();
    berth.kill9();
    let offline = Server::start_on_with(&root, &[upstream_flag(UP, &up), "--offline".into()]);
    let before = upstream_lines(&up).len();
    check_cached(&offline);
    get(&offline, &format!("/v2/{repo}/manifests/v2")).expect_error(404, "MANIFEST_UNKNOWN");
    get(
        &offline,
        &format!("/v2/{repo}/manifests/{}", fx.v2.manifest_digest),
    )
    .expect_error(404, "MANIFEST_UNKNOWN");
    get(
        &offline,
        &format!("/v2/{repo}/blobs/{}", fx.v2.layer_digests[0]),
    )
    .expect_error(404, "BLOB_UNKNOWN");
    curl(
        "HEAD",
        &format!(
            "{}/v2/{repo}/blobs/{}",
            offline.url(),
            fx.v2.layer_digests[0]
        ),
    )
    .send()
    .expect_status(404);
    let lines = upstream_lines(&up);
    assert_eq!(
        lines.len(),
        before,
        "--offline contacted the upstream: {:?}",
        &lines[before..]
    );
    assert_eq!(offline.metric("berth_cache_upstream_requests_total"), 0.0);
}

/// Tags are trusted for their TTL, then revalidated with a HEAD: an
/// unchanged tag costs one HEAD and no GET, a moved one is fetched by
/// digest. Per-pattern TTLs from the config file (`v*` for an hour) keep a
/// pinned tag from being asked about at all.
#[test]
fn tags_are_revalidated_with_a_head_after_their_ttl() {
    let fx = fixture(7);
    let up = Distribution::start();
    fx.push(&up, "v1", "team/app:latest");
    fx.push(&up, "v1", "team/app:v1.0");
    let config = fx.scratch.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.\"{UP}\"]\nurl = \"{}\"\ntag_ttl = \"2s\"\ntag_ttls = [{{ pattern = \"v*\", ttl = \"1h\" }}]\n",
            up.url()
        ),
    )
    .expect("write config");
    let berth = Server::start_with(&[format!("--config={}", config.display())]);
    let latest = format!("/v2/{UP}/team/app/manifests/latest");
    let pinned = format!("/v2/{UP}/team/app/manifests/v1.0");
    // The upstream's path for the tag, for HEADs and GETs alike.
    let (head_latest, get_latest) = (
        "/v2/team/app/manifests/latest",
        "/v2/team/app/manifests/latest",
    );

    expect_manifest(&berth, &latest, &fx.v1.manifest);
    let validated = Instant::now();
    expect_manifest(&berth, &pinned, &fx.v1.manifest);
    expect_manifest(&berth, &latest, &fx.v1.manifest);
    assert!(
        validated.elapsed() < Duration::from_secs(2),
        "the machine is too slow for this test's 2 s TTL"
    );
    assert_eq!(upstream_count(&up, "GET", get_latest, 1), 1);
    assert_eq!(
        upstream_count(&up, "HEAD", head_latest, 0),
        0,
        "fresh tag revalidated"
    );

    // Past the TTL, unchanged upstream: one HEAD, no GET.
    std::thread::sleep(Duration::from_millis(2200));
    expect_manifest(&berth, &latest, &fx.v1.manifest);
    assert_eq!(upstream_count(&up, "HEAD", head_latest, 1), 1);
    assert_eq!(upstream_count(&up, "GET", get_latest, 1), 1);

    // The tag moves upstream: after the TTL, the new manifest, by digest.
    fx.push(&up, "v2", "team/app:latest");
    fx.push(&up, "v2", "team/app:v1.0");
    std::thread::sleep(Duration::from_millis(2200));
    expect_manifest(&berth, &latest, &fx.v2.manifest);
    expect_manifest(&berth, &latest, &fx.v2.manifest);
    assert_eq!(upstream_count(&up, "HEAD", head_latest, 2), 2);
    assert_eq!(
        upstream_count(
            &up,
            "GET",
            &format!("/v2/team/app/manifests/{}", fx.v2.manifest_digest),
            1
        ),
        1
    );
    // The pinned tag's TTL is an hour: still the old one, never asked about.
    expect_manifest(&berth, &pinned, &fx.v1.manifest);
    assert_eq!(
        upstream_count(&up, "HEAD", "/v2/team/app/manifests/v1.0", 0),
        0
    );
    assert_eq!(
        upstream_count(&up, "GET", "/v2/team/app/manifests/v1.0", 1),
        1
    );
}

/// The upstream serves corrupted bytes (same length), then truncated ones:
/// the client gets an error (a broken body, never wrong bytes presented as
/// complete), nothing is cached and no partial download is left behind.
/// Once the upstream is healthy, the next pull succeeds and what is cached
/// is the right content.
#[test]
fn corrupted_or_truncated_upstream_bytes_are_never_cached() {
    let fx = fixture(8);
    let up = Distribution::start();
    fx.push(&up, "v1", "team/app:v1");
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let digest = fx.v1.layer_digests[0].clone();
    let data = up.blob_data(&digest);
    let original = std::fs::read(&data).expect("the upstream's blob file");
    assert_eq!(sha256(&original), digest);
    let path = format!("/v2/{UP}/team/app/blobs/{digest}");

    let mut corrupted = original.clone();
    let mid = corrupted.len() / 2;
    corrupted[mid] ^= 0x5a;
    let truncated = original[..original.len() / 3].to_vec();
    for (what, bad) in [("corrupted", &corrupted), ("truncated", &truncated)] {
        std::fs::write(&data, bad).expect("damage the upstream's blob");
        // Two clients at once: the one that started the fill and a follower.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let results = rt.block_on(async {
            let a = http_get(berth.addr(), &path, &[], false, Duration::from_secs(60));
            let b = http_get(berth.addr(), &path, &[], false, Duration::from_secs(60));
            let (a, b) = tokio::join!(a, b);
            vec![a, b]
        });
        for r in results {
            match r {
                Err(_) => {}
                Ok(f) => assert!(
                    f.status >= 400 && f.status != 500,
                    "{what} upstream: a client got {} with {} bytes hashing to {} (want {digest})",
                    f.status,
                    f.len,
                    f.digest
                ),
            }
        }
        assert!(!berth.holds_blob(&digest), "{what} bytes were cached");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !berth.upload_files().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(berth.upload_files(), Vec::<std::path::PathBuf>::new());
    }
    assert!(berth.metric("berth_cache_fill_failures_total") >= 2.0);
    // Each failed pull asked the upstream again: failures are not cached.
    assert!(upstream_count(&up, "GET", &format!("/v2/team/app/blobs/{digest}"), 2) >= 2);

    std::fs::write(&data, &original).expect("restore the upstream's blob");
    let f = http_get_blocking(berth.addr(), &path, &[]).expect("pull from a healthy upstream");
    assert_eq!(f.status, 200);
    assert_eq!(f.digest, digest);
    assert_eq!(sha256(&berth.stored_blob(&digest)), digest);
    let f = http_get_blocking(berth.addr(), &path, &[]).expect("pull from the cache");
    assert_eq!(f.digest, digest);
}

/// Tens of clients on a cold 64 MiB blob: exactly one GET reaches the
/// upstream, every client gets all the bytes, and they hash to the digest.
#[test]
fn concurrent_cold_clients_of_a_64_mib_blob_make_one_upstream_get() {
    const CLIENTS: usize = 32;
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let big = layer(9, 64 << 20);
    let size = big.len() as u64;
    let image = layout.add_image("big", "amd64", &[big]);
    let up = Distribution::start();
    up.push(scratch.path(), &layout.oci_ref("big"), "team/big:v1", None);
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let digest = image.layer_digests[0].clone();
    let path = format!("/v2/{UP}/team/big/blobs/{digest}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (barrier, path, addr) = (barrier.clone(), path.clone(), berth.addr());
                tokio::spawn(async move {
                    barrier.wait().await;
                    http_get(addr, &path, &[], false, Duration::from_secs(240)).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
        out
    });
    for (i, r) in results.into_iter().enumerate() {
        let f = r.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(f.status, 200, "client {i}");
        assert_eq!(f.len, size, "client {i} length");
        assert_eq!(f.digest, digest, "client {i} bytes");
    }
    assert_eq!(
        upstream_count(&up, "GET", &format!("/v2/team/big/blobs/{digest}"), 1),
        1,
        "upstream GETs of the blob for {CLIENTS} concurrent cold clients"
    );
    assert_eq!(berth.metric("berth_cache_upstream_requests_total"), 1.0);
    assert_eq!(
        berth.metric("berth_cache_upstream_bytes_total") as u64,
        size
    );
    assert_eq!(berth.metric("berth_cache_misses_total"), 1.0);
    let coalesced = berth.metric("berth_cache_coalesced_total");
    let hits = berth.metric("berth_cache_hits_total");
    assert!(coalesced >= 1.0, "no client joined the download");
    assert_eq!(
        coalesced + hits,
        (CLIENTS - 1) as f64,
        "every other client joined the fill or found the blob cached"
    );
    assert_eq!(sha256(&berth.stored_blob(&digest)), digest);

    // The same for a cold tag: one upstream GET for all of them.
    let manifest_path = format!("/v2/{UP}/team/big/manifests/v1");
    let results = rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (barrier, path, addr) = (barrier.clone(), manifest_path.clone(), berth.addr());
                tokio::spawn(async move {
                    barrier.wait().await;
                    http_get(
                        addr,
                        &path,
                        &[("accept", ACCEPT)],
                        false,
                        Duration::from_secs(60),
                    )
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
        out
    });
    for (i, r) in results.into_iter().enumerate() {
        let f = r.unwrap_or_else(|e| panic!("manifest client {i}: {e}"));
        assert_eq!(f.status, 200, "manifest client {i}");
        assert_eq!(f.digest, image.manifest_digest, "manifest client {i}");
    }
    assert_eq!(
        upstream_count(&up, "GET", "/v2/team/big/manifests/v1", 1),
        1,
        "upstream GETs of a tag for {CLIENTS} concurrent cold clients"
    );
    assert_eq!(berth.metric("berth_cache_upstream_requests_total"), 2.0);
}

/// A client that goes away in the middle of a cold blob does not stop its
/// download: the blob is cached whole, from one upstream GET.
#[test]
fn a_client_leaving_mid_download_does_not_abort_the_fill() {
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let image = layout.add_image("v1", "amd64", &[layer(13, 16 << 20)]);
    let up = Distribution::start();
    up.push(scratch.path(), &layout.oci_ref("v1"), "team/app:v1", None);
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let digest = image.layer_digests[0].clone();
    {
        let mut s = std::net::TcpStream::connect(berth.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            s,
            "GET /v2/{UP}/team/app/blobs/{digest} HTTP/1.1\r\nHost: {}\r\n\r\n",
            berth.host()
        )
        .expect("send");
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).expect("first bytes");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Dropped here, with most of the blob unread.
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !berth.holds_blob(&digest) {
        assert!(
            Instant::now() < deadline,
            "the fill stopped with its client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sha256(&berth.stored_blob(&digest)), digest);
    let f = http_get_blocking(
        berth.addr(),
        &format!("/v2/{UP}/team/app/blobs/{digest}"),
        &[],
    )
    .expect("from the cache");
    assert_eq!(f.digest, digest);
    assert_eq!(
        upstream_count(&up, "GET", &format!("/v2/team/app/blobs/{digest}"), 1),
        1
    );
}

/// Pushing into a mirrored repository preloads it (the air-gap workflow):
/// the pushed tag, which the upstream does not have, is served like a
/// cached one, online and then `--offline`.
#[test]
fn pushing_into_a_mirrored_repository_preloads_it() {
    let fx = fixture(10);
    let up = Distribution::start();
    let mut berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let dest = format!("docker://{}/{UP}/team/preloaded:v1", berth.host());
    run(skopeo(fx.scratch.path()).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &fx.layout.oci_ref("v1"),
        &dest,
    ]));
    let tag = format!("/v2/{UP}/team/preloaded/manifests/v1");
    expect_manifest(&berth, &tag, &fx.v1.manifest);
    expect_blobs(&berth, &format!("{UP}/team/preloaded"), &fx.v1.blobs(), "");
    // The upstream was asked about the tag once (404); within the TTL,
    // further pulls of it do not ask again.
    let asked = |up: &Distribution| {
        up.requests("HEAD", "/v2/team/preloaded/manifests/v1")
            + up.requests("GET", "/v2/team/preloaded/manifests/v1")
    };
    let first = upstream_lines(&up);
    assert_eq!(asked(&up), 1, "{first:#?}");
    for _ in 0..3 {
        expect_manifest(&berth, &tag, &fx.v1.manifest);
    }
    let lines = upstream_lines(&up);
    assert_eq!(
        asked(&up),
        1,
        "a pushed tag was re-asked upstream on every pull: {:#?}",
        &lines[first.len()..]
    );
    let out = fx.scratch.path().join("out");
    run(skopeo(fx.scratch.path()).args([
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:v1", out.display()),
    ]));

    let root = berth.root.clone();
    berth.kill9();
    let offline = Server::start_on_with(&root, &[upstream_flag(UP, &up), "--offline".into()]);
    expect_manifest(&offline, &tag, &fx.v1.manifest);
    expect_manifest(
        &offline,
        &format!("/v2/{UP}/team/preloaded/manifests/v1?ns={UP}"),
        &fx.v1.manifest,
    );
    let r = curl(
        "GET",
        &format!("{}/v2/team/preloaded/manifests/v1?ns={UP}", offline.url()),
    )
    .header("Accept", ACCEPT)
    .send();
    r.expect_status(200);
    assert!(r.body == fx.v1.manifest);
}

/// An upstream that accepts connections and never answers: a cached tag
/// past its TTL is still served promptly (berth stops waiting for the
/// revalidation long before the upstream client's own timeouts), and the
/// by-digest content needs no upstream at all.
#[test]
fn a_hanging_upstream_does_not_hold_cached_tags_hostage() {
    let fx = fixture(11);
    let mut up = Distribution::start();
    fx.push(&up, "v1", "team/app:v1");
    let berth = Server::start_with(&[upstream_flag(UP, &up), "--tag-ttl=3s".into()]);
    let repo = format!("{UP}/team/app");
    let tag = format!("/v2/{repo}/manifests/v1");
    expect_manifest(&berth, &tag, &fx.v1.manifest);
    expect_blobs(&berth, &repo, &fx.v1.blobs(), "");
    up.stop();
    let _hanging = FailingUpstream::start(up.port, Failing::Hang);
    std::thread::sleep(Duration::from_millis(3200));
    let started = Instant::now();
    expect_manifest(&berth, &tag, &fx.v1.manifest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a cached tag took {:?} behind a hanging upstream",
        started.elapsed()
    );
    // The pulls after it do not wait again: the tag is trusted for its TTL.
    let started = Instant::now();
    for _ in 0..3 {
        expect_manifest(&berth, &tag, &fx.v1.manifest);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "three more pulls of the cached tag took {:?}",
        started.elapsed()
    );
    assert_eq!(berth.metric("berth_cache_stale_serves_total"), 1.0);
    let started = Instant::now();
    expect_manifest(
        &berth,
        &format!("/v2/{repo}/manifests/{}", fx.v1.manifest_digest),
        &fx.v1.manifest,
    );
    expect_blobs(&berth, &repo, &fx.v1.blobs(), "");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(berth.metric("berth_cache_stale_serves_total") >= 1.0);
}

/// A range request on a blob nobody has pulled yet: 206 with the right
/// bytes while the fill runs, and the whole blob cached correctly after.
#[test]
fn a_range_request_on_a_cold_blob() {
    let fx = fixture(12);
    let up = Distribution::start();
    fx.push(&up, "v1", "team/app:v1");
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let digest = fx.v1.layer_digests[0].clone();
    let whole = fx.layout.blob(&digest);
    let url = format!("{}/v2/{UP}/team/app/blobs/{digest}", berth.url());
    for (start, end) in [
        (1_000_000usize, 1_200_000usize),
        (0, 99),
        (whole.len() - 10, whole.len() - 1),
    ] {
        let r = curl("GET", &url)
            .header("Range", &format!("bytes={start}-{end}"))
            .send();
        r.expect_status(206);
        r.expect_header(
            "Content-Range",
            &format!("bytes {start}-{end}/{}", whole.len()),
        );
        assert!(r.body == whole[start..=end], "bytes {start}-{end}");
    }
    let r = curl("GET", &url).send();
    r.expect_status(200);
    assert_eq!(sha256(&r.body), digest);
    assert_eq!(sha256(&berth.stored_blob(&digest)), digest);
    assert_eq!(
        upstream_count(&up, "GET", &format!("/v2/team/app/blobs/{digest}"), 1),
        1,
        "range requests each started their own download"
    );
}

/// Two repositories of one upstream share blobs (a common base layer):
/// clients of both, at once, on cold blobs, all get them, though the
/// download each joins was started for the other repository.
#[test]
fn concurrent_cold_pulls_of_a_blob_shared_by_two_repositories() {
    const PER_REPO: usize = 24;
    let fx = fixture(14);
    let up = Distribution::start();
    for repo in ["team/a", "team/b"] {
        fx.push(&up, "v1", &format!("{repo}:v1"));
        fx.push(&up, "v2", &format!("{repo}:v1"));
    }
    let berth = Server::start_with(&[upstream_flag(UP, &up)]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut failures = Vec::new();
    for digest in fx.v1.blobs().into_iter().chain(fx.v2.blobs()) {
        let results = rt.block_on(async {
            let barrier = Arc::new(tokio::sync::Barrier::new(2 * PER_REPO));
            let tasks: Vec<_> = (0..2 * PER_REPO)
                .map(|i| {
                    let repo = if i % 2 == 0 { "team/a" } else { "team/b" };
                    let path = format!("/v2/{UP}/{repo}/blobs/{digest}");
                    let (barrier, addr) = (barrier.clone(), berth.addr());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        (
                            repo,
                            http_get(addr, &path, &[], false, Duration::from_secs(60)).await,
                        )
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("client task"));
            }
            out
        });
        for (repo, r) in results {
            match r {
                Ok(f) if f.status == 200 && f.digest == digest => {}
                Ok(f) => failures.push(format!(
                    "{repo} {digest}: HTTP {} {}",
                    f.status,
                    String::from_utf8_lossy(&f.body)
                )),
                Err(e) => failures.push(format!("{repo} {digest}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed pulls:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
