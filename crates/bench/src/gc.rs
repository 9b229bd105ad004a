//! The `gc` workload: garbage collection of a large store, berth's online
//! collector against Distribution's offline `registry garbage-collect`.
//!
//! Both servers get their own fresh roots (nothing else stored in them) and
//! the same shape of store, pushed over HTTP the same way: `images` images of
//! a config and `layers` small layers (1-4 KiB each, all distinct), tagged in
//! `repos` repositories; then every `delete_every`-th image is deleted by
//! digest, which leaves its config, layers and manifest unreferenced.
//!
//! berth collects with `berth gc --root ROOT --output json`, which runs the
//! collection inside the serving process through its admin socket, started
//! with `--gc-grace 0s` (everything unreferenced is collectable at once) and
//! no schedule. Timed: the command's wall clock, and the report's
//! `duration_ms`; the server's peak RSS meanwhile (its VmHWM reset just
//! before, and VmRSS polled); manifest GETs of retained images issued all
//! through the collection, with their latency.
//!
//! Distribution must be stopped for `docker-registry garbage-collect
//! CONFIG`: it is, the collector's wall clock and peak RSS are measured
//! (`/usr/bin/time` when installed, else its VmHWM polled), and the time
//! until the restarted registry answers again is added to its downtime.
//!
//! Afterwards, on both: the blob files on disk went down by exactly the
//! unreferenced count (berth's report says the same), a sample of retained
//! images pulls completely (every blob hashed against its digest), and
//! deleted images are gone. Any mismatch turns the server's cells into
//! errors.
//!
//! Unlike the other workloads it runs once (each cell one figure, no
//! range): a full store takes some ten minutes to build, and its rows have
//! no target.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use http::StatusCode;
use sha2::Digest as _;
use tokio::task::JoinSet;

use crate::blob::Blob;
use crate::client::Conn;
use crate::ops;
use crate::report::{Cell, Row, Target, Unit, MIB};
use crate::servers::{self, Server};
use crate::stats::Stat;

/// The shape of the store and how it is driven.
#[derive(Debug, Clone)]
pub struct GcPlan {
    pub images: usize,
    /// Layers per image, besides its config.
    pub layers: usize,
    pub repos: usize,
    /// Every this many-th image is deleted before the collection.
    pub delete_every: usize,
    /// Concurrent connections pushing the store.
    pub connections: usize,
    /// Retained images pulled back completely after the collection.
    pub verify: usize,
    /// How long latency is sampled on the idle server, before the collection.
    pub idle_probe: Duration,
}

impl GcPlan {
    /// 10,000 images of 10 blobs: 100,000 blobs and 10,000 manifests.
    pub fn full() -> GcPlan {
        GcPlan {
            images: 10_000,
            layers: 9,
            repos: 100,
            delete_every: 5,
            connections: 16,
            verify: 200,
            idle_probe: Duration::from_secs(2),
        }
    }

    /// 50 images: 500 blobs and 50 manifests.
    pub fn quick() -> GcPlan {
        GcPlan {
            images: 50,
            layers: 9,
            repos: 5,
            delete_every: 5,
            connections: 4,
            verify: 10,
            idle_probe: Duration::from_millis(300),
        }
    }

    fn blobs(&self) -> usize {
        self.images * (self.layers + 1)
    }

    fn is_deleted(&self, k: usize) -> bool {
        k.is_multiple_of(self.delete_every)
    }

    fn deleted(&self) -> Vec<usize> {
        (0..self.images).filter(|&k| self.is_deleted(k)).collect()
    }

    fn retained(&self) -> Vec<usize> {
        (0..self.images).filter(|&k| !self.is_deleted(k)).collect()
    }

    /// Blob files a collection must delete: each deleted image's config,
    /// layers and manifest (both servers store a manifest's bytes as a blob).
    fn expected_deletions(&self) -> usize {
        self.deleted().len() * (self.layers + 2)
    }

