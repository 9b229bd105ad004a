//! The `cache` workload: cold pulls through the pull-through cache, run by
//! `berth-bench-cache --json` (the program beside this one, which starts
//! its own upstream and caches, and also runs alone as `scripts/bench
//! cache`), its figures turned into rows of this report:
//!
//! - the total time of the cold pull by 32 clients through berth against
//!   ONE client pulling the same image straight from the upstream (target:
//!   at most 1.5x the time);
//! - the same against Distribution's proxy mode, for context;
//! - berth's upstream blob GETs per blob (target: 1), beside Distribution's.
//!
//! Each label ends with the upstream's link, as the JSON reports it
//! (`upstream_link`): by default a 500 Mbit/s link into a network
//! namespace, which is what gives the time ratio its meaning; the rate can
//! be set with `--cache-upstream-rate`, passed on as `--upstream-rate`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{progress_line, short};
use crate::report::{Row, Target, Unit};
use crate::stats::{Cell, Stat};

/// How `berth-bench-cache` is run.
pub struct CachePlan<'a> {
    pub quick: bool,
    pub repeats: Option<usize>,
    pub berth: &'a Path,
    pub distribution: &'a Path,
    pub workdir: &'a Path,
    pub max_seconds: u64,
    /// `--upstream-rate` for `berth-bench-cache` [default: its own, 500mbit]
    pub upstream_rate: Option<&'a str>,
}

/// Run the cache benchmark; its rows (error cells when it failed).
pub async fn run(plan: &CachePlan<'_>) -> Vec<Row> {
    progress_line("cache: cold pulls through the pull-through cache (berth-bench-cache --json)");
    let figures = async {
        let exe = std::env::current_exe()
            .context("locating this program")?
            .with_file_name("berth-bench-cache");
        if !exe.is_file() {
            bail!(
                "no berth-bench-cache at {} (cargo build --release -p berth-bench)",
                exe.display()
            );
        }
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("--json")
            .arg("--berth")
            .arg(plan.berth)
            .arg("--distribution")
            .arg(plan.distribution)
            .arg("--dir")
            .arg(plan.workdir)
            .arg("--max-seconds")
            .arg(plan.max_seconds.to_string());
        if plan.quick {
            cmd.arg("--quick");
        }
        if let Some(r) = plan.repeats {
            cmd.arg("--repeats").arg(r.to_string());
        }
        if let Some(r) = plan.upstream_rate {
            cmd.arg("--upstream-rate").arg(r);
        }
        // Its table and progress go to our stderr; the JSON comes back.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let limit = Duration::from_secs(plan.max_seconds + 30);
        let out = tokio::time::timeout(limit, cmd.output())
            .await
            .context("berth-bench-cache did not finish in time")?
            .context("running berth-bench-cache")?;
        if !out.status.success() {
            bail!(
                "berth-bench-cache failed ({}); see its output above",
                out.status
            );
        }
        serde_json::from_slice::<Value>(&out.stdout).context("berth-bench-cache's JSON")
    }
    .await;
    match figures.and_then(|v| rows(&v)) {
        Ok(rows) => rows,
        Err(e) => {
            let msg = short(&format!("{e:#}"));
            progress_line(&format!("  error: {msg}"));
            // The link as asked for: what it turned out to be is unknown.
            let link = match plan.upstream_rate {
                Some(r) => format!(" (upstream link: --upstream-rate {r})"),
                None => String::new(),
            };
            error_rows(&msg, &link)
        }
    }
}

/// The samples of one list in a group of the JSON, divided by `per`.
fn samples(v: &Value, target: &str, clients: u64, key: &str, per: f64) -> Cell {
    let group = v["groups"]
        .as_array()
        .and_then(|gs| {
            gs.iter()
                .find(|g| g["target"] == target && g["clients"].as_u64() == Some(clients))
        })
        .ok_or_else(|| format!("no {target} run with {clients} client(s)"))?;
    let vals = group[key]
        .as_array()
        .ok_or_else(|| format!("no {key} in the {target} run"))?
        .iter()
        .map(|x| x.as_f64().map(|x| x / per))
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(|| format!("a {key} of {target} is not a number"))?;
    Stat::new(vals).ok_or_else(|| format!("no {key} sample for {target}"))
}

fn time_row(many: u64, link: &str) -> String {
    format!("cold pull through the cache by {many} clients, total time{link}")
}

fn proxy_row(many: u64, link: &str) -> String {
    format!("cold pull through the cache by {many} clients, total time, against Distribution's proxy mode{link}")
}

fn gets_row(many: u64, link: &str) -> String {
    format!("upstream blob GETs per blob, cold pull by {many} clients through the cache{link}")
}

