//! The `s3` workload (`scripts/bench s3`, issue 13): berth on S3-compatible
//! object storage, a real Garage (one node, on loopback, started here), set
//! beside Distribution 2.8 with its S3 driver on the same Garage and beside
//! berth on local disk. Pushes, blob GETs and manifest GETs by tag, every
//! server run in turn (the order rotates each repeat). Then `s3_pulls`: cold
//! pulls through three replicas on one bucket against one replica.
//!
//! Both registries stream blob GETs through themselves (berth's presigned
//! redirects are off by default; Distribution's are turned off), so the
//! figures compare the servers, not Garage serving clients directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use berth_s3_fixture::Garage;

use crate::bench::{progress_line, throughput};
use crate::blob::Blob;
use crate::client::Conn;
use crate::ops;
use crate::report::{Row, Target, Unit};
use crate::servers::{self, Server};
use crate::stats::Samples;
use crate::wrk;

/// Sizes and counts of the workload.
#[derive(Debug, Clone)]
pub struct S3Plan {
    /// Bytes of each pushed and read blob.
    pub blob: u64,
    pub repeats: usize,
    pub wrk_duration: std::time::Duration,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    /// The image pulled cold: this many layers of `image / layers` bytes.
    pub layers: usize,
    pub image: u64,
    /// Clients pulling at once, spread over `replicas` replicas.
    pub clients: usize,
    pub replicas: usize,
}

impl S3Plan {
    pub fn new(quick: bool, repeats: Option<usize>) -> S3Plan {
        let mut p = if quick {
            S3Plan {
                blob: 4 << 20,
                repeats: 1,
                wrk_duration: std::time::Duration::from_secs(1),
                wrk_threads: 1,
                wrk_connections: 4,
                layers: 2,
                image: 4 << 20,
                clients: 4,
                replicas: 3,
            }
        } else {
            S3Plan {
                blob: 64 << 20,
                repeats: 5,
                wrk_duration: std::time::Duration::from_secs(10),
                wrk_threads: 2,
                wrk_connections: 32,
                layers: 4,
                image: 64 << 20,
                clients: 32,
                replicas: 3,
            }
        };
        if let Some(r) = repeats {
            p.repeats = r.max(1);
        }
        p
    }
}

/// What berth needs to reach the bench's Garage: its `[storage]` tables.
pub(crate) struct Store {
    pub garage: Arc<Garage>,
    secret_file: PathBuf,
}

impl Store {
    /// `[storage]` for the bucket under `prefix`.
    pub(crate) fn berth_toml(&self, prefix: &str) -> String {
        let g = &self.garage;
        format!(
            "[storage]\nbackend = \"s3\"\n\n[storage.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
             endpoint = \"{}\"\nregion = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\n\
             secret_access_key_file = \"{}\"\n",
            g.bucket,
            g.endpoint(),
            g.region,
            g.key_id,
            self.secret_file.display()
        )
    }

    /// Distribution's `storage:` lines for the same bucket under `root`.
    fn distribution_yaml(&self, root: &str) -> String {
        let g = &self.garage;
        format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    \
             bucket: {}\n    rootdirectory: {root}\n    secure: false\n    v4auth: true\n  \
             redirect:\n    disable: true\n",
            g.key_id,
            g.secret,
            g.region,
            g.endpoint(),
            g.bucket
        )
    }
}

/// Start Garage for the workload (its own process and directory).
async fn start_store(workdir: &Path) -> Result<Store> {
    progress_line("starting Garage (one node) for the s3 workload");
    let garage = tokio::task::spawn_blocking(Garage::start)
        .await
        .map_err(|e| {
            anyhow!("Garage did not start (is it installed? scripts/bench s3 installs it): {e}")
        })?;
    let secret_file = workdir.join("s3-secret");
    std::fs::write(&secret_file, format!("{}\n", garage.secret))?;
    Ok(Store {
        garage: Arc::new(garage),
        secret_file,
    })
}

/// The three servers of the comparison, in the order of [`Three`].
const NAMES: [&str; 3] = [
    "berth on S3",
    "Distribution, S3 driver",
    "berth on local disk",
];

/// One figure of three servers, as the two rows it becomes: berth on S3
/// against Distribution on S3, and against berth on local disk.
#[derive(Default)]
struct Three {
    vs_distribution: Samples,
    vs_disk: Samples,
}

