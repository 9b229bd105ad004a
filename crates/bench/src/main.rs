//! `berth-bench`: berth against Distribution 2.8 (Debian's `docker-registry`,
//! what `registry:2` runs) and against the physical ceilings measured in the
//! same run (issue 16): one core's SHA-256 for pushes, nginx's `sendfile`
//! (plain and over TLS) for blob reads. Loopback, same storage, same client,
//! servers alternated, every workload repeated (at least 5 times in a full
//! run). Prints a table of each figure for berth and its reference as the
//! median with the min–max range, the ratio of the medians, the target and
//! whether berth meets it. Absolute figures vary from run to run and machine
//! to machine; ratios, each against its ceiling in this run, are what to
//! compare.
//!
//! Modules: `servers` (starting and killing the processes), `client` (the
//! measuring HTTP/1.1 client), `blob` (generated blobs and their digests),
//! `ops` (registry operations), `wrk` (small-request load), `stats` (the
//! samples of a figure, median and range), `ceiling` (one core's SHA-256),
//! `bench` (the plan; pushes, manifest GETs, listings), `get` (blob GETs and
//! concurrent downloads against nginx), `large` (a huge manifest), `tls`
//! (TLS with access control against plain HTTP and nginx over TLS), `gc`
//! (garbage collection of a large store, on servers of its own), `cache`
//! (cold pulls through the cache, run by `berth-bench-cache`, whose
//! upstream is behind a rate-limited link in a network namespace of its
//! own: the one workload not on loopback alone), `s3` and `s3_pulls`
//! (berth on a Garage it starts, against Distribution's S3 driver and local
//! disk, and cold pulls through replicas on one bucket; only when asked
//! for, `scripts/bench s3`), `report` (the table).
//!
//! Exit status: 0 when every workload produced its figures, even if targets
//! were missed (it is a measurement); 1 when any workload errored, so that
//! `--quick` in the test suite guards the tooling; 2 on bad usage.
#![forbid(unsafe_code)]

mod bench;
mod blob;
mod cache;
mod ceiling;
mod client;
mod gc;
mod get;
mod large;
mod ops;
mod pin;
mod report;
mod s3;
mod s3_pulls;
mod servers;
mod stats;
mod tls;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::bench::{Bench, Plan};

#[derive(Parser, Debug)]
#[command(
    name = "berth-bench",
    about = "Benchmark berth against Distribution 2.8 (docker-registry) on loopback"
)]
struct Args {
    /// Every workload once at small sizes (seconds, not minutes): checks that
    /// the benchmark works; the figures mean nothing.
    #[arg(long)]
    quick: bool,
    /// The berth binary [default: `berth` beside this program]
    #[arg(long)]
    berth: Option<PathBuf>,
    /// The Distribution binary [default: docker-registry on PATH]
    #[arg(long)]
    distribution: Option<PathBuf>,
    /// The nginx binary [default: nginx on PATH or in /usr/sbin]
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Directory for the servers' storage (one fresh subdirectory per run,
    /// removed afterwards) [default: the system's temporary directory]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give up after this many seconds [default: 2700, quick: 240]
    #[arg(long)]
    max_seconds: Option<u64>,
    /// Run only these workloads (for profiling one path); comma-separated
    /// from: push, chunked, get, manifest, large, listing, tls, gc, cache,
    /// s3 [default: all but s3, which needs Garage: `scripts/bench s3`]
    #[arg(long, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Images in the gc workload's store (each a config and 9 layers)
    /// [default: 10000, quick: 50]
    #[arg(long)]
    gc_images: Option<usize>,
    /// Concurrent connections pushing the gc workload's store
    /// [default: 16, quick: 4]
    #[arg(long)]
    gc_connections: Option<usize>,
    /// Repeats per workload and server (blob GETs and listings: at least
    /// this many) [default: 5, quick: 1]
    #[arg(long)]
    repeats: Option<usize>,
    /// The cache workload's upstream link, each way: a rate such as 500mbit,
    /// or `none` for an upstream on loopback (berth-bench-cache's
    /// --upstream-rate) [default: 500mbit, a network namespace of its own,
    /// which needs root and iproute2]
    #[arg(long)]
    cache_upstream_rate: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Push,
    Chunked,
    Get,
    Manifest,
    Large,
    Listing,
    Tls,
    Gc,
    Cache,
    /// Berth on S3 (a Garage it starts) against Distribution's S3 driver
    /// and local disk, and cold pulls through replicas: `s3`, `s3_pulls`.
    S3,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-bench: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_berth() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating this program")?;
    let beside = me.with_file_name("berth");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "no berth binary at {} (build it with `cargo build --release -p berth`, or pass --berth)",
        beside.display()
    )
}

fn required(explicit: Option<PathBuf>, name: &str, package: &str) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => servers::find_program(name).with_context(|| {
            format!("{name} not found (apt-get install {package}, or scripts/bench installs it)")
        }),
    }
}

