//! `berth gc [--dry-run]`: end abandoned upload sessions and delete what no
//! manifest references. Safe while berth serves: when a server holds the
//! root (`ROOT/run/berth.lock`), the collection runs inside it, through its
//! admin socket (`ROOT/run/admin.sock`), fenced against its pushes; only a
//! root nobody serves is worked on directly (the lock is taken meanwhile, so
//! no server starts on it).

use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_lifecycle::{CollectReport, Lifecycle, LifecycleConfig};
use berth_storage::root_lock;
use clap::Args;

use super::imaging::OutputFormat;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Storage root of the server [default: ./berth-data]
    #[arg(long, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
    /// With no server running: content younger than this is kept (a
    /// running server uses its own setting) [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub gc_grace: Option<String>,
    /// With no server running: end upload sessions idle this long
    /// [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub upload_ttl: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub fn run(args: GcArgs) -> anyhow::Result<()> {
    let root = args
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from("berth-data"));
    super::admin::ensure_storage_root(&root)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(collect(&root, &args))?;
    print(&report, args.output)
}

async fn collect(root: &Path, args: &GcArgs) -> anyhow::Result<CollectReport> {
    let lock = root_lock::try_lock(root)
        .with_context(|| format!("locking storage root {}", root.display()))?;
    let Some(_lock) = lock else {
        return through_server(root, args.dry_run).await;
    };
    let mut config = LifecycleConfig {
        gc_interval: None,
        ..LifecycleConfig::default()
    };
    if let Some(s) = &args.gc_grace {
        config.gc_grace = super::serve::parse_duration("--gc-grace", s)?;
    }
    if let Some(s) = &args.upload_ttl {
        config.upload_ttl = super::serve::parse_duration("--upload-ttl", s)?;
    }
    let registry = super::admin::open_registry(root).await?;
    Ok(Lifecycle::new(registry, config)
        .collect(args.dry_run)
        .await?)
}

/// Ask the server holding `root` to collect, over its admin socket.
async fn through_server(root: &Path, dry_run: bool) -> anyhow::Result<CollectReport> {
    super::admin::call(root, &format!("/gc?dry_run={dry_run}")).await
}

fn print(report: &CollectReport, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    if report.gc.skipped {
        println!("skipped: another replica on the same storage is running a lifecycle job");
        return Ok(());
    }
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let gc = &report.gc;
    println!(
        "{verb} {} blobs ({} bytes) of {} stored; kept {} referenced by {} manifests in {} repositories, {} within the grace period{}",
        gc.blobs_deleted,
        gc.bytes_freed,
        gc.blobs_seen,
        gc.marked,
        gc.manifests,
        gc.repositories,
        gc.blobs_young,
        if gc.blobs_fenced > 0 {
            format!(", {} referenced by a push meanwhile", gc.blobs_fenced)
        } else {
            String::new()
        }
    );
    let up = &report.uploads;
    let verb = if report.dry_run { "would end" } else { "ended" };
    println!(
        "{verb} {} idle upload sessions ({} bytes) of {} open",
        up.expired, up.bytes_freed, up.open
    );
    for d in &gc.deleted {
        println!("  {d}");
    }
    Ok(())
}