    /// Retained images spread over the store, `n` of them.
    fn sample(&self, n: usize) -> Vec<usize> {
        let retained = self.retained();
        let step = (retained.len() / n.max(1)).max(1);
        retained.into_iter().step_by(step).take(n).collect()
    }
}

/// One image of the store; everything follows from its number.
struct Image {
    repo: String,
    tag: String,
    config: Blob,
    layers: Vec<Blob>,
    manifest: Vec<u8>,
    digest: String,
}

impl Image {
    fn new(plan: &GcPlan, k: usize) -> Image {
        let first = 10_000_000 + (k * (plan.layers + 1)) as u64;
        let blob = |seed: u64| Blob::new(1024 * (1 + seed % 4), seed);
        let config = blob(first);
        let layers: Vec<Blob> = (1..=plan.layers as u64).map(|j| blob(first + j)).collect();
        let manifest = ops::image_manifest_of(&config, &layers);
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)));
        Image {
            repo: format!("gc/r{:03}", k % plan.repos.max(1)),
            tag: format!("i{k:06}"),
            config,
            layers,
            manifest,
            digest,
        }
    }

    fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// Where progress goes (stderr), so that stdout holds only the report.
macro_rules! progress {
    ($($t:tt)*) => { eprintln!("==> {}", format!($($t)*)) };
}

