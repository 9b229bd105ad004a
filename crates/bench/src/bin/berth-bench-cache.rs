//! `berth-bench-cache`: a cold pull of a multi-layer image through a
//! pull-through cache, by 1 and by 32 concurrent clients, three ways:
//!
//! - `direct`: straight from the upstream (Distribution 2.8, Debian's
//!   `docker-registry`), the baseline;
//! - `berth`: through `berth serve --upstream HOST=URL`, a fresh root for
//!   every run;
//! - `distribution-proxy`: through a second Distribution in proxy mode
//!   (`proxy.remoteurl`), fresh storage for every run.
//!
//! Every client GETs the manifest by tag, then every blob it lists (config
//! and layers) in turn, hashing each one against its digest. For each run it
//! prints time-to-first-byte of the blob GETs (median and worst), the total
//! time until the last client finished, and how many requests reached the
//! upstream, read from the upstream's own access log. Loopback only; every
//! request, every start-up and the whole run have time limits.
//!
//! Self-contained (the `berth-bench` modules are not a library): its own
//! small process and HTTP/1.1 helpers.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

/// The upstream's name in berth's repository names.
const UPSTREAM_HOST: &str = "bench.upstream.test";
const REPO: &str = "bench/app";
const TAG: &str = "v1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const STARTUP: Duration = Duration::from_secs(30);
const REQUEST_LIMIT: Duration = Duration::from_secs(300);

#[derive(Parser, Debug)]
#[command(
    name = "berth-bench-cache",
    about = "Cold pulls through berth's pull-through cache vs. the upstream directly and Distribution's proxy mode (loopback)"
)]
struct Args {
    /// Small image (seconds, not minutes): checks that the benchmark works.
    #[arg(long)]
    quick: bool,
    /// The berth binary [default: `berth` beside this program]
    #[arg(long)]
    berth: Option<PathBuf>,
    /// The Distribution binary [default: docker-registry on PATH]
    #[arg(long)]
    distribution: Option<PathBuf>,
    /// Concurrent clients per run, comma-separated [default: 1,32]
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Layers in the image [default: 4]
    #[arg(long)]
    layers: Option<usize>,
    /// Total size of the layers in MiB [default: 64, quick: 2]
    #[arg(long)]
    image_mib: Option<u64>,
    /// Directory for the servers' storage [default: the system's temporary directory]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give up after this many seconds [default: 900, quick: 120]
    #[arg(long)]
    max_seconds: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-bench-cache: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(
        args.max_seconds
            .unwrap_or(if args.quick { 120 } else { 900 }),
    );
    let outcome = runtime.block_on(async {
        tokio::time::timeout(limit, run(args))
            .await
            .unwrap_or_else(|_| Err(anyhow!("gave up after {limit:?} (--max-seconds)")))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench-cache: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Processes

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// A server process, killed when dropped (also on error or time-out).
struct Proc {
    name: String,
    addr: SocketAddr,
    log: PathBuf,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, port: u16, log: PathBuf) -> Result<Proc> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            child,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until `GET /v2/` answers 200.
    async fn ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    tail(&self.log_text())
                );
            }
            if let Ok(r) = send(self.addr, Method::GET, "/v2/", &[], None).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /v2/ within {STARTUP:?}:\n{}",
                    self.name,
                    tail(&self.log_text())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Requests in a Distribution access log: `METHOD URI` per line.
    fn access_log(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("] \"")? + 3..];
                Some(rest[..rest.find(" HTTP/")?].to_string())
            })
            .collect()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Start `docker-registry serve` on fresh storage under `dir`, with its
/// access log on; `proxy` makes it a pull-through cache of that URL.
async fn start_distribution(
    bin: &Path,
    dir: &Path,
    name: &str,
    proxy: Option<&str>,
) -> Result<Proc> {
    let mut last = None;
    for attempt in 0..3 {
        let port = free_port()?;
        let storage = dir.join(format!("{name}-{attempt}"));
        std::fs::create_dir_all(&storage)?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-bench-cache\n",
            storage.display()
        );
        if let Some(url) = proxy {
            config.push_str(&format!("proxy:\n  remoteurl: {url}\n"));
        }
        let config_path = dir.join(format!("{name}-{attempt}.yml"));
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&config_path);
        let mut p = Proc::spawn(name, cmd, port, dir.join(format!("{name}-{attempt}.log")))?;
        match p.ready().await {
            Ok(()) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{name} did not start")))
}

/// Start `berth serve` on a fresh root under `dir`, mirroring the upstream.
async fn start_berth(bin: &Path, dir: &Path, name: &str, upstream: &str) -> Result<Proc> {
    let mut last = None;
    for attempt in 0..3 {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--root"])
            .arg(dir.join(format!("{name}-{attempt}")))
            .arg(format!("--upstream={UPSTREAM_HOST}={upstream}"))
            .env("RUST_LOG", "warn");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BERTH_") {
                cmd.env_remove(key);
            }
        }
        let mut p = Proc::spawn(name, cmd, port, dir.join(format!("{name}-{attempt}.log")))?;
        match p.ready().await {
            Ok(()) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{name} did not start")))
}