impl Three {
    fn failed(&self, who: usize) -> bool {
        match who {
            0 => self.vs_distribution.failed(0),
            1 => self.vs_distribution.failed(1),
            _ => self.vs_disk.failed(1),
        }
    }

    fn record(&mut self, who: usize, r: Result<f64>) {
        match who {
            0 => {
                let copy = r.as_ref().map(|v| *v).map_err(|e| anyhow!("{e:#}"));
                self.vs_distribution.record(0, copy);
                self.vs_disk.record(0, r);
            }
            1 => self.vs_distribution.record(1, r),
            _ => self.vs_disk.record(1, r),
        }
    }

    fn rows(&self, what: &str, unit: Unit, target: Target) -> [Row; 2] {
        [
            Row {
                workload: format!("S3: {what}"),
                berth: self.vs_distribution.cell(0),
                reference: self.vs_distribution.cell(1),
                reference_name: Some(NAMES[1].into()),
                reference_note: None,
                unit,
                target,
            },
            Row {
                workload: format!("S3: {what}, against local disk"),
                berth: self.vs_disk.cell(0),
                reference: self.vs_disk.cell(1),
                reference_name: Some(NAMES[2].into()),
                reference_note: None,
                unit,
                target: Target::None,
            },
        ]
    }
}

/// The order the three servers run in on repeat `rep`.
fn rotation(rep: usize) -> [usize; 3] {
    [rep % 3, (rep + 1) % 3, (rep + 2) % 3]
}

/// Every row of the workload; a failure becomes error cells, never a
/// stopped run.
pub async fn run(plan: &S3Plan, berth: &Path, distribution: &Path, workdir: &Path) -> Vec<Row> {
    let dir = workdir.join("s3");
    let r = async {
        std::fs::create_dir_all(&dir)?;
        let store = start_store(&dir).await?;
        let mut rows = stores(plan, &store, berth, distribution, &dir).await?;
        rows.extend(crate::s3_pulls::run(plan, &store, berth, &dir).await);
        Ok::<_, anyhow::Error>(rows)
    }
    .await;
    match r {
        Ok(rows) => rows,
        Err(e) => {
            progress_line(&format!("  error: {e:#}"));
            let msg = crate::bench::short(&format!("{e:#}"));
            vec![Row {
                workload: "S3 (Garage)".into(),
                berth: Err(msg.clone()),
                reference: Err(msg),
                reference_name: Some(NAMES[1].into()),
                reference_note: None,
                unit: Unit::MibPerSec,
                target: Target::None,
            }]
        }
    }
}

