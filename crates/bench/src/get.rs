//! Blob GETs (issue 16): the blob from a warm page cache, berth against
//! Distribution and against nginx's `sendfile` of the very file berth
//! stores (the ceiling of serving a file over plain HTTP on this machine:
//! berth's target is 1.0x of it); then `downloads` (64) concurrent GETs of
//! the blob from each of the three, for the aggregate rate (target: nginx's
//! on the same test) and the registries' peak resident memory.
//!
//! The three take turns within each repeat, in an order that reverses on
//! odd repeats, so that none always runs on the warmest (or the busiest)
//! machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::bench::{blob_file, progress_line, row, throughput, Bench};
use crate::blob::Blob;
use crate::client::Conn;
use crate::ops;
use crate::report::{Row, Target, Unit, MIB};
use crate::servers::{rss_of, Server};
use crate::stats::{Samples, Series};

/// berth (0), Distribution (1), nginx (2): the order on repeat `rep`.
fn order3(rep: usize) -> [usize; 3] {
    if rep.is_multiple_of(2) {
        [0, 1, 2]
    } else {
        [2, 1, 0]
    }
}

/// A row of berth against nginx: both figures of the same measurement.
fn against_nginx(workload: String, berth: &Samples, nginx: &Series, target: Target) -> Row {
    Row {
        workload,
        berth: berth.cell(0),
        reference: nginx.cell(),
        reference_name: Some("nginx".into()),
        reference_note: None,
        unit: Unit::GibPerSec,
        target,
    }
}

