//! Cold pulls through replicas on one bucket (part of the `s3` workload):
//! `clients` clients at once pull one image (a config and `layers` layers)
//! through three berth replicas on one Garage bucket, spread round robin,
//! against the same clients through a single replica on a bucket prefix of
//! its own. The upstream is a berth on local disk on loopback, which logs
//! every request: its GETs of the image's blobs, counted in its log, are
//! the upstream GETs per blob (target: 1, however many replicas are asked;
//! rendezvous hashing sends each cold blob to one owner). Every run starts
//! on a fresh prefix, so every pull is cold; the order of the two set-ups
//! alternates each repeat.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::task::JoinSet;

use crate::bench::progress_line;
use crate::blob::Blob;
use crate::client::Conn;
use crate::ops;
use crate::report::{Row, Target, Unit};
use crate::s3::{S3Plan, Store};
use crate::servers::{self, Server};
use crate::stats::Samples;

/// The upstream's name in the replicas' repository names.
const UPSTREAM_HOST: &str = "bench.upstream.test";
const REPO: &str = "bench/app";
/// Each client's pull must end within this.
const PULL_LIMIT: Duration = Duration::from_secs(300);
/// Log names of the replicas (a server's log file is named after it).
const REPLICA_NAMES: [&str; 3] = ["s3-replica-0", "s3-replica-1", "s3-replica-2"];

/// The image on the upstream.
struct Image {
    manifest: Vec<u8>,
    blobs: Vec<Blob>,
}