/// Pushes, blob GETs and manifest GETs on the three servers.
async fn stores(
    plan: &S3Plan,
    store: &Store,
    berth: &Path,
    distribution: &Path,
    dir: &Path,
) -> Result<Vec<Row>> {
    let config = dir.join("berth-s3.toml");
    std::fs::write(&config, store.berth_toml("bench-single"))?;
    let config_arg = format!("--config={}", config.display());
    let on_s3 = servers::start_berth_at(
        berth,
        dir,
        "berth-s3",
        "berth-s3-root",
        servers::free_port()?,
        &[&config_arg, "--gc-interval=off"],
        "warn",
    )
    .await?;
    let dist = servers::start_distribution_on(
        distribution,
        dir,
        "distribution-s3",
        &dir.join("distribution-s3.yml"),
        &store.distribution_yaml("/distribution"),
        dir.join("distribution-s3-unused"),
    )
    .await?;
    let on_disk = servers::start_berth_at(
        berth,
        dir,
        "berth-disk",
        "berth-disk-root",
        servers::free_port()?,
        &["--gc-interval=off"],
        "warn",
    )
    .await?;
    let all: [&Server; 3] = [&on_s3, &dist, &on_disk];
    let mut rows = Vec::new();
    let size = format!("{} MiB", plan.blob >> 20);

    progress_line(&format!(
        "s3: monolithic push of a {size} blob, three servers"
    ));
    let mut push = Three::default();
    for rep in 0..plan.repeats {
        let blob = Blob::new(plan.blob, 9000 + rep as u64);
        for who in rotation(rep) {
            if push.failed(who) {
                continue;
            }
            let r = async {
                let mut c = Conn::connect(all[who].addr).await?;
                let t = ops::push_monolithic(&mut c, "bench/push", &blob).await?;
                Ok(throughput(blob.size, t))
            }
            .await;
            push.record(who, r);
        }
    }
    rows.extend(push.rows(
        &format!("monolithic push, {size}"),
        Unit::MibPerSec,
        Target::Better,
    ));

    progress_line(&format!("s3: blob GET of a {size} blob, three servers"));
    let blob = Blob::new(plan.blob, 9500);
    let mut get = Three::default();
    for (who, s) in all.iter().enumerate() {
        let r = async {
            let mut c = Conn::connect(s.addr).await?;
            ops::push_monolithic(&mut c, "bench/get", &blob).await
        }
        .await;
        if let Err(e) = r {
            get.record(who, Err(e.context("pushing the blob to read")));
        }
    }
    for rep in 0..plan.repeats.max(2) * 2 {
        for who in rotation(rep) {
            if get.failed(who) {
                continue;
            }
            let r = async {
                let mut c = Conn::connect(all[who].addr).await?;
                let t =
                    ops::get_sized(&mut c, &ops::blob_path("bench/get", &blob), blob.size).await?;
                Ok(throughput(blob.size, t))
            }
            .await;
            get.record(who, r);
        }
    }
    rows.extend(get.rows(
        &format!("blob GET, {size}"),
        Unit::MibPerSec,
        Target::Better,
    ));

    progress_line(&format!(
        "s3: manifest GET by tag with wrk, {} connections, {:?} per run, three servers",
        plan.wrk_connections, plan.wrk_duration
    ));
    let (mut rps, mut p99) = (Three::default(), Three::default());
    for (who, s) in all.iter().enumerate() {
        if let Err(e) = push_small_image(s).await {
            let msg = format!("{e:#}");
            rps.record(who, Err(anyhow!(msg.clone())));
            p99.record(who, Err(anyhow!(msg)));
        }
    }
    let accept = format!("Accept: {}", ops::ACCEPT_MANIFESTS);
    for rep in 0..plan.repeats {
        for who in rotation(rep) {
            if rps.failed(who) {
                continue;
            }
            let url = format!(
                "http://{}/v2/bench/manifest/manifests/latest",
                all[who].addr
            );
            let w = wrk::run(&wrk::WrkRun {
                url: &url,
                threads: plan.wrk_threads,
                connections: plan.wrk_connections,
                duration: plan.wrk_duration,
                headers: &[&accept],
                cpus: None,
            })
            .await;
            match w {
                Ok(w) => {
                    rps.record(who, Ok(w.requests_per_sec));
                    p99.record(who, Ok(w.p99.as_secs_f64()));
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    rps.record(who, Err(anyhow!(msg.clone())));
                    p99.record(who, Err(anyhow!(msg)));
                }
            }
        }
    }
    let what = format!(
        "manifest GET by tag, {} connections (wrk)",
        plan.wrk_connections
    );
    rows.extend(rps.rows(&what, Unit::ReqPerSec, Target::Better));
    rows.extend(p99.rows(
        "manifest GET by tag, p99 latency",
        Unit::Millis,
        Target::Better,
    ));
    for s in all {
        if let Err(e) = s.rss() {
            bail!(
                "{} is gone ({e:#}); its log ends:\n{}",
                s.name,
                s.log_tail()
            );
        }
    }
    Ok(rows)
}

/// A config, a 4 KiB layer and a manifest tagged `latest`, read back.
async fn push_small_image(s: &Server) -> Result<()> {
    let repo = "bench/manifest";
    let config = Blob::small(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let layer = Blob::new(4096, 9900);
    let manifest = ops::image_manifest(&config, &layer);
    let mut c = Conn::connect(s.addr).await?;
    ops::push_monolithic(&mut c, repo, &config).await?;
    ops::push_monolithic(&mut c, repo, &layer).await?;
    ops::put_manifest(&mut c, repo, "latest", &manifest).await?;
    let (status, body) = ops::get_small(
        &mut c,
        &format!("/v2/{repo}/manifests/latest"),
        ops::ACCEPT_MANIFESTS,
    )
    .await
    .context("reading the manifest back")?;
    if status != http::StatusCode::OK || body != manifest {
        bail!(
            "{}: the manifest read back ({status}) differs from the one pushed",
            s.name
        );
    }
    Ok(())
}
