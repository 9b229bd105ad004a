//! The workloads, each run against berth and Distribution alternately
//! (berth first on even repeats, Distribution first on odd ones, so that
//! neither always gets the warmer machine), keeping every repeat's figure
//! (see `stats`). Each workload turns into rows of the report; a failure
//! becomes an error cell on that row rather than stopping the run.
//!
//! Here: the plan, the pushes (against Distribution, and against one core's
//! SHA-256 measured by `ceiling`), manifest GETs and listings. Blob GETs and
//! concurrent downloads are in `get`, TLS in `tls`, the large manifest in
//! `large`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::task::JoinSet;

use crate::blob::Blob;
use crate::ceiling::Sha256Ceiling;
use crate::client::Conn;
use crate::ops;
use crate::report::{Cell, Row, Target, Unit};
use crate::servers::Server;
use crate::stats::Samples;
use crate::wrk;

/// Sizes and counts of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub blob: u64,
    pub chunk: u64,
    /// Repeats of every workload that has no count of its own (at least 5
    /// in a full run: a median and a range need several runs).
    pub repeats: usize,
    pub wrk_duration: Duration,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    /// Repositories in the catalog, and tags in the tag list.
    pub listing: usize,
    pub catalog_page: usize,
    pub listing_repeats: usize,
    /// Blob GETs are short and the noisiest figure: more repeats.
    pub get_repeats: usize,
    pub downloads: usize,
    /// Seconds of each `openssl speed` run of the SHA-256 ceiling.
    pub openssl_seconds: u64,
    /// The store the `gc` workload collects.
    pub gc: crate::gc::GcPlan,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            blob: 256 * 1024 * 1024,
            chunk: 16 * 1024 * 1024,
            repeats: 5,
            wrk_duration: Duration::from_secs(10),
            wrk_threads: 2,
            wrk_connections: 32,
            listing: 10_000,
            catalog_page: 1000,
            listing_repeats: 10,
            get_repeats: 10,
            downloads: 64,
            openssl_seconds: 3,
            gc: crate::gc::GcPlan::full(),
        }
    }

    /// Every workload once, at sizes that take seconds: guards the tooling.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            blob: 4 * 1024 * 1024,
            chunk: 1024 * 1024,
            repeats: 1,
            wrk_duration: Duration::from_secs(1),
            wrk_threads: 1,
            wrk_connections: 4,
            listing: 40,
            catalog_page: 15,
            listing_repeats: 1,
            get_repeats: 1,
            downloads: 4,
            openssl_seconds: 1,
            gc: crate::gc::GcPlan::quick(),
        }
    }

    pub(crate) fn size_text(&self) -> String {
        format!("{} MiB", self.blob / (1024 * 1024))
    }
}

/// Where progress goes (stderr), so that stdout holds only the report.
macro_rules! progress {
    ($($t:tt)*) => { eprintln!("==> {}", format!($($t)*)) };
}

/// Progress on stderr, for workloads in other modules.
pub(crate) fn progress_line(text: &str) {
    progress!("{text}");
}