/// The file system type a directory lives on, from /proc/mounts.
fn fs_type(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

/// Cores this process may use, cores online, and the CPU's model name.
fn machine_text() -> String {
    let available = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let online = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    format!("{available} cores available to this process ({online} online), {model}")
}

fn version_of(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown version".into())
}

async fn run(args: Args) -> Result<bool> {
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(r) = args.repeats {
        plan.repeats = r.max(1);
        plan.listing_repeats = plan.listing_repeats.max(r);
        plan.get_repeats = plan.get_repeats.max(r);
    }
    if let Some(n) = args.gc_images {
        plan.gc.images = n.max(plan.gc.delete_every);
    }
    if let Some(n) = args.gc_connections {
        plan.gc.connections = n.max(1);
    }
    let only = args.only.clone();
    let wanted = move |w: Workload| {
        if w == Workload::S3 {
            only.contains(&w)
        } else {
            only.is_empty() || only.contains(&w)
        }
    };
    let berth_bin = match args.berth {
        Some(b) => b,
        None => default_berth()?,
    };
    let dist_bin = required(args.distribution, "docker-registry", "docker-registry")?;
    servers::find_program("wrk").context("wrk not found (apt-get install wrk)")?;
    let nginx_bin = args.nginx.or_else(|| servers::find_program("nginx"));
    let base = args.dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let workdir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a work directory in {}", base.display()))?;
    let limit =
        Duration::from_secs(
            args.max_seconds
                .unwrap_or(if plan.quick { 240 } else { 2700 }),
        );

    println!("berth-bench: berth against Distribution 2.8 (docker-registry) and this machine's ceilings, loopback only");
    println!("  machine: {}", machine_text());
    println!(
        "  storage: {} ({}), the same for both servers",
        workdir.path().display(),
        fs_type(workdir.path())
    );
    println!("  berth: {}", berth_bin.display());
    println!(
        "  distribution: {} ({})",
        dist_bin.display(),
        version_of(&dist_bin)
    );
    match &nginx_bin {
        Some(n) => println!("  nginx: {}", n.display()),
        None => println!("  nginx: not installed (the sendfile comparisons are left out)"),
    }
    println!(
        "  mode: {}; each figure is the median of {} alternated run(s) per server, with the \
         min–max range (blob GETs {}, listings {}; the gc workload runs once)",
        if plan.quick {
            "QUICK (small sizes: checks the tooling, the figures mean nothing)"
        } else {
            "full"
        },
        plan.repeats,
        plan.get_repeats.max(plan.repeats),
        plan.listing_repeats
    );
    println!(
        "  WARNING: absolute figures vary from run to run and machine to machine (other work on \
         this machine, page cache, CPU clocks); compare the ratios, each measured against its \
         ceiling (or Distribution) in this run."
    );

    let measure = async {
        let dir = workdir.path().to_path_buf();
        let berth = servers::start_berth(&berth_bin, &dir).await?;
        let dist = servers::start_distribution(&dist_bin, &dir).await?;
        for s in [&berth, &dist] {
            eprintln!("==> {} (pid {}) listening on {}", s.name, s.pid(), s.addr);
        }
        let mut b = Bench {
            plan,
            servers: [&berth, &dist],
            nginx: nginx_bin,
            workdir: dir,
            rows: Vec::new(),
            idle_rss: [Err("not measured".into()), Err("not measured".into())],
            sha256: None,
        };
        b.idle_memory().await;
        if wanted(Workload::Push) {
            b.monolithic_push().await;
        }
        if wanted(Workload::Chunked) {
            b.chunked_push().await;
        }
        if wanted(Workload::Get) {
            b.blob_get_and_memory().await;
        }
        if wanted(Workload::Manifest) {
            b.manifest_get().await;
        }
        if wanted(Workload::Large) {
            b.large_manifest().await;
        }
        if wanted(Workload::Listing) {
            b.listings().await;
        }
        if wanted(Workload::Tls) {
            b.tls(&berth_bin).await;
        }
        if wanted(Workload::Gc) {
            let rows = gc::run(&b.plan.gc, &berth_bin, &dist_bin, &b.workdir).await;
            b.rows.extend(rows);
        }
        if wanted(Workload::Cache) {
            let plan = cache::CachePlan {
                quick: b.plan.quick,
                repeats: args.repeats,
                berth: &berth_bin,
                distribution: &dist_bin,
                workdir: &b.workdir,
                max_seconds: if b.plan.quick { 120 } else { 900 },
                upstream_rate: args.cache_upstream_rate.as_deref(),
            };
            let rows = cache::run(&plan).await;
            b.rows.extend(rows);
        }
        if wanted(Workload::S3) {
            let plan = s3::S3Plan::new(b.plan.quick, args.repeats);
            let rows = s3::run(&plan, &berth_bin, &dist_bin, &b.workdir).await;
            b.rows.extend(rows);
        }
        for s in [&berth, &dist] {
            if let Err(e) = s.rss() {
                eprintln!(
                    "{} is gone ({e:#}); its log ends:\n{}",
                    s.name,
                    s.log_tail()
                );
            }
        }
        let ceilings = b
            .sha256
            .as_ref()
            .map(ceiling::Sha256Ceiling::describe)
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((b.rows, ceilings))
    };
    let (rows, ceilings) = tokio::time::timeout(limit, measure)
        .await
        .with_context(|| format!("the benchmark did not finish within {limit:?}"))??;

    println!();
    if !ceilings.is_empty() {
        println!("Ceilings measured in this run:");
        for l in &ceilings {
            println!("  {l}");
        }
        println!();
    }
    print!("{}", report::render(&rows));
    let errored = rows.iter().filter(|r| r.errored()).count();
    let missed = rows.iter().filter(|r| r.pass() == Some(false)).count();
    let met = rows.iter().filter(|r| r.pass() == Some(true)).count();
    println!();
    println!(
        "targets: {met} met, {missed} missed; workloads with errors: {errored}{}",
        if args.quick {
            " (quick mode: targets are not meaningful at these sizes)"
        } else {
            ""
        }
    );
    Ok(errored == 0)
}