// ---------------------------------------------------------------------------
// HTTP/1.1, one connection per request

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Result<Resp> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body.unwrap_or_default()))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        task.abort();
        Ok::<_, anyhow::Error>(Resp {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_LIMIT, work)
        .await
        .map_err(|_| anyhow!("{path}: no answer within {REQUEST_LIMIT:?}"))?
}

/// One blob GET: time to the first body byte, and the bytes' digest.
struct BlobGet {
    ttfb: Duration,
    len: u64,
}

async fn get_blob(addr: SocketAddr, path: &str, digest: &str) -> Result<BlobGet> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let sent = Instant::now();
        let resp = sender.send_request(req).await?;
        if resp.status() != 200 {
            bail!("GET {path}: {}", resp.status());
        }
        let mut body = resp.into_body();
        let mut hasher = Sha256::new();
        let (mut len, mut ttfb) = (0u64, None);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if ttfb.is_none() && !data.is_empty() {
                    ttfb = Some(sent.elapsed());
                }
                hasher.update(&data);
                len += data.len() as u64;
            }
        }
        task.abort();
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest {
            bail!("GET {path}: the body hashes to {got}");
        }
        Ok(BlobGet {
            ttfb: ttfb.unwrap_or_else(|| sent.elapsed()),
            len,
        })
    };
    tokio::time::timeout(REQUEST_LIMIT, work)
        .await
        .map_err(|_| anyhow!("GET {path}: not complete within {REQUEST_LIMIT:?}"))?
}

// ---------------------------------------------------------------------------
// The image

/// Deterministic pseudo-random bytes (xorshift64), different per seed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Push one blob (POST, then a monolithic PUT).
async fn push_blob(addr: SocketAddr, bytes: Bytes) -> Result<String> {
    let digest = sha256_digest(&bytes);
    let start = send(
        addr,
        Method::POST,
        &format!("/v2/{REPO}/blobs/uploads/"),
        &[],
        None,
    )
    .await?;
    if start.status != 202 {
        bail!("starting an upload: {}", start.status);
    }
    let location = start
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("upload without a Location")?;
    let path = match location.find("/v2/") {
        Some(i) => &location[i..],
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = send(
        addr,
        Method::PUT,
        &format!("{path}{sep}digest={digest}"),
        &[("content-type", "application/octet-stream")],
        Some(bytes),
    )
    .await?;
    if put.status != 201 {
        bail!("finishing an upload: {}", put.status);
    }
    Ok(digest)
}

/// Generate `layers` layers adding up to `total` bytes (the first largest)
/// and a config, push them and a manifest tagged [`TAG`]. Returns the blob
/// digests (config first) and their total size.
async fn push_image(addr: SocketAddr, layers: usize, total: u64) -> Result<(Vec<String>, u64)> {
    let weights: u64 = (1..=layers as u64).sum();
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    let mut size = 0u64;
    for i in 0..layers {
        let len = (total * (layers - i) as u64 / weights) as usize;
        let bytes = Bytes::from(pseudo_random(len, 1000 + i as u64));
        size += len as u64;
        let digest = push_blob(addr, bytes).await?;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest, "size": len,
        }));
        digests.push(digest);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": digests},
    }))?;
    let config_len = config.len();
    size += config_len as u64;
    let config_digest = push_blob(addr, Bytes::from(config)).await?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_len},
        "layers": descs,
    }))?;
    let put = send(
        addr,
        Method::PUT,
        &format!("/v2/{REPO}/manifests/{TAG}"),
        &[("content-type", OCI_MANIFEST)],
        Some(Bytes::from(manifest)),
    )
    .await?;
    if put.status != 201 {
        bail!(
            "pushing the manifest: {} {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        );
    }
    digests.insert(0, config_digest);
    Ok((digests, size))
}

// ---------------------------------------------------------------------------
// One measured run

struct Outcome {
    target: &'static str,
    clients: usize,
    ttfb_p50: Duration,
    ttfb_max: Duration,
    total: Duration,
    bytes: u64,
    upstream_requests: usize,
    upstream_blob_gets: usize,
}

/// One client's pull: the manifest by tag, then every blob in turn.
async fn pull(addr: SocketAddr, repo: String) -> Result<(Vec<Duration>, u64)> {
    let m = send(
        addr,
        Method::GET,
        &format!("/v2/{repo}/manifests/{TAG}"),
        &[("accept", OCI_MANIFEST)],
        None,
    )
    .await?;
    if m.status != 200 {
        bail!("GET manifest: {}", m.status);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&m.body)?;
    let mut digests = vec![manifest["config"]["digest"]
        .as_str()
        .context("manifest without a config")?
        .to_string()];
    for l in manifest["layers"]
        .as_array()
        .context("manifest without layers")?
    {
        digests.push(l["digest"].as_str().context("layer digest")?.to_string());
    }
    let (mut ttfbs, mut bytes) = (Vec::new(), 0u64);
    for d in digests {
        let got = get_blob(addr, &format!("/v2/{repo}/blobs/{d}"), &d).await?;
        ttfbs.push(got.ttfb);
        bytes += got.len;
    }
    Ok((ttfbs, bytes))
}