pub(crate) async fn run(plan: &S3Plan, store: &Store, berth: &Path, dir: &Path) -> Vec<Row> {
    let what = format!(
        "cold pull by {} clients over {} replicas",
        plan.clients, plan.replicas
    );
    progress_line(&format!(
        "s3: {what} vs 1 replica, a {} MiB image in {} layers",
        plan.image >> 20,
        plan.layers
    ));
    let (mut time, mut gets) = (Samples::default(), Samples::default());
    let r = async {
        let upstream = servers::start_berth_at(
            berth,
            dir,
            "s3-upstream",
            "s3-upstream-root",
            servers::free_port()?,
            &["--gc-interval=off"],
            "warn,berth::request=info",
        )
        .await?;
        let image = push_image(plan, &upstream).await?;
        for rep in 0..plan.repeats {
            let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for who in order {
                if time.failed(who) {
                    continue;
                }
                let replicas = if who == 0 { plan.replicas } else { 1 };
                match cold_pull(plan, store, berth, dir, &upstream, &image, replicas, rep).await {
                    Ok((t, per_blob)) => {
                        time.record(who, Ok(t.as_secs_f64()));
                        gets.record(who, Ok(per_blob));
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        time.record(who, Err(anyhow!(msg.clone())));
                        gets.record(who, Err(anyhow!(msg)));
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = r {
        let msg = format!("{e:#}");
        time.record(0, Err(anyhow!(msg.clone())));
        gets.record(0, Err(anyhow!(msg)));
    }
    let reference = "1 replica".to_string();
    vec![
        Row {
            workload: format!("S3: {what}, total time"),
            berth: time.cell(0),
            reference: time.cell(1),
            reference_name: Some(reference.clone()),
            reference_note: None,
            unit: Unit::Secs,
            target: Target::TimeWithin(1.5),
        },
        Row {
            workload: format!("S3: {what}, upstream GETs"),
            berth: gets.cell(0),
            reference: gets.cell(1),
            reference_name: Some(reference),
            reference_note: None,
            unit: Unit::PerBlob,
            target: Target::AtMost(1.0),
        },
    ]
}

/// Push the image the clients pull to the upstream.
async fn push_image(plan: &S3Plan, upstream: &Server) -> Result<Image> {
    let config = Blob::small(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"author":"s3 bench"}"#,
    );
    let layers: Vec<Blob> = (0..plan.layers)
        .map(|i| Blob::new(plan.image / plan.layers as u64, 7700 + i as u64))
        .collect();
    let mut c = Conn::connect(upstream.addr).await?;
    ops::push_monolithic(&mut c, REPO, &config).await?;
    for l in &layers {
        ops::push_monolithic(&mut c, REPO, l).await?;
    }
    let manifest = ops::image_manifest_of(&config, &layers);
    ops::put_manifest(&mut c, REPO, "v1", &manifest).await?;
    let mut blobs = vec![config];
    blobs.extend(layers);
    Ok(Image { manifest, blobs })
}

/// The upstream's GETs of the image's blobs so far, from its request log.
fn upstream_blob_gets(upstream: &Server) -> usize {
    let path = format!("path=/v2/{REPO}/blobs/");
    upstream
        .log_text()
        .lines()
        .filter(|l| l.contains("berth::request") && l.contains("method=GET") && l.contains(&path))
        .count()
}

/// One cold pull through `replicas` fresh replicas: the time until the
/// last client has the whole image, and the upstream's GETs per blob.
#[allow(clippy::too_many_arguments)]
async fn cold_pull(
    plan: &S3Plan,
    store: &Store,
    berth: &Path,
    dir: &Path,
    upstream: &Server,
    image: &Image,
    replicas: usize,
    rep: usize,
) -> Result<(Duration, f64)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("pulls-{rep}-{replicas}-{stamp}");
    let addrs: Vec<SocketAddr> = (0..replicas)
        .map(|_| servers::free_port())
        .collect::<Result<_>>()?;
    let secret = dir.join("peer-secret");
    std::fs::write(&secret, "bench-peer-secret-0123456789abcdef-0123456789\n")?;
    let peers = addrs
        .iter()
        .map(|a| format!("\"http://{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let upstream_arg = format!("--upstream={UPSTREAM_HOST}=http://{}", upstream.addr);
    let mut started = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let cluster = if replicas > 1 {
            format!(
                "[cluster]\nself_url = \"http://{addr}\"\npeers = [{peers}]\nsecret_file = \"{}\"\n\n",
                secret.display()
            )
        } else {
            String::new()
        };
        let config = dir.join(format!("replica-{rep}-{replicas}-{i}.toml"));
        std::fs::write(&config, format!("{cluster}{}", store.berth_toml(&prefix)))?;
        let config_arg = format!("--config={}", config.display());
        let name = if replicas > 1 {
            REPLICA_NAMES[i % 3]
        } else {
            "s3-single"
        };
        let server = servers::start_berth_at(
            berth,
            dir,
            name,
            &format!("replica-root-{rep}-{replicas}-{i}"),
            *addr,
            &[&upstream_arg, &config_arg, "--gc-interval=off"],
            "warn",
        )
        .await?;
        started.push(server);
    }
    let before = upstream_blob_gets(upstream);
    let t = Instant::now();
    let mut clients = JoinSet::new();
    for k in 0..plan.clients {
        let addr = started[k % started.len()].addr;
        let manifest = image.manifest.clone();
        let blobs: Vec<(String, u64)> = image
            .blobs
            .iter()
            .map(|b| (b.digest.clone(), b.size))
            .collect();
        clients.spawn(async move {
            tokio::time::timeout(PULL_LIMIT, pull(addr, &manifest, &blobs))
                .await
                .map_err(|_| anyhow!("a client did not finish its pull within {PULL_LIMIT:?}"))?
        });
    }
    while let Some(r) = clients.join_next().await {
        r.context("a client task failed")??;
    }
    let took = t.elapsed();
    // The owner's fills end when the last client has its bytes; the log
    // line of each upstream GET is written when its response head goes.
    let gets = upstream_blob_gets(upstream).saturating_sub(before);
    for s in &started {
        if let Err(e) = s.rss() {
            bail!(
                "{} is gone ({e:#}); its log ends:\n{}",
                s.name,
                s.log_tail()
            );
        }
    }
    Ok((took, gets as f64 / image.blobs.len() as f64))
}

/// What a node does: the manifest by tag, then every blob, each checked.
async fn pull(addr: SocketAddr, manifest: &[u8], blobs: &[(String, u64)]) -> Result<()> {
    let mut c = Conn::connect(addr).await?;
    let path = format!("/v2/{UPSTREAM_HOST}/{REPO}/manifests/v1");
    let (status, body) = ops::get_small(&mut c, &path, ops::ACCEPT_MANIFESTS).await?;
    if status != http::StatusCode::OK || body != manifest {
        bail!("GET {path} through {addr}: {status}, or not the manifest pushed");
    }
    for (digest, size) in blobs {
        ops::get_sized(
            &mut c,
            &format!("/v2/{UPSTREAM_HOST}/{REPO}/blobs/{digest}"),
            *size,
        )
        .await?;
    }
    Ok(())
}
