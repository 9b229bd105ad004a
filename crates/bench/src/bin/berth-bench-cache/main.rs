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
//! measures time-to-first-byte of the blob GETs (median and worst), the total
//! time until the last client finished, and how many requests reached the
//! upstream, read from the upstream's own access log. Every client count and
//! target runs `--repeats` times (5; 1 with `--quick`); `summary` prints the
//! medians with ranges and judges the targets of issue 16 on the medians.
//! Loopback only; every request, every start-up and the whole run have time
//! limits.
//!
//! `--json` prints the figures as JSON on stdout (the table goes to stderr):
//! `berth-bench` runs this program that way for its `cache` workload.
//!
//! Self-contained (the `berth-bench` modules are not a library): its own
//! small process (`proc`) and HTTP/1.1 (`http`) helpers.
//!
//! Exit status: 0 when every run produced its figures, even if targets were
//! missed; 1 on any error.

mod http;
mod proc;
mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::Method;
use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use crate::http::{get_blob, push_image, send};
use crate::proc::{find_on_path, start_berth, start_distribution, Proc};
use crate::summary::Outcome;

/// The upstream's name in berth's repository names.
const UPSTREAM_HOST: &str = "bench.upstream.test";
const REPO: &str = "bench/app";
const TAG: &str = "v1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Parser, Debug)]
#[command(
    name = "berth-bench-cache",
    about = "Cold pulls through berth's pull-through cache vs. the upstream directly and Distribution's proxy mode (loopback)"
)]
struct Args {
    /// Small image, one run each (seconds, not minutes): checks that the
    /// benchmark works.
    #[arg(long)]
    quick: bool,
    /// The berth binary [default: `berth` beside this program]
    #[arg(long)]
    berth: Option<PathBuf>,
    /// The Distribution binary [default: docker-registry on PATH]
    #[arg(long)]
    distribution: Option<PathBuf>,
    /// Concurrent clients per run, comma-separated; 1 is always run (the
    /// baseline of the time target) [default: 1,32]
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Layers in the image [default: 4]
    #[arg(long)]
    layers: Option<usize>,
    /// Total size of the layers in MiB [default: 64, quick: 2]
    #[arg(long)]
    image_mib: Option<u64>,
    /// Runs of every target and client count [default: 5, quick: 1]
    #[arg(long)]
    repeats: Option<usize>,
    /// Print the figures as JSON on stdout, the table on stderr
    #[arg(long)]
    json: bool,
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

// One measured run

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
    let mut clients = if args.clients.is_empty() {
        vec![1, 32]
    } else {
        args.clients.clone()
    };
    if clients.iter().any(|&c| c == 0 || c > 256) {
        bail!("--clients: each count must be 1..=256");
    }
    // One client straight from the upstream is the time target's baseline.
    clients.push(1);
    clients.sort_unstable();
    clients.dedup();
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 1 } else { 5 })
        .clamp(1, 100);
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

    let mut report = String::new();
    report.push_str("berth-bench-cache: cold pulls through a pull-through cache, loopback only\n");
    report.push_str(&format!(
        "  image: {layers} layers + config, {:.1} MiB in {} blobs; cores: {}\n",
        size as f64 / (1 << 20) as f64,
        blobs.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    report.push_str(&format!(
        "  upstream: Distribution 2.8 (docker-registry) at {upstream_url}\n"
    ));
    report.push_str(&format!("  berth: {}\n", berth_bin.display()));
    report.push_str(&format!(
        "  each client: GET manifest by tag, then every blob in turn, verified; {repeats} run(s) of each\n"
    ));
    report.push_str(
        "  WARNING: absolute figures vary from run to run and machine to machine; \
         compare the ratios, each measured in this run.\n\n",
    );

    let mut results = Vec::new();
    for rep in 0..repeats {
        for &n in &clients {
            eprintln!("==> cache: run {}/{repeats}, {n} client(s)", rep + 1);
            // Straight from the upstream: the baseline.
            results.push(measure("direct", upstream.addr, REPO, n, &upstream).await?);

            let name = format!("berth-c{n}-r{rep}");
            let berth = start_berth(&berth_bin, dir, &name, &upstream_url).await?;
            let repo = format!("{UPSTREAM_HOST}/{REPO}");
            results.push(measure("berth", berth.addr, &repo, n, &upstream).await?);
            drop(berth);

            let name = format!("proxy-c{n}-r{rep}");
            let proxy = start_distribution(&dist_bin, dir, &name, Some(&upstream_url)).await?;
            results.push(measure("distribution-proxy", proxy.addr, REPO, n, &upstream).await?);
            drop(proxy);
        }
    }

    let groups = summary::groups(&results);
    report.push_str(&summary::table(&groups));
    report.push('\n');
    report.push_str(&format!(
        "blob GETs a client makes: {}; a cache that coalesces makes that many upstream blob GETs per cold run, whatever the number of clients.\n",
        blobs.len()
    ));
    report.push_str(&summary::verdicts(&groups, blobs.len()));
    if args.json {
        eprint!("{report}");
        println!("{}", summary::json(&groups, blobs.len(), size, repeats));
    } else {
        print!("{report}");
    }
    Ok(())
}