/// The end of every label: how the upstream was reached, from the JSON.
fn link_label(v: &Value) -> String {
    let link = &v["upstream_link"];
    match link["kind"].as_str() {
        Some("netns-veth-tbf") => format!(
            " (upstream across a {} link)",
            link["rate"].as_str().unwrap_or("rate-limited")
        ),
        Some("loopback") => " (upstream on loopback, no rate limit)".into(),
        _ => String::new(),
    }
}

/// The rows from `berth-bench-cache --json`.
fn rows(v: &Value) -> Result<Vec<Row>> {
    let blobs = v["blobs"].as_u64().context("no blob count in the JSON")?;
    if blobs == 0 {
        bail!("the cache benchmark's image has no blobs");
    }
    let many = v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().filter_map(|g| g["clients"].as_u64()).max())
        .context("no runs in the JSON")?;
    let total = |target: &str, clients: u64| samples(v, target, clients, "total_secs", 1.0);
    let gets = |target: &str| samples(v, target, many, "upstream_blob_gets", blobs as f64);
    let link = link_label(v);
    Ok(vec![
        Row {
            workload: time_row(many, &link),
            berth: total("berth", many),
            reference: total("direct", 1),
            reference_name: Some("1 client straight from the upstream".into()),
            reference_note: None,
            unit: Unit::Secs,
            target: Target::TimeWithin(1.5),
        },
        Row {
            workload: proxy_row(many, &link),
            berth: total("berth", many),
            reference: total("distribution-proxy", many),
            reference_name: Some("Distribution proxy".into()),
            reference_note: None,
            unit: Unit::Secs,
            target: Target::None,
        },
        Row {
            workload: gets_row(many, &link),
            berth: gets("berth"),
            reference: gets("distribution-proxy"),
            reference_name: Some("Distribution proxy".into()),
            reference_note: None,
            unit: Unit::PerBlob,
            target: Target::AtMost(1.0),
        },
    ])
}

/// The same rows, every cell the error.
fn error_rows(msg: &str, link: &str) -> Vec<Row> {
    let row = |workload: String, unit, target| Row {
        workload,
        berth: Err(msg.to_string()),
        reference: Err(msg.to_string()),
        reference_name: None,
        reference_note: None,
        unit,
        target,
    };
    vec![
        row(time_row(32, link), Unit::Secs, Target::TimeWithin(1.5)),
        row(proxy_row(32, link), Unit::Secs, Target::None),
        row(gets_row(32, link), Unit::PerBlob, Target::AtMost(1.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_the_cache_benchmark_json() {
        let v = serde_json::json!({
            "blobs": 5, "image_bytes": 1000, "repeats": 3,
            "upstream_link": {"kind": "netns-veth-tbf", "rate": "500 Mbit/s",
                              "rate_bits_per_sec": 500_000_000},
            "groups": [
                {"target": "direct", "clients": 1, "total_secs": [1.0, 1.2, 1.1],
                 "upstream_blob_gets": [5, 5, 5], "upstream_requests": [6, 6, 6]},
                {"target": "berth", "clients": 32, "total_secs": [1.5, 1.4, 9.0],
                 "upstream_blob_gets": [5, 5, 5], "upstream_requests": [6, 6, 6]},
                {"target": "distribution-proxy", "clients": 32, "total_secs": [3.0, 3.0, 3.0],
                 "upstream_blob_gets": [40, 30, 35], "upstream_requests": [50, 40, 45]},
            ]
        });
        let r = rows(&v).unwrap();
        assert_eq!(r.len(), 3);
        // Medians: berth 1.5 s against direct 1.1 s, within 1.5x.
        assert_eq!(r[0].berth.as_ref().unwrap().median(), 1.5);
        assert_eq!(r[0].reference.as_ref().unwrap().median(), 1.1);
        assert_eq!(r[0].pass(), Some(true));
        assert_eq!(
            r[0].workload,
            "cold pull through the cache by 32 clients, total time \
             (upstream across a 500 Mbit/s link)"
        );
        assert!(r[1]
            .workload
            .ends_with("proxy mode (upstream across a 500 Mbit/s link)"));
        assert!(r[2]
            .workload
            .ends_with("through the cache (upstream across a 500 Mbit/s link)"));
        assert_eq!(r[1].pass(), None);
        // 5 GETs of 5 blobs: 1 per blob; Distribution 35 / 5 = 7.
        assert_eq!(r[2].berth.as_ref().unwrap().median(), 1.0);
        assert_eq!(r[2].reference.as_ref().unwrap().median(), 7.0);
        assert_eq!(r[2].pass(), Some(true));
        assert!(rows(&serde_json::json!({"blobs": 5, "groups": []})).is_err());
        let partial = serde_json::json!({"blobs": 5, "groups": [
            {"target": "berth", "clients": 32, "total_secs": [1.0], "upstream_blob_gets": [5]}]});
        let r = rows(&partial).unwrap();
        assert!(r[0].errored() && r[0].berth.is_ok());
        // Without `upstream_link` the labels claim nothing about the link.
        assert!(r[0].workload.ends_with("total time"));
    }
}