impl Bench<'_> {
    /// Blob GETs from a warm page cache, against nginx's sendfile of the
    /// very file berth stores; then many downloads at once.
    pub async fn blob_get_and_memory(&mut self) {
        let p = self.plan.clone();
        progress_line(&format!(
            "blob GET of a {} blob (warm page cache)",
            p.size_text()
        ));
        let blob = Blob::new(p.blob, 3000);
        let repo = "bench/get";
        let path = ops::blob_path(repo, &blob);
        let mut s = Samples::default();
        for i in 0..2 {
            let r = async {
                let mut c = self.conn(i).await?;
                ops::push_monolithic(&mut c, repo, &blob).await?;
                // Warm the page cache (and the server) untimed.
                ops::get_sized(&mut c, &path, blob.size).await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                s.record(i, Err(e));
            }
        }
        // nginx serves berth's own copy of the blob.
        let berth_file = blob_file(self.servers[0], &blob);
        let nginx_path = format!(
            "/{}",
            berth_file
                .strip_prefix(&self.servers[0].root)
                .unwrap_or(&berth_file)
                .display()
        );
        let mut ng = Series::default();
        let nginx: Option<Server> = match &self.nginx {
            None => None,
            Some(bin) => {
                let started = async {
                    let n = crate::servers::start_nginx(bin, &self.workdir, &self.servers[0].root)
                        .await?;
                    // Warm nginx as the registries were, untimed.
                    let mut c = Conn::connect(n.addr).await?;
                    ops::get_sized(&mut c, &nginx_path, blob.size).await?;
                    Ok::<_, anyhow::Error>(n)
                }
                .await;
                match started {
                    Ok(n) => Some(n),
                    Err(e) => {
                        ng.record(Err(e));
                        None
                    }
                }
            }
        };
        let nginx_addr = nginx.as_ref().map(|n| n.addr);
        for rep in 0..p.get_repeats.max(p.repeats) {
            for k in order3(rep) {
                let (addr, target) = match k {
                    0 | 1 if !s.failed(k) => (self.addr(k), path.as_str()),
                    2 if !ng.failed() => match nginx_addr {
                        Some(a) => (a, nginx_path.as_str()),
                        None => continue,
                    },
                    _ => continue,
                };
                let r = async {
                    let mut c = Conn::connect(addr).await?;
                    Ok(throughput(
                        blob.size,
                        ops::get_sized(&mut c, target, blob.size).await?,
                    ))
                }
                .await;
                if k == 2 {
                    ng.record(r);
                } else {
                    s.record(k, r);
                }
            }
        }
        self.rows.push(row(
            format!("blob GET, {}, warm page cache", p.size_text()),
            &s,
            Unit::GibPerSec,
            Target::Times(1.3),
        ));
        // Without nginx (not installed) the header says so and the rows
        // against it are left out.
        if self.nginx.is_some() {
            self.rows.push(against_nginx(
                "blob GET against nginx sendfile of the same file".into(),
                &s,
                &ng,
                Target::Times(1.0),
            ));
        }
        self.downloads(&s, &path, nginx_addr, &nginx_path, blob.size)
            .await;
        drop(nginx);
        for server in self.servers {
            let _ = std::fs::remove_file(blob_file(server, &blob));
        }
    }

    /// `downloads` concurrent GETs of the blob from berth, Distribution and
    /// nginx in turn, `repeats` times: the aggregate rate, and the
    /// registries' peak memory meanwhile.
    async fn downloads(
        &mut self,
        gets: &Samples,
        path: &str,
        nginx: Option<SocketAddr>,
        nginx_path: &str,
        size: u64,
    ) {
        let p = self.plan.clone();
        progress_line(&format!(
            "{} concurrent downloads of the {} blob (berth, Distribution, nginx)",
            p.downloads,
            p.size_text()
        ));
        let mut peak = Samples::default();
        let mut rate = Samples::default();
        let mut ng = Series::default();
        for i in 0..2 {
            if gets.failed(i) {
                peak.0[i].fail("no blob to download");
                rate.0[i].fail("no blob to download");
            }
        }
        if nginx.is_none() {
            ng.fail("nginx did not start");
        }
        for rep in 0..p.repeats {
            for k in order3(rep) {
                if k == 2 {
                    if let (Some(addr), false) = (nginx, ng.failed()) {
                        let r = self
                            .concurrent_downloads(addr, None, nginx_path, size)
                            .await;
                        ng.record(r.map(|(_, rate)| rate));
                    }
                    continue;
                }
                if rate.failed(k) {
                    continue;
                }
                let server = self.servers[k];
                match self
                    .concurrent_downloads(server.addr, Some(server.pid()), path, size)
                    .await
                {
                    Ok((max, bytes_per_sec)) => {
                        peak.record(k, Ok(max.unwrap_or_default()));
                        rate.record(k, Ok(bytes_per_sec));
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        rate.record(k, Err(e));
                        peak.0[k].fail(&msg);
                    }
                }
            }
        }
        let idle_berth = self.idle_rss[0].clone();
        self.rows.push(Row {
            workload: "resident memory, idle".into(),
            berth: idle_berth.clone(),
            reference: self.idle_rss[1].clone(),
            reference_name: None,
            reference_note: None,
            unit: Unit::Mib,
            target: Target::Below(20.0 * MIB),
        });
        let allowance = idle_berth
            .as_ref()
            .map(|idle| 2.0 * idle.median() + p.downloads as f64 * MIB)
            .unwrap_or(0.0);
        self.rows.push(row(
            format!(
                "resident memory, peak during {} concurrent {} downloads",
                p.downloads,
                p.size_text()
            ),
            &peak,
            Unit::Mib,
            Target::AtMost(allowance),
        ));
        self.rows.push(row(
            format!("aggregate GET rate of those {} downloads", p.downloads),
            &rate,
            Unit::GibPerSec,
            Target::None,
        ));
        if self.nginx.is_some() {
            self.rows.push(against_nginx(
                format!(
                    "aggregate GET rate of those {} downloads against nginx sendfile",
                    p.downloads
                ),
                &rate,
                &ng,
                Target::Times(1.0),
            ));
        }
    }

    /// `downloads` connections each GET `path` from `addr` at once; with a
    /// `pid`, its VmRSS is sampled every 10 ms meanwhile. Returns (peak RSS,
    /// aggregate bytes/s).
    async fn concurrent_downloads(
        &self,
        addr: SocketAddr,
        pid: Option<u32>,
        path: &str,
        size: u64,
    ) -> Result<(Option<f64>, f64)> {
        let done = Arc::new(AtomicBool::new(false));
        let sampler = pid.map(|pid| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut peak = 0u64;
                // Bounded: at most 10 minutes of samples.
                for _ in 0..60_000 {
                    peak = peak.max(rss_of(pid)?);
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok::<_, anyhow::Error>(peak)
            })
        });
        let t = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..self.plan.downloads {
            let path = path.to_string();
            set.spawn(async move {
                let mut c = Conn::connect(addr).await?;
                ops::get_sized(&mut c, &path, size).await
            });
        }
        let mut result = Ok(());
        while let Some(r) = set.join_next().await {
            if let Err(e) = r.context("download task").and_then(|r| r) {
                result = Err(e);
            }
        }
        let elapsed = t.elapsed();
        done.store(true, Ordering::Relaxed);
        let peak = match sampler {
            Some(s) => Some(s.await.context("RSS sampler")?? as f64),
            None => None,
        };
        result?;
        Ok((peak, throughput(size * self.plan.downloads as u64, elapsed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_reverses_on_odd_repeats() {
        assert_eq!(order3(0), [0, 1, 2]);
        assert_eq!(order3(1), [2, 1, 0]);
        assert_eq!(order3(4), order3(0));
    }
}