async fn measure(
    target: &'static str,
    addr: SocketAddr,
    repo: &str,
    clients: usize,
    upstream: &Proc,
) -> Result<Outcome> {
    let before = upstream.access_log().len();
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (barrier, repo) = (barrier.clone(), repo.to_string());
            tokio::spawn(async move {
                barrier.wait().await;
                pull(addr, repo).await
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let (mut ttfbs, mut bytes) = (Vec::new(), 0u64);
    for (i, t) in tasks.into_iter().enumerate() {
        let (t, b) = t
            .await
            .context("client task")?
            .with_context(|| format!("{target}: client {i}"))?;
        ttfbs.extend(t);
        bytes += b;
    }
    let total = start.elapsed();
    // The access log line of a request is written as its response completes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = upstream.access_log();
    let new = &lines[before.min(lines.len())..];
    let upstream_blob_gets = new
        .iter()
        .filter(|l| l.starts_with(&format!("GET /v2/{REPO}/blobs/")))
        .count();
    ttfbs.sort();
    Ok(Outcome {
        target,
        clients,
        ttfb_p50: ttfbs.get(ttfbs.len() / 2).copied().unwrap_or_default(),
        ttfb_max: ttfbs.last().copied().unwrap_or_default(),
        total,
        bytes,
        upstream_requests: new.iter().filter(|l| l.contains("/v2/")).count(),
        upstream_blob_gets,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run(args: Args) -> Result<()> {
    let berth_bin = match args.berth {
        Some(p) => p,
        None => {
            let beside = std::env::current_exe()?.with_file_name("berth");
            if !beside.is_file() {
                bail!(
                    "no berth binary at {} (cargo build --release -p berth, or pass --berth)",
                    beside.display()
                );
            }
            beside
        }
    };
    let dist_bin = match args.distribution {
        Some(p) => p,
        None => find_on_path("docker-registry")
            .context("docker-registry is not installed (apt-get install docker-registry)")?,
    };
    let clients = if args.clients.is_empty() {
        vec![1, 32]
    } else {
        args.clients.clone()
    };
    if clients.iter().any(|&c| c == 0 || c > 256) {
        bail!("--clients: each count must be 1..=256");
    }
    let layers = args.layers.unwrap_or(4).clamp(1, 64);
    let total = args.image_mib.unwrap_or(if args.quick { 2 } else { 64 }) << 20;
    let work = match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("berth-bench-cache-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("berth-bench-cache-")
            .tempdir()?,
    };
    let dir = work.path();

    let upstream = start_distribution(&dist_bin, dir, "upstream", None).await?;
    let upstream_url = format!("http://{}", upstream.addr);
    let (blobs, size) = push_image(upstream.addr, layers, total).await?;

    println!("berth-bench-cache: cold pulls through a pull-through cache, loopback only");
    println!(
        "  image: {layers} layers + config, {:.1} MiB in {} blobs; cores: {}",
        size as f64 / (1 << 20) as f64,
        blobs.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  upstream: Distribution 2.8 (docker-registry) at {upstream_url}");
    println!("  berth: {}", berth_bin.display());
    println!("  each client: GET manifest by tag, then every blob in turn, verified");
    println!();

    let mut results = Vec::new();
    for &n in &clients {
        // Straight from the upstream: the baseline.
        results.push(measure("direct", upstream.addr, REPO, n, &upstream).await?);

        let berth = start_berth(&berth_bin, dir, &format!("berth-c{n}"), &upstream_url).await?;
        let repo = format!("{UPSTREAM_HOST}/{REPO}");
        results.push(measure("berth", berth.addr, &repo, n, &upstream).await?);
        drop(berth);

        let proxy =
            start_distribution(&dist_bin, dir, &format!("proxy-c{n}"), Some(&upstream_url)).await?;
        results.push(measure("distribution-proxy", proxy.addr, REPO, n, &upstream).await?);
        drop(proxy);
    }

    println!(
        "{:<20} {:>7} {:>11} {:>11} {:>10} {:>9} {:>13} {:>18}",
        "target",
        "clients",
        "TTFB p50",
        "TTFB max",
        "total",
        "MiB/s",
        "upstream reqs",
        "upstream blob GETs"
    );
    for r in &results {
        println!(
            "{:<20} {:>7} {:>11} {:>11} {:>10} {:>9.0} {:>13} {:>18}",
            r.target,
            r.clients,
            ms(r.ttfb_p50),
            ms(r.ttfb_max),
            format!("{:.2} s", r.total.as_secs_f64()),
            r.bytes as f64 / (1 << 20) as f64 / r.total.as_secs_f64().max(1e-9),
            r.upstream_requests,
            r.upstream_blob_gets,
        );
    }
    println!();
    println!(
        "blob GETs a client makes: {}; a cache that coalesces makes that many upstream blob GETs per cold run, whatever the number of clients.",
        blobs.len()
    );
    Ok(())
}