/// Errors go into a table cell: one line, bounded.
pub(crate) fn short(e: &str) -> String {
    let line = e.lines().next().unwrap_or_default();
    let mut s: String = line.chars().take(90).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// The order servers run in on repeat `rep`.
pub(crate) fn order(rep: usize) -> [usize; 2] {
    if rep.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

pub struct Bench<'a> {
    pub plan: Plan,
    /// berth, then Distribution.
    pub servers: [&'a Server; 2],
    pub nginx: Option<PathBuf>,
    pub workdir: PathBuf,
    pub rows: Vec<Row>,
    pub idle_rss: [Cell; 2],
    /// One core's SHA-256, measured once a push workload needs it.
    pub sha256: Option<Sha256Ceiling>,
}

pub(crate) fn row(workload: String, s: &Samples, unit: Unit, target: Target) -> Row {
    Row {
        workload,
        berth: s.cell(0),
        reference: s.cell(1),
        reference_name: None,
        reference_note: None,
        unit,
        target,
    }
}

/// Where a server keeps a blob's bytes (to free the space of benchmark
/// blobs once measured; neither server reads them again).
pub(crate) fn blob_file(server: &Server, blob: &Blob) -> PathBuf {
    let hex = blob.hex();
    match server.name {
        "berth" | "berth-tls" => server.root.join("blobs/sha256").join(&hex[..2]).join(hex),
        _ => server
            .root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"),
    }
}

pub(crate) fn throughput(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-9)
}

impl Bench<'_> {
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i].addr
    }

    pub(crate) async fn conn(&self, i: usize) -> Result<Conn> {
        Conn::connect(self.addr(i)).await
    }

    pub(crate) async fn conn_to(&self, server: &Server) -> Result<Conn> {
        Conn::connect(server.addr).await
    }

    pub async fn idle_memory(&mut self) {
        // Let start-up settle: a server's idle state, not its start-up peak.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut s = Samples::default();
        for _ in 0..self.plan.repeats {
            for i in 0..2 {
                s.record(i, self.servers[i].rss().map(|b| b as f64));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.idle_rss = [s.cell(0), s.cell(1)];
    }

    /// One core's SHA-256 (the fastest implementation), measured on first
    /// use: the reference of both push rows.
    async fn push_ceiling(&mut self) -> Cell {
        if self.sha256.is_none() {
            let p = &self.plan;
            self.sha256 = Some(crate::ceiling::sha256(p.blob, p.repeats, p.openssl_seconds).await);
        }
        match &self.sha256 {
            Some(c) => c.fastest().map(|(_, s)| s),
            None => Err("not measured".into()),
        }
    }

    /// The reference's name on a row against the SHA-256 ceiling.
    fn ceiling_name(&self) -> String {
        match self.sha256.as_ref().map(Sha256Ceiling::fastest) {
            Some(Ok((name, _))) => format!("1-core SHA-256, {name}"),
            _ => "1-core SHA-256".into(),
        }
    }

    /// The two rows of a push: against Distribution (for context), and the
    /// target row against one core's SHA-256 (issue 16: at least 0.9 of it).
    async fn push_rows(&mut self, what: String, s: &Samples) {
        let ceiling = self.push_ceiling().await;
        self.rows.push(row(
            format!("{what} (digest verified)"),
            s,
            Unit::MibPerSec,
            Target::None,
        ));
        self.rows.push(Row {
            workload: format!("{what}, against one core's SHA-256"),
            berth: s.cell(0),
            reference: ceiling,
            reference_name: Some(self.ceiling_name()),
            reference_note: None,
            unit: Unit::MibPerSec,
            target: Target::Times(0.9),
        });
    }

    pub async fn monolithic_push(&mut self) {
        let p = self.plan.clone();
        progress!("monolithic push of a {} blob", p.size_text());
        let mut s = Samples::default();
        for rep in 0..p.repeats {
            let blob = Blob::new(p.blob, 1000 + rep as u64);
            for i in order(rep) {
                if s.failed(i) {
                    continue;
                }
                let r = async {
                    let mut c = self.conn(i).await?;
                    let t = ops::push_monolithic(&mut c, "bench/mono", &blob).await?;
                    Ok(throughput(blob.size, t))
                }
                .await;
                s.record(i, r);
                let _ = std::fs::remove_file(blob_file(self.servers[i], &blob));
            }
        }
        self.push_rows(format!("monolithic push, {}", p.size_text()), &s)
            .await;
    }

    pub async fn chunked_push(&mut self) {
        let p = self.plan.clone();
        progress!("chunked push of a {} blob", p.size_text());
        let mut s = Samples::default();
        for rep in 0..p.repeats {
            let blob = Blob::new(p.blob, 2000 + rep as u64);
            for i in order(rep) {
                if s.failed(i) {
                    continue;
                }
                let r = async {
                    let mut c = self.conn(i).await?;
                    let t = ops::push_chunked(&mut c, "bench/chunked", &blob, p.chunk).await?;
                    Ok(throughput(blob.size, t))
                }
                .await;
                s.record(i, r);
                let _ = std::fs::remove_file(blob_file(self.servers[i], &blob));
            }
        }
        let what = format!(
            "chunked push, {} in {} MiB chunks",
            p.size_text(),
            p.chunk / (1024 * 1024)
        );
        self.push_rows(what, &s).await;
    }

    pub async fn manifest_get(&mut self) {
        let p = self.plan.clone();
        progress!(
            "manifest GET by tag with wrk, {} connections, {:?} per run",
            p.wrk_connections,
            p.wrk_duration
        );
        let repo = "bench/manifest";
        let config = Blob::small(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Blob::new(4096, 4000);
        let manifest = ops::image_manifest(&config, &layer);
        let mut rps = Samples::default();
        let mut p99 = Samples::default();
        for i in 0..2 {
            let r = async {
                let mut c = self.conn(i).await?;
                ops::push_monolithic(&mut c, repo, &config).await?;
                ops::push_monolithic(&mut c, repo, &layer).await?;
                ops::put_manifest(&mut c, repo, "latest", &manifest).await?;
                let r = c
                    .get(
                        &format!("/v2/{repo}/manifests/latest"),
                        &[("accept", ops::ACCEPT_MANIFESTS)],
                    )
                    .await?
                    .expect(http::StatusCode::OK, "reading the manifest back")
                    .await?;
                let body = r.bytes(crate::client::SMALL).await?;
                if body.as_ref() != manifest.as_slice() {
                    bail!("the manifest read back differs from the one pushed");
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                let msg = format!("{e:#}");
                rps.record(i, Err(anyhow::anyhow!(msg.clone())));
                p99.record(i, Err(anyhow::anyhow!(msg)));
            }
        }
        let accept = format!("Accept: {}", ops::ACCEPT_MANIFESTS);
        for rep in 0..p.repeats {
            for i in order(rep) {
                if rps.failed(i) {
                    continue;
                }
                let url = format!("http://{}/v2/{repo}/manifests/latest", self.addr(i));
                let run = wrk::WrkRun {
                    url: &url,
                    threads: p.wrk_threads,
                    connections: p.wrk_connections,
                    duration: p.wrk_duration,
                    headers: &[&accept],
                    cpus: None,
                };
                match wrk::run(&run).await {
                    Ok(w) => {
                        rps.record(i, Ok(w.requests_per_sec));
                        p99.record(i, Ok(w.p99.as_secs_f64()));
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        rps.record(i, Err(anyhow::anyhow!(msg.clone())));
                        p99.record(i, Err(anyhow::anyhow!(msg)));
                    }
                }
            }
        }
        self.rows.push(row(
            format!(
                "manifest GET by tag, {} connections (wrk)",
                p.wrk_connections
            ),
            &rps,
            Unit::ReqPerSec,
            Target::Times(25.0),
        ));
        self.rows.push(row(
            "manifest GET by tag, p99 latency".into(),
            &p99,
            Unit::Millis,
            Target::Better,
        ));
    }

    pub async fn listings(&mut self) {
        let p = self.plan.clone();
        let n = p.listing;
        progress!("catalog of {n} repositories and tag list of {n} tags (setting up)");
        let src = "bench/src";
        let shared = Blob::small(b"berth-bench: a blob every catalog repository links");
        let config = Blob::small(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Blob::new(4096, 5000);
        let manifest = Arc::new(ops::image_manifest(&config, &layer));
        let mut mounts = Samples::default();
        let mut tagging = Samples::default();
        for i in 0..2 {
            let r = async {
                let mut c = self.conn(i).await?;
                ops::push_monolithic(&mut c, src, &shared).await?;
                ops::push_monolithic(&mut c, "bench/tags", &config).await?;
                ops::push_monolithic(&mut c, "bench/tags", &layer).await?;
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if let Err(e) = r {
                let msg = format!("{e:#}");
                mounts.record(i, Err(anyhow::anyhow!(msg.clone())));
                tagging.record(i, Err(anyhow::anyhow!(msg)));
                continue;
            }
            let addr = self.addr(i);
            let blob = shared.clone();
            let r = parallel(addr, n, move |mut c, k| {
                let blob = blob.clone();
                async move {
                    ops::mount(&mut c, &format!("bench/cat/r{k:05}"), src, &blob).await?;
                    Ok(c)
                }
            })
            .await;
            mounts.record(i, r.map(|t| n as f64 / t.as_secs_f64().max(1e-9)));
            let m = manifest.clone();
            let r = parallel(addr, n, move |mut c, k| {
                let m = m.clone();
                async move {
                    ops::put_manifest(&mut c, "bench/tags", &format!("t{k:05}"), &m).await?;
                    Ok(c)
                }
            })
            .await;
            tagging.record(i, r.map(|t| n as f64 / t.as_secs_f64().max(1e-9)));
        }

        progress!("catalog and tag list: measuring");
        let mut catalog = Samples::default();
        let mut tags = Samples::default();
        for i in 0..2 {
            if mounts.failed(i) {
                catalog.record(i, Err(anyhow::anyhow!("set-up failed")));
            }
            if tagging.failed(i) {
                tags.record(i, Err(anyhow::anyhow!("set-up failed")));
            }
        }
        for rep in 0..p.listing_repeats {
            for i in order(rep) {
                if !catalog.failed(i) {
                    let r = async {
                        let mut c = self.conn(i).await?;
                        let (elapsed, count) = ops::catalog_all(&mut c, p.catalog_page).await?;
                        if count < n {
                            bail!("catalog listed {count} repositories, expected at least {n}");
                        }
                        Ok(elapsed.as_secs_f64())
                    }
                    .await;
                    catalog.record(i, r);
                }
                if !tags.failed(i) {
                    let r = async {
                        let mut c = self.conn(i).await?;
                        let (elapsed, count) = ops::tags_list(&mut c, "bench/tags").await?;
                        if count != n {
                            bail!("tag list had {count} tags, expected {n}");
                        }
                        Ok(elapsed.as_secs_f64())
                    }
                    .await;
                    tags.record(i, r);
                }
            }
        }
        self.rows.push(row(
            format!(
                "catalog of {n} repositories, pages of {} (whole listing)",
                p.catalog_page
            ),
            &catalog,
            Unit::Millis,
            Target::Times(5.0),
        ));
        self.rows.push(row(
            format!("tag list of {n} tags (one request)"),
            &tags,
            Unit::Millis,
            Target::Times(5.0),
        ));
        self.rows.push(row(
            format!("set-up: {n} repositories created by cross-repo mount, 8 connections"),
            &mounts,
            Unit::ReqPerSec,
            Target::None,
        ));
        self.rows.push(row(
            format!("set-up: {n} tags pushed (manifest PUT), 8 connections"),
            &tagging,
            Unit::ReqPerSec,
            Target::None,
        ));
    }
}

/// Run `op(conn, k)` for k in 0..n over 8 connections; returns the time.
async fn parallel<F, Fut>(addr: SocketAddr, n: usize, op: F) -> Result<Duration>
where
    F: Fn(Conn, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Conn>> + Send,
{
    const WORKERS: usize = 8;
    let t = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..WORKERS {
        let op = op.clone();
        set.spawn(async move {
            let mut c = Conn::connect(addr).await?;
            for k in (w..n).step_by(WORKERS) {
                c = op(c, k).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.context("worker task").and_then(|r| r) {
            result = Err(e);
            set.abort_all();
        }
    }
    result.map(|()| t.elapsed())
}