/// Run `op(conn, k)` for every k of `items` over `workers` connections;
/// returns the time it took.
async fn on_each<F, Fut>(
    addr: SocketAddr,
    workers: usize,
    items: Vec<usize>,
    op: F,
) -> Result<Duration>
where
    F: Fn(Conn, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Conn>> + Send,
{
    let items = Arc::new(items);
    let workers = workers.max(1);
    let t = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..workers {
        let (op, items) = (op.clone(), items.clone());
        set.spawn(async move {
            let mut c = Conn::connect(addr).await?;
            for &k in items.iter().skip(w).step_by(workers) {
                c = op(c, k).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.context("worker task").and_then(|r| r) {
            if result.is_ok() {
                result = Err(e);
            }
            set.abort_all();
        }
    }
    result.map(|()| t.elapsed())
}

/// Push every image (its blobs, then its manifest under its tag).
async fn push_store(addr: SocketAddr, plan: &GcPlan) -> Result<Duration> {
    let p = Arc::new(plan.clone());
    on_each(
        addr,
        plan.connections,
        (0..plan.images).collect(),
        move |mut c, k| {
            let p = p.clone();
            async move {
                let img = Image::new(&p, k);
                for b in img.blobs() {
                    ops::push_monolithic(&mut c, &img.repo, b).await?;
                }
                ops::put_manifest(&mut c, &img.repo, &img.tag, &img.manifest).await?;
                Ok(c)
            }
        },
    )
    .await
}

/// Delete the manifests of the deleted images, by digest.
async fn delete_images(addr: SocketAddr, plan: &GcPlan) -> Result<Duration> {
    let p = Arc::new(plan.clone());
    on_each(addr, plan.connections, plan.deleted(), move |mut c, k| {
        let p = p.clone();
        async move {
            let img = Image::new(&p, k);
            ops::delete_manifest(&mut c, &img.repo, &img.digest).await?;
            Ok(c)
        }
    })
    .await
}

/// Blob files on disk: berth's `blobs/sha256/XX/HEX`, Distribution's
/// `docker/registry/v2/blobs/sha256/XX/HEX/data`.
fn count_blobs(server: &Server) -> Result<usize> {
    let berth = server.name == "berth";
    let dir = if berth {
        server.root.join("blobs/sha256")
    } else {
        server.root.join("docker/registry/v2/blobs/sha256")
    };
    let mut n = 0;
    for prefix in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let prefix = prefix?.path();
        if !prefix.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&prefix)? {
            let entry = entry?;
            let name = entry.file_name();
            let hex = name.to_str().unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let present = if berth {
                entry.file_type()?.is_file()
            } else {
                entry.path().join("data").is_file()
            };
            n += usize::from(present);
        }
    }
    Ok(n)
}

/// Pull a sample of retained images completely (manifest by tag, every blob
/// hashed against its digest) and check a sample of deleted ones is gone.
async fn verify(addr: SocketAddr, plan: &GcPlan) -> Result<()> {
    let mut c = Conn::connect(addr).await?;
    for k in plan.sample(plan.verify) {
        let img = Image::new(plan, k);
        let (status, body) = ops::get_small(
            &mut c,
            &format!("/v2/{}/manifests/{}", img.repo, img.tag),
            ops::ACCEPT_MANIFESTS,
        )
        .await?;
        ensure!(
            status == StatusCode::OK && body == img.manifest,
            "retained image {}:{} after GC: manifest GET answered {status} ({} bytes, expected {})",
            img.repo,
            img.tag,
            body.len(),
            img.manifest.len()
        );
        for b in img.blobs() {
            let (status, body) =
                ops::get_small(&mut c, &ops::blob_path(&img.repo, b), "*/*").await?;
            let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
            ensure!(
                status == StatusCode::OK && got == b.digest,
                "retained image {}:{} after GC: blob {} answered {status}, content {got}",
                img.repo,
                img.tag,
                b.digest
            );
        }
    }
    let deleted = plan.deleted();
    let step = (deleted.len() / plan.verify.max(1)).max(1);
    for &k in deleted.iter().step_by(step).take(plan.verify) {
        let img = Image::new(plan, k);
        let path = format!("/v2/{}/manifests/{}", img.repo, img.digest);
        let (status, _) = ops::get_small(&mut c, &path, ops::ACCEPT_MANIFESTS).await?;
        ensure!(
            status == StatusCode::NOT_FOUND,
            "deleted image: GET {path} answered {status} after GC"
        );
        let layer = &img.layers[0];
        let path = ops::blob_path(&img.repo, layer);
        let (status, _) = ops::get_small(&mut c, &path, "*/*").await?;
        ensure!(
            status == StatusCode::NOT_FOUND,
            "deleted image's layer: GET {path} answered {status} after GC"
        );
    }
    Ok(())
}

/// Latencies of manifest GETs of retained images, one at a time on one
/// connection with a short pause between them (a light load, so the probe
/// measures GC's effect rather than competing with it), until `done` or
/// `max` requests.
async fn probe(
    addr: SocketAddr,
    plan: GcPlan,
    done: Arc<AtomicBool>,
    max: usize,
) -> Result<Vec<Duration>> {
    let sample: Vec<Image> = plan
        .sample(100)
        .into_iter()
        .map(|k| Image::new(&plan, k))
        .collect();
    ensure!(!sample.is_empty(), "no retained image to probe");
    let mut c = Conn::connect(addr).await?;
    let mut lat = Vec::new();
    for i in 0..max {
        if done.load(Ordering::Relaxed) {
            break;
        }
        let img = &sample[i % sample.len()];
        let path = format!("/v2/{}/manifests/{}", img.repo, img.tag);
        let t = Instant::now();
        let (status, body) = ops::get_small(&mut c, &path, ops::ACCEPT_MANIFESTS).await?;
        lat.push(t.elapsed());
        ensure!(
            status == StatusCode::OK && body == img.manifest,
            "GET {path} during GC answered {status} ({} bytes)",
            body.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(lat)
}

fn p99(lat: &[Duration]) -> Option<Duration> {
    let mut v = lat.to_vec();
    v.sort_unstable();
    let i = (v.len() * 99).div_ceil(100).checked_sub(1)?;
    v.get(i).copied()
}

/// What berth's online collection measured.
struct BerthGc {
    wall: Duration,
    report: Duration,
    blobs_deleted: usize,
    bytes_freed: u64,
    rss_before: u64,
    peak: u64,
    idle_p99: Duration,
    during: Vec<Duration>,
}

async fn berth_gc(server: &Server, bin: &Path, plan: &GcPlan) -> Result<BerthGc> {
    let pid = server.pid();
    let addr = server.addr;
    // One untimed pass over the probed images first: the idle figure is of a
    // warm server, like the one during GC (whose probe follows this one).
    let warm = {
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(probe(addr, plan.clone(), done.clone(), 100));
        task.await.context("probe task")??
    };
    ensure!(!warm.is_empty(), "the warm-up GETs did not run");
    let idle = {
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(probe(addr, plan.clone(), done.clone(), 200_000));
        tokio::time::sleep(plan.idle_probe).await;
        done.store(true, Ordering::Relaxed);
        task.await.context("probe task")??
    };
    let idle_p99 = p99(&idle).context("no idle latency sample")?;
    let rss_before = servers::rss_of(pid)?;
    let hwm_reset = match servers::reset_peak(pid) {
        Ok(()) => true,
        Err(e) => {
            progress!("  {e:#}: polling VmRSS only");
            false
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            // Bounded: at most 20 minutes of samples.
            for _ in 0..120_000 {
                peak = peak.max(servers::rss_of(pid)?);
                if done.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, anyhow::Error>(peak)
        })
    };
    // Bounded: at most 200,000 requests (well over any collection's length).
    let prober = tokio::spawn(probe(addr, plan.clone(), done.clone(), 200_000));
    let t = Instant::now();
    let out = tokio::process::Command::new(bin)
        .arg("gc")
        .arg("--root")
        .arg(&server.root)
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(1200), out).await;
    let wall = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let polled = sampler.await.context("RSS sampler")??;
    let during = prober.await.context("probe task")??;
    let out = out
        .context("berth gc did not finish within 20 minutes")?
        .context("running berth gc")?;
    ensure!(
        out.status.success(),
        "berth gc failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let peak = if hwm_reset {
        polled.max(servers::peak_rss_of(pid)?)
    } else {
        polled
    };
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("berth gc --output json: not JSON")?;
    let gc = &v["gc"];
    let field = |name: &str| {
        gc[name]
            .as_u64()
            .with_context(|| format!("berth gc report without gc.{name}"))
    };
    Ok(BerthGc {
        wall,
        report: Duration::from_millis(field("duration_ms")?),
        blobs_deleted: usize::try_from(field("blobs_deleted")?)?,
        bytes_freed: field("bytes_freed")?,
        rss_before,
        peak,
        idle_p99,
        during,
    })
}

/// What Distribution's offline collection measured.
struct DistGc {
    wall: Duration,
    peak: u64,
    /// Registry stopped: the collection plus the restart until it answers.
    downtime: Duration,
    server: Server,
}

async fn distribution_gc(server: Server, bin: &Path, dir: &Path) -> Result<DistGc> {
    let stopped = Instant::now();
    drop(server);
    let config = servers::distribution_config(dir);
    let log = std::fs::File::create(dir.join("distribution-gc.log"))?;
    let time_out = dir.join("distribution-gc.maxrss");
    let time_bin = Path::new("/usr/bin/time");
    let mut cmd = if time_bin.is_file() {
        let mut c = tokio::process::Command::new(time_bin);
        c.arg("-f").arg("%M").arg("-o").arg(&time_out).arg(bin);
        c
    } else {
        tokio::process::Command::new(bin)
    };
    cmd.arg("garbage-collect")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting docker-registry garbage-collect")?;
    let pid = child.id().context("garbage-collect exited at once")?;
    let mut polled = 0u64;
    let deadline = t + Duration::from_secs(1200);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        // The last VmHWM read before it exits is its peak (to within 5 ms).
        // Under /usr/bin/time this is time's own, and time's report is used.
        if let Ok(hwm) = servers::peak_rss_of(pid) {
            polled = polled.max(hwm);
        }
        if Instant::now() > deadline {
            bail!("docker-registry garbage-collect did not finish within 20 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let wall = t.elapsed();
    ensure!(
        status.success(),
        "docker-registry garbage-collect failed ({status}); see {}",
        dir.join("distribution-gc.log").display()
    );
    let peak = if time_bin.is_file() {
        let text = std::fs::read_to_string(&time_out).context("reading /usr/bin/time's output")?;
        let kb: u64 = text
            .lines()
            .rev()
            .find_map(|l| l.trim().parse().ok())
            .context("no maximum RSS in /usr/bin/time's output")?;
        kb * 1024
    } else {
        polled
    };
    let server = servers::start_distribution(bin, dir).await?;
    Ok(DistGc {
        wall,
        peak,
        downtime: stopped.elapsed(),
        server,
    })
}

fn err<T>(e: &anyhow::Error) -> Result<T, String> {
    let text = format!("{e:#}");
    let line = text.lines().next().unwrap_or_default();
    let mut s: String = line.chars().take(90).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    Err(s)
}

fn cell_of<T>(r: &Result<T>, f: impl Fn(&T) -> f64) -> Cell {
    match r {
        Ok(v) => Ok(Stat::one(f(v))),
        Err(e) => err(e),
    }
}

/// Set up both stores, collect, verify: the rows of the report.
pub async fn run(plan: &GcPlan, berth_bin: &Path, dist_bin: &Path, workdir: &Path) -> Vec<Row> {
    let dir = workdir.join("gc");
    let expected = plan.expected_deletions();
    let (blobs, manifests) = (plan.blobs(), plan.images);
    progress!(
        "gc: store of {blobs} blobs and {manifests} manifests in {} repositories on each server, \
         {} images then deleted ({expected} blobs to collect)",
        plan.repos,
        plan.deleted().len()
    );
    let berth = setup_berth(plan, berth_bin, &dir).await;
    let dist = setup_distribution(plan, dist_bin, &dir).await;
    let setup = |r: &Result<(Server, Duration)>| match r {
        Ok((_, t)) => Ok(Stat::one(
            ((blobs + manifests) as f64) / t.as_secs_f64().max(1e-9),
        )),
        Err(e) => err(e),
    };
    let setup = [setup(&berth), setup(&dist)];

    let berth_gc = match &berth {
        Ok((server, _)) => {
            progress!("gc: berth online GC (berth gc through the admin socket, GETs meanwhile)");
            async {
                let before = count_blobs(server)?;
                let g = berth_gc(server, berth_bin, plan).await?;
                let after = count_blobs(server)?;
                progress!(
                    "  berth: {:.2} s wall, report {} ms, {} blobs deleted ({before} files before, {after} after), \
                     {:.1} MiB freed, {} GETs served meanwhile",
                    g.wall.as_secs_f64(),
                    g.report.as_millis(),
                    g.blobs_deleted,
                    g.bytes_freed as f64 / MIB,
                    g.during.len()
                );
                ensure!(
                    g.blobs_deleted == expected && before - after.min(before) == expected,
                    "berth gc deleted {} blobs ({before} files before, {after} after), expected {expected}",
                    g.blobs_deleted
                );
                ensure!(!g.during.is_empty(), "no GET completed during GC");
                verify(server.addr, plan).await?;
                Ok(g)
            }
            .await
        }
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    if let Err(e) = &berth_gc {
        progress!("  error: {e:#}");
    }
    drop(berth);

    let dist_gc = match dist {
        Ok((server, _)) => {
            progress!("gc: Distribution stopped, docker-registry garbage-collect, restarted");
            async {
                let before = count_blobs(&server)?;
                let g = distribution_gc(server, dist_bin, &dir.join("distribution")).await?;
                let after = count_blobs(&g.server)?;
                progress!(
                    "  distribution: {:.2} s wall, {before} blob files before, {after} after, \
                     down {:.2} s in all",
                    g.wall.as_secs_f64(),
                    g.downtime.as_secs_f64()
                );
                ensure!(
                    before - after.min(before) == expected,
                    "garbage-collect left {after} of {before} blob files, expected {expected} deleted"
                );
                verify(g.server.addr, plan).await?;
                Ok(g)
            }
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &dist_gc {
        progress!("  error: {e:#}");
    }
    rows(plan, &berth_gc, &dist_gc, setup)
}

fn rows(plan: &GcPlan, b: &Result<BerthGc>, d: &Result<DistGc>, setup: [Cell; 2]) -> Vec<Row> {
    let shape = format!("{} blobs / {} manifests", plan.blobs(), plan.images);
    let row = |workload: String, berth: Cell, reference: Cell, unit: Unit| Row {
        workload,
        berth,
        reference,
        reference_name: None,
        reference_note: None,
        unit,
        target: Target::None,
    };
    let rss_before = match b {
        Ok(g) => format!("; berth before GC: {:.1} MiB", g.rss_before as f64 / MIB),
        Err(_) => String::new(),
    };
    let (served, idle) = match b {
        Ok(g) => (
            format!("{} GETs, none failed", g.during.len()),
            format!("; idle p99 {:.2} ms", g.idle_p99.as_secs_f64() * 1e3),
        ),
        Err(_) => ("GETs".into(), String::new()),
    };
    let mut during = row(
        format!("requests served during GC: manifest GET p99 ({served}{idle})"),
        match b {
            Ok(g) => p99(&g.during)
                .map(|d| Stat::one(d.as_secs_f64()))
                .ok_or_else(|| "no GET completed".to_string()),
            Err(e) => err(e),
        },
        Err(String::new()),
        Unit::Millis,
    );
    during.reference_note = Some(match d {
        Ok(g) => format!(
            "none: stopped {:.1} s (GC + restart)",
            g.downtime.as_secs_f64()
        ),
        Err(_) => "none: stopped".into(),
    });
    let mut report = row(
        "  of which berth's mark and sweep (report's duration_ms)".into(),
        cell_of(b, |g| g.report.as_secs_f64()),
        Err(String::new()),
        Unit::Secs,
    );
    report.reference_note = Some("-".into());
    vec![
        row(
            format!(
                "online GC, {shape}, {} unreferenced deleted (Distribution offline)",
                plan.expected_deletions()
            ),
            cell_of(b, |g| g.wall.as_secs_f64()),
            cell_of(d, |g| g.wall.as_secs_f64()),
            Unit::Secs,
        ),
        report,
        row(
            format!(
                "peak resident memory during GC (berth: the server; Distribution: garbage-collect{rss_before})"
            ),
            cell_of(b, |g| g.peak as f64),
            cell_of(d, |g| g.peak as f64),
            Unit::Mib,
        ),
        during,
        row(
            format!(
                "set-up for GC: {shape} pushed, {} connections (objects/s)",
                plan.connections
            ),
            setup[0].clone(),
            setup[1].clone(),
            Unit::ReqPerSec,
        ),
    ]
}

async fn setup_berth(plan: &GcPlan, bin: &Path, dir: &Path) -> Result<(Server, Duration)> {
    let d = dir.join("berth");
    std::fs::create_dir_all(&d)?;
    let server =
        servers::start_berth_with(bin, &d, &["--gc-grace", "0s", "--gc-interval", "0"]).await?;
    let t = fill("berth", &server, plan).await?;
    Ok((server, t))
}

async fn setup_distribution(plan: &GcPlan, bin: &Path, dir: &Path) -> Result<(Server, Duration)> {
    let d = dir.join("distribution");
    std::fs::create_dir_all(&d)?;
    let server = servers::start_distribution(bin, &d).await?;
    let t = fill("distribution", &server, plan).await?;
    Ok((server, t))
}

async fn fill(name: &str, server: &Server, plan: &GcPlan) -> Result<Duration> {
    let t = push_store(server.addr, plan).await?;
    let n = plan.blobs() + plan.images;
    progress!(
        "  {name}: pushed {n} objects in {:.1} s ({:.0}/s, {} connections)",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64().max(1e-9),
        plan.connections
    );
    let d = delete_images(server.addr, plan).await?;
    progress!(
        "  {name}: deleted {} manifests in {:.1} s",
        plan.deleted().len(),
        d.as_secs_f64()
    );
    Ok(t)
}
