//! Several `berth serve` replicas on one S3 bucket (a real Garage) behind
//! nginx are one registry: pushes through any replica are pulled through
//! every other at once, upload sessions move between replicas, tag moves
//! and deletes reach the others' memos within their bound, a cold blob is
//! fetched from the upstream once however many replicas are asked, and a
//! replica killed mid-pull costs its clients a retry, never a corrupt blob.
//! Clients are skopeo, containerd's `ctr` and curl; the upstream is
//! Distribution. Everything listens on 127.0.0.1; every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The bound on how long another replica's tag move may go unseen
/// (`memo_ttl`, 1 s by default), with room for a slow machine.
const MEMO_BOUND: Duration = Duration::from_millis(2500);

struct Replicas {
    servers: Vec<Server>,
    lb: Nginx,
    lb_log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// `n` replicas on a fresh prefix, each knowing the others, behind nginx
    /// (round robin, no stickiness: consecutive requests of one client go to
    /// different replicas).
    fn start(n: usize, extra: &[String]) -> Replicas {
        Replicas::start_with(n, "", extra)
    }

    /// [`Replicas::start`] with `more_toml` in every replica's configuration.
    fn start_with(n: usize, more_toml: &str, extra: &[String]) -> Replicas {
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = addrs
            .iter()
            .map(|a| format!("\"http://{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Replicas::launch(
            &addrs,
            &format!("peers = [{peers}]"),
            None,
            more_toml,
            extra,
        )
    }

    /// `n` replicas that know each other only through DNS, as a headless
    /// Service gives it: `PEERS_NAME` resolves (through `hosts`, the
    /// `/etc/hosts` of each replica's own mount namespace) to 127.0.0.2,
    /// 127.0.0.3, ..., where they listen on one port; `peers_dns` names it.
    fn start_dns(n: usize, hosts: &std::path::Path, extra: &[String]) -> Replicas {
        let port = free_port();
        let addrs: Vec<String> = (0..n)
            .map(|i| format!("127.0.0.{}:{port}", i + 2))
            .collect();
        write_hosts(hosts, &addrs);
        let discovery = format!("peers_dns = \"{PEERS_NAME}:{port}\"");
        Replicas::launch(&addrs, &discovery, Some(hosts), "", extra)
    }

    /// Replicas listening on `addrs`, finding each other by `discovery`
    /// (a `[cluster]` line), behind nginx.
    fn launch(
        addrs: &[String],
        discovery: &str,
        hosts: Option<&std::path::Path>,
        more_toml: &str,
        extra: &[String],
    ) -> Replicas {
        let prefix = fresh_s3_prefix();
        let dir = tempfile::tempdir().expect("replicas dir");
        let secret = dir.path().join("peer-secret");
        std::fs::write(&secret, "replica-secret-0123456789abcdef-0123456789\n")
            .expect("write peer secret");
        let servers = addrs
            .iter()
            .map(|a| {
                let toml = format!(
                    "{more_toml}\n[cluster]\nself_url = \"http://{a}\"\n{discovery}\nsecret_file = \"{}\"\n",
                    secret.display()
                );
                let mut args = vec![format!("--listen={a}")];
                args.extend(extra.iter().cloned());
                match hosts {
                    Some(h) => Server::start_s3_with_hosts(&prefix, &toml, &args, h),
                    None => Server::start_s3(&prefix, &toml, &args),
                }
            })
            .collect();
        let lb_log = dir.path().join("lb.log");
        let upstream = addrs
            .iter()
            .map(|a| format!("    server {a} max_fails=0;\n"))
            .collect::<String>();
        let lb = Nginx::start_with(
            &format!(
                "  upstream berth_replicas {{\n{upstream}  }}\n  \
                 log_format lb '$request_method $uri $status up=$upstream_addr';\n"
            ),
            &format!(
                "    location = /nginx-ready {{ return 200; }}\n    location / {{\n      \
                 proxy_pass http://berth_replicas;\n      proxy_http_version 1.1;\n      \
                 proxy_set_header Host $http_host;\n      proxy_set_header Connection \"\";\n      \
                 proxy_request_buffering off;\n      proxy_buffering off;\n      \
                 client_max_body_size 0;\n      proxy_next_upstream error timeout;\n      \
                 proxy_connect_timeout 2s;\n      access_log {} lb;\n    }}\n",
                lb_log.display()
            ),
        );
        Replicas {
            servers,
            lb,
            lb_log,
            _dir: dir,
        }
    }

    fn lb_host(&self) -> String {
        self.lb.url().trim_start_matches("http://").to_string()
    }

    fn lb_log(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(&self.lb_log).unwrap_or_default()
    }
}

/// The name a headless Service of the replicas would have.
const PEERS_NAME: &str = "berth-peers.replicas.test";

/// An `/etc/hosts` where [`PEERS_NAME`] has the addresses of `addrs`,
/// rewritten in place (the replicas' bind mounts see the same file).
fn write_hosts(hosts: &std::path::Path, addrs: &[String]) {
    use std::io::Write as _;
    let mut text = String::from("127.0.0.1 localhost\n");
    for a in addrs {
        let ip = a.rsplit_once(':').map_or(a.as_str(), |(ip, _)| ip);
        text.push_str(&format!("{ip} {PEERS_NAME}\n"));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(hosts)
        .expect("open the hosts file");
    f.write_all(text.as_bytes()).expect("write the hosts file");
}

/// Poll (bounded) until `f` holds; how long it took.
fn within(bound: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// skopeo pushes through the load balancer; every replica serves the image
/// the moment the push returns; skopeo and containerd pull it back through
/// the load balancer; a chunked upload driven by hand across all three
/// replicas (POST on one, PATCHes on the others, PUT on the first) yields
/// the blob on every replica.
#[test]
fn replicas_behind_a_load_balancer_are_one_registry() {
    let set = Replicas::start(3, &[]);
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let image = layout.add_image(
        "v1",
        "amd64",
        &[
            pseudo_random(3 * 1024 * 1024 + 11, 1),
            pseudo_random(70_000, 2),
        ],
    );
    run(skopeo(scratch.path())
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(layout.oci_ref("v1"))
        .arg(format!("docker://{}/team/app:v1", set.lb_host())));
    for s in &set.servers {
        assert_eq!(
            manifest_digest(&s.url(), "team/app", "v1").as_deref(),
            Some(image.manifest_digest.as_str()),
            "replica {} right after the push",
            s.url()
        );
        for d in image.blobs() {
            curl("HEAD", &format!("{}/v2/team/app/blobs/{d}", s.url()))
                .send()
                .expect_status(200);
        }
    }
    let log = set.lb_log();
    for s in &set.servers {
        assert!(
            log.contains(&format!("up=127.0.0.1:{}", s.port)),
            "every replica took part of the push\n{log}"
        );
    }

    // Pulled back through the load balancer by skopeo and containerd.
    let out = scratch.path().join("pulled");
    run(skopeo(scratch.path())
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/app:v1", set.lb_host()))
        .arg(format!("oci:{}:v1", out.display())));
    let containerd = Containerd::start();
    run(containerd
        .ctr()
        .args(["content", "fetch", "--plain-http"])
        .arg(format!("{}/team/app:v1", set.lb_host())));
    let listed = run(containerd.ctr().args(["content", "ls", "-q"])).stdout_str();
    for d in image.blobs() {
        assert!(listed.contains(&d), "containerd holds {d}\n{listed}");
    }

    // One chunked upload, each request on another replica.
    let body = pseudo_random(2 * 1024 * 1024 + 5, 9);
    let digest = sha256(&body);
    let [a, b, c] = [&set.servers[0], &set.servers[1], &set.servers[2]];
    let start = curl(
        "POST",
        &format!("{}/v2/team/chunks/blobs/uploads/", a.url()),
    )
    .send();
    start.expect_status(202);
    let location = start.header("location").expect("Location").to_string();
    let path = location
        .find("/v2/")
        .map(|i| location[i..].to_string())
        .expect("a /v2/ path");
    let half = body.len() / 2;
    for (server, range) in [(b, 0..half), (c, half..body.len())] {
        let r = curl("PATCH", &format!("{}{path}", server.url()))
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                &format!("{}-{}", range.start, range.end - 1),
            )
            .body(body[range.clone()].to_vec())
            .send();
        r.expect_status(202);
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    curl("PUT", &format!("{}{path}{sep}digest={digest}", a.url()))
        .send()
        .expect_status(201);
    for s in &set.servers {
        let got = curl("GET", &format!("{}/v2/team/chunks/blobs/{digest}", s.url())).send();
        got.expect_status(200);
        assert!(got.body == body, "the blob from {}", s.url());
    }
}

/// A tag moved or a manifest deleted through one replica is seen by a
/// replica that had it in memory within the memo bound; a new tag at once.
#[test]
fn tag_moves_and_deletes_reach_the_other_replicas_within_the_bound() {
    let set = Replicas::start(2, &[]);
    let (a, b) = (&set.servers[0], &set.servers[1]);
    let (first, _) = push_small_image(a, "team/moving", "latest", 1);
    // New content: at once on the other replica.
    assert_eq!(
        manifest_digest(&b.url(), "team/moving", "latest").as_deref(),
        Some(first.as_str())
    );
    // `b` now remembers the tag; move it through `a`.
    let (second, _) = push_small_image(a, "team/moving", "latest", 2);
    assert_ne!(first, second);
    let took = within(MEMO_BOUND, "the moved tag", || {
        manifest_digest(&b.url(), "team/moving", "latest").as_deref() == Some(second.as_str())
    });
    eprintln!("tag move seen by the other replica after {took:?}");
    // Deleted through `b`: gone from `a`, which had read it.
    assert!(manifest_digest(&a.url(), "team/moving", &second).is_some());
    curl(
        "DELETE",
        &format!("{}/v2/team/moving/manifests/{second}", b.url()),
    )
    .send()
    .expect_status(202);
    within(MEMO_BOUND, "the delete", || {
        manifest_digest(&a.url(), "team/moving", &second).is_none()
    });
}

/// The upstream's name in repository names (`--upstream` points it at
/// Distribution on loopback).
const UP: &str = "registry.upstream.test";

/// Twelve clients, four on each of three replicas, ask at the same moment
/// for the same cold layers: the upstream serves each blob once, every
/// client gets every byte, and the replicas that do not own a blob
/// forwarded to the one that does.
#[test]
fn a_cold_blob_is_fetched_once_across_replicas() {
    let up = Distribution::start();
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let image = layout.add_image(
        "v1",
        "amd64",
        &[
            pseudo_random(6 * 1024 * 1024, 21),
            pseudo_random(9 * 1024 * 1024 + 3, 22),
        ],
    );
    up.push(scratch.path(), &layout.oci_ref("v1"), "team/cold:v1", None);
    let set = Replicas::start(3, &[format!("--upstream={UP}={}", up.url())]);
    let layers: Vec<String> = image.layer_digests.clone();
    let mut clients = Vec::new();
    for i in 0..12 {
        let url = set.servers[i % 3].url();
        let layers = layers.clone();
        clients.push(std::thread::spawn(move || {
            layers.iter().all(|d| {
                let r = curl("GET", &format!("{url}/v2/{UP}/team/cold/blobs/{d}")).send();
                r.expect_status(200);
                sha256(&r.body) == *d
            })
        }));
    }
    for c in clients {
        assert!(c.join().expect("client thread"), "a client got wrong bytes");
    }
    for d in &layers {
        assert_eq!(
            up.requests("GET", &format!("/v2/team/cold/blobs/{d}")),
            1,
            "upstream GETs of {d}\n{}",
            up.log()
        );
    }
    let forwards: f64 = set
        .servers
        .iter()
        .map(|s| s.metric("berth_cache_peer_forwards_total"))
        .sum();
    assert!(forwards >= 1.0, "no replica forwarded to an owner");
    let fallbacks: f64 = set
        .servers
        .iter()
        .map(|s| s.metric("berth_cache_peer_fallbacks_total"))
        .sum();
    assert_eq!(fallbacks, 0.0);
}

/// The replica set each replica uses now, as its last "replica set
/// changed" log line names it (addresses only, sorted).
fn replica_set(server: &Server) -> Vec<String> {
    let log = server.log();
    let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.contains("replica set changed"))
    else {
        return Vec::new();
    };
    let mut found: Vec<String> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .filter(|w| w.starts_with("127.0.0.") && w.contains(':'))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Replicas that find each other through DNS (`peers_dns`, a headless
/// Service's name; here resolved through the hosts file of each replica's
/// mount namespace) agree on the replica set and fetch a cold blob from
/// the upstream once: twelve clients on three replicas. When a replica
/// leaves (killed, and gone from the name's addresses, as Kubernetes does
/// it), the others drop it within their 10 s re-read, and a new cold blob
/// is again fetched once, with no fall-back to the departed owner.
#[test]
fn replicas_found_through_dns_fetch_a_cold_blob_once() {
    let up = Distribution::start();
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let blobs = |seed: u64| {
        vec![
            pseudo_random(3 << 20, seed),
            pseudo_random((5 << 20) + 1, seed + 1),
        ]
    };
    let first = layout.add_image("v1", "amd64", &blobs(31));
    let second = layout.add_image("v2", "amd64", &blobs(41));
    up.push(scratch.path(), &layout.oci_ref("v1"), "team/dns:v1", None);
    up.push(scratch.path(), &layout.oci_ref("v2"), "team/dns:v2", None);
    let hosts = scratch.path().join("hosts");
    let mut set = Replicas::start_dns(3, &hosts, &[format!("--upstream={UP}={}", up.url())]);
    let addrs: Vec<String> = set.servers.iter().map(|s| s.host()).collect();
    let mut all = addrs.clone();
    all.sort();
    for s in &set.servers {
        within(
            Duration::from_secs(30),
            "every replica finds all three by DNS",
            || replica_set(s) == all,
        );
    }
    let fetch_once = |servers: &[&Server], layers: &[String], what: &str| {
        let mut clients = Vec::new();
        for i in 0..12 {
            let url = servers[i % servers.len()].url();
            let layers = layers.to_vec();
            clients.push(std::thread::spawn(move || {
                layers.iter().all(|d| {
                    let r = curl("GET", &format!("{url}/v2/{UP}/team/dns/blobs/{d}")).send();
                    r.status == 200 && sha256(&r.body) == *d
                })
            }));
        }
        for c in clients {
            assert!(
                c.join().expect("client thread"),
                "{what}: a client got wrong bytes"
            );
        }
        for d in layers {
            assert_eq!(
                up.requests("GET", &format!("/v2/team/dns/blobs/{d}")),
                1,
                "{what}: upstream GETs of {d}\n{}",
                up.log()
            );
        }
    };
    let everyone: Vec<&Server> = set.servers.iter().collect();
    fetch_once(&everyone, &first.layer_digests, "three replicas");
    let forwards: f64 = set
        .servers
        .iter()
        .map(|s| s.metric("berth_cache_peer_forwards_total"))
        .sum();
    assert!(forwards >= 1.0, "no replica forwarded to an owner");

    // One leaves: killed, and its address gone from the name.
    set.servers[2].kill9();
    write_hosts(&hosts, &addrs[..2]);
    let mut left = addrs[..2].to_vec();
    left.sort();
    for s in &set.servers[..2] {
        within(
            Duration::from_secs(30),
            "the survivors drop the departed replica",
            || replica_set(s) == left,
        );
    }
    let survivors: Vec<&Server> = set.servers[..2].iter().collect();
    fetch_once(&survivors, &second.layer_digests, "two replicas");
    let fallbacks: f64 = survivors
        .iter()
        .map(|s| s.metric("berth_cache_peer_fallbacks_total"))
        .sum();
    assert_eq!(
        fallbacks, 0.0,
        "a survivor still tried the departed replica"
    );
}

/// The replica that owns a cold blob's download is killed (-9) while a
/// client streams the blob through the load balancer: the client's
/// transfer breaks, its retry through the load balancer completes on the
/// survivors (which fetch the blob themselves while the owner is away),
/// and what ends up stored is the right blob and nothing else.
#[test]
fn a_replica_killed_mid_pull_costs_a_retry_not_a_corrupt_blob() {
    let up = Distribution::start();
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let big = pseudo_random(48 * 1024 * 1024, 31);
    let image = layout.add_image("v1", "amd64", &[big]);
    up.push(scratch.path(), &layout.oci_ref("v1"), "team/big:v1", None);
    let mut set = Replicas::start(2, &[format!("--upstream={UP}={}", up.url())]);
    let layer = image.layer_digests[0].clone();
    // Which replica owns it: the one that fetched it (or is fetching it)
    // from the upstream. Ask through the load balancer, slowly, and kill
    // the replica that Distribution's log shows serving the fill.
    let url = format!("{}/v2/{UP}/team/big/blobs/{layer}", set.lb.url());
    let slow = {
        let url = url.clone();
        std::thread::spawn(move || curl("GET", &url).limit_rate("4M").send_unchecked())
    };
    within(Duration::from_secs(30), "the fill to start", || {
        up.requests("GET", &format!("/v2/team/big/blobs/{layer}")) >= 1
            || set
                .servers
                .iter()
                .any(|s| s.metric("berth_cache_misses_total") >= 1.0)
    });
    std::thread::sleep(Duration::from_millis(500));
    let owner = set
        .servers
        .iter()
        .position(|s| s.metric("berth_cache_misses_total") >= 1.0)
        .expect("a replica started the fill");
    let metrics: Vec<(f64, f64)> = set
        .servers
        .iter()
        .map(|s| {
            (
                s.metric("berth_cache_misses_total"),
                s.metric("berth_cache_peer_forwards_total"),
            )
        })
        .collect();
    set.servers[owner].kill9();
    let broken = slow.join().expect("slow client");
    // Normally broken (the killed replica was streaming it, to the client
    // or to the replica the client asked); on a very slow machine the
    // transfer may have ended first, which proves less but is no fault.
    let complete = broken.status == 200 && sha256(&broken.body) == layer;
    eprintln!(
        "owner {owner}, (misses, forwards) {metrics:?}; slow client: {} with {} bytes, complete: {complete}",
        broken.status,
        broken.body.len(),
    );
    // The retry, through the load balancer, lands on the survivor.
    let mut done = false;
    for _ in 0..5 {
        let r = curl("GET", &url).send_unchecked();
        if r.status == 200 && sha256(&r.body) == layer {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(done, "a retry completed");
    let survivor = &set.servers[1 - owner];
    let stored = curl(
        "GET",
        &format!("{}/v2/{UP}/team/big/blobs/{layer}", survivor.url()),
    )
    .send();
    stored.expect_status(200);
    assert_eq!(sha256(&stored.body), layer);
    assert_eq!(survivor.metric("berth_cache_fill_failures_total"), 0.0);
}

/// Garage with three nodes and replication factor 3: with one storage node
/// stopped, everything acknowledged before is still pulled whole, and
/// pushes and pulls go on; after it returns, so does the rest.
#[test]
fn one_storage_node_down_loses_nothing_acknowledged() {
    let mut cluster = berth_s3_fixture::Garage::cluster(3);
    let prefix = fresh_s3_prefix();
    let a = Server::start_s3_on(&cluster, &prefix, "", &[]);
    let b = Server::start_s3_on(&cluster, &prefix, "", &[]);
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let before = layout.add_image(
        "before",
        "amd64",
        &[pseudo_random(7 * 1024 * 1024, 41), pseudo_random(5_000, 42)],
    );
    let after = layout.add_image("after", "amd64", &[pseudo_random(6 * 1024 * 1024, 43)]);
    let push = |server: &Server, tag: &str| {
        run(skopeo(scratch.path())
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(layout.oci_ref(tag))
            .arg(format!("docker://{}/team/app:{tag}", server.host())));
    };
    let pulled_whole = |server: &Server, image: &ImageInfo, tag: &str| {
        assert_eq!(
            manifest_digest(&server.url(), "team/app", tag).as_deref(),
            Some(image.manifest_digest.as_str())
        );
        for d in image.blobs() {
            let r = curl("GET", &format!("{}/v2/team/app/blobs/{d}", server.url())).send();
            r.expect_status(200);
            assert_eq!(sha256(&r.body), d, "blob {d} from {}", server.url());
        }
    };
    push(&a, "before");
    // Node 2 (not the one berth talks to) stops.
    cluster.stop_node(2);
    let node2 = cluster.endpoint_of(2);
    assert!(
        std::net::TcpStream::connect(node2.trim_start_matches("http://")).is_err(),
        "node 2 still answers at {node2}"
    );
    pulled_whole(&b, &before, "before");
    push(&b, "after");
    pulled_whole(&a, &after, "after");
    cluster.start_node(2);
    pulled_whole(&a, &before, "before");
    pulled_whole(&b, &after, "after");
}

/// With access control on and one signing key file shared by the
/// replicas, a token from one replica is good at every other: skopeo logs
/// in and pushes through the load balancer (round robin, so its token
/// request and the requests that use the token land on different
/// replicas), and a token from one replica reads through the other.
#[test]
fn tokens_from_one_replica_are_good_at_every_other() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("auth dir");
    let ht = htpasswd_file(dir.path(), &["ci"], "s3cret-pass");
    let key = dir.path().join("token.key");
    std::fs::write(
        &key,
        base64::engine::general_purpose::STANDARD.encode(pseudo_random(32, 77)),
    )
    .expect("write the signing key");
    let auth = everything_for(&ht, "ci").replacen(
        "[auth]\n",
        &format!("[auth]\nsigning_key_file = \"{}\"\n", key.display()),
        1,
    );
    let set = Replicas::start_with(2, &auth, &[]);
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let image = layout.add_image("v1", "amd64", &[pseudo_random(100_000, 78)]);
    run(skopeo(scratch.path())
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .args(["--dest-creds", "ci:s3cret-pass"])
        .arg(layout.oci_ref("v1"))
        .arg(format!("docker://{}/team/app:v1", set.lb_host())));
    let (a, b) = (&set.servers[0], &set.servers[1]);
    let token = curl(
        "GET",
        &format!(
            "{}/token?service=berth&scope=repository:team/app:pull",
            a.url()
        ),
    )
    .header(
        "Authorization",
        &format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ci:s3cret-pass")
        ),
    )
    .send();
    token.expect_status(200);
    let token = token.json()["token"].as_str().expect("a token").to_string();
    let r = curl("GET", &format!("{}/v2/team/app/manifests/v1", b.url()))
        .header("Accept", OCI_MANIFEST)
        .header("Authorization", &format!("Bearer {token}"))
        .send();
    r.expect_status(200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(image.manifest_digest.as_str())
    );

    // An API token made through one replica (it lives in the bucket) logs
    // in at the other, pulls through the load balancer, is listed by
    // either, and revoked through one it is refused by both.
    let berth_token = |args: &[&str], root: &std::path::Path| {
        run(std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("token")
            .args(args)
            .arg("--root")
            .arg(root))
    };
    let made = berth_token(
        &["create", "--user", "ci", "--scope", "pull:team/**"],
        &a.root,
    );
    let api_token = made.stdout_str().trim().to_string();
    assert!(api_token.starts_with("berth_"), "{}", made.describe());
    let id = api_token.split('_').nth(1).expect("token id").to_string();
    assert!(
        !std::fs::read_dir(a.root.join("auth/tokens")).is_ok_and(|mut d| d.next().is_some()),
        "the token was stored under the replica's root, not in the bucket"
    );
    let login = |s: &Server| {
        curl(
            "GET",
            &format!(
                "{}/token?service=berth&scope=repository:team/app:pull",
                s.url()
            ),
        )
        .header(
            "Authorization",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("ci:{api_token}"))
            ),
        )
        .send()
        .status
    };
    assert_eq!(login(b), 200, "the token made through a is refused by b");
    run(skopeo(scratch.path())
        .args(["copy", "--src-tls-verify=false"])
        .args(["--src-creds", &format!("ci:{api_token}")])
        .arg(format!("docker://{}/team/app:v1", set.lb_host()))
        .arg(format!(
            "oci:{}:pulled",
            scratch.path().join("pulled").display()
        )));
    assert!(berth_token(&["list"], &b.root).stdout_str().contains(&id));
    berth_token(&["revoke", &id], &b.root);
    for s in [a, b] {
        assert_eq!(
            login(s),
            401,
            "a revoked token still logs in at {}",
            s.url()
        );
    }
}

/// With `presign_blob_gets`, a blob GET is answered 307 to a presigned URL
/// of the store (a manifest GET is not); curl following it gets the bytes,
/// and skopeo pulls the image through the redirects.
#[test]
fn blob_gets_redirect_to_presigned_urls_when_enabled() {
    let server = Server::start_s3_keys(&fresh_s3_prefix(), "presign_blob_gets = \"60s\"", &[]);
    let scratch = tempfile::tempdir().expect("scratch");
    let layout = Layout::create(&scratch.path().join("layout"));
    let layer = pseudo_random(300_000, 91);
    let image = layout.add_image("v1", "amd64", std::slice::from_ref(&layer));
    run(skopeo(scratch.path())
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(layout.oci_ref("v1"))
        .arg(format!("docker://{}/team/app:v1", server.host())));
    let d = &image.layer_digests[0];
    let r = curl("GET", &format!("{}/v2/team/app/blobs/{d}", server.url())).send();
    r.expect_status(307);
    let location = r.header("location").expect("Location").to_string();
    assert!(
        location.starts_with(&garage().endpoint()) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    assert!(!location.contains(&garage().secret));
    let fetched = curl("GET", &location).send();
    fetched.expect_status(200);
    assert!(fetched.body == layer);
    // Not another repository's way in: the link is checked first.
    curl("GET", &format!("{}/v2/other/app/blobs/{d}", server.url()))
        .send()
        .expect_error(404, "BLOB_UNKNOWN");
    assert_eq!(
        manifest_digest(&server.url(), "team/app", "v1").as_deref(),
        Some(image.manifest_digest.as_str())
    );
    let out = scratch.path().join("pulled");
    run(skopeo(scratch.path())
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/app:v1", server.host()))
        .arg(format!("oci:{}:v1", out.display())));
    let pulled = Layout::init(&out);
    assert_eq!(
        pulled.descriptor("v1")["digest"].as_str(),
        Some(image.manifest_digest.as_str())
    );
}
