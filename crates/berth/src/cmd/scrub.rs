//! `berth scrub` (re-hash every stored blob, quarantine damaged ones, exit
//! non-zero when any was found) and `berth du` (what is stored and for
//! whom). Like `berth gc`: through the running server's admin socket, or
//! directly on a root nobody serves.

use std::path::PathBuf;

use anyhow::Context;
use berth_lifecycle::{Lifecycle, LifecycleConfig, ScrubReport, UsageReport};
use berth_storage::root_lock;
use clap::Args;

use super::imaging::{human, OutputFormat};

#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Storage root of the server [default: ./berth-data]
    #[arg(long, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
    /// Read at most this many MiB a second (0: no limit), so a scrub of a
    /// serving registry leaves the disk to its clients [default: 100]
    #[arg(long, value_name = "MIB", default_value_t = 100)]
    pub rate: u64,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DuArgs {
    /// Storage root of the server [default: ./berth-data]
    #[arg(long, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The lifecycle jobs over a root this process locked, or `None` when a
/// server holds it (then ask it). The lock is held as long as the value.
async fn local(root: &std::path::Path) -> anyhow::Result<Option<(root_lock::RootLock, Lifecycle)>> {
    let Some(lock) = root_lock::try_lock(root)
        .with_context(|| format!("locking storage root {}", root.display()))?
    else {
        return Ok(None);
    };
    let registry = super::admin::open_registry(root).await?;
    let config = LifecycleConfig {
        gc_interval: None,
        ..LifecycleConfig::default()
    };
    Ok(Some((lock, Lifecycle::new(registry, config))))
}

pub fn run_scrub(args: ScrubArgs) -> anyhow::Result<()> {
    let root = super::admin::storage_root(args.root.as_deref())?;
    let rate = (args.rate > 0).then(|| args.rate.saturating_mul(1 << 20));
    let report: ScrubReport = super::admin::runtime()?.block_on(async {
        match local(&root).await? {
            Some((_lock, lifecycle)) => Ok::<_, anyhow::Error>(lifecycle.scrub(rate).await?),
            None => super::admin::call(&root, &format!("/scrub?rate={}", rate.unwrap_or(0))).await,
        }
    })?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.skipped {
        println!("skipped: another replica on the same storage is running a lifecycle job");
    } else {
        println!(
            "checked {} blobs ({} bytes) in {} ms: {} corrupt, {} quarantined",
            report.blobs_checked,
            report.bytes_checked,
            report.duration_ms,
            report.corrupt.len(),
            report.quarantined
        );
        for d in &report.corrupt {
            println!("  corrupt: {d}");
        }
    }
    if report.corrupt.is_empty() {
        Ok(())
    } else {
        Err(super::AlreadyReported("scrub found corrupt blobs (quarantined)").into())
    }
}

pub fn run_du(args: DuArgs) -> anyhow::Result<()> {
    let root = super::admin::storage_root(args.root.as_deref())?;
    let report: UsageReport = super::admin::runtime()?.block_on(async {
        match local(&root).await? {
            Some((_lock, lifecycle)) => Ok::<_, anyhow::Error>(lifecycle.usage().await?),
            None => super::admin::call(&root, "/du").await,
        }
    })?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let line = |name: &str, b: &berth_lifecycle::usage::Bytes| {
        println!("{:>16}  {:>8} blobs  {name}", human(b.bytes), b.blobs)
    };
    line("total", &report.total);
    line("pinned (pushed, loaded)", &report.pinned);
    line("cached (evictable)", &report.cached);
    for (group, b) in &report.by_upstream {
        line(group, b);
    }
    line("upload sessions", &report.uploads);
    Ok(())
}
