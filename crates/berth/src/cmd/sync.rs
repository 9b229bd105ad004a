//! `berth sync LIST --to REGISTRY[/PREFIX]`: copy whole repositories (or
//! the tags matching a pattern) under their mirror names, incrementally;
//! see `berth_transfer::sync` for the list's forms.

use berth_transfer::sync::{parse_sync_list, sync, SyncTarget, SyncedTag};
use berth_transfer::{parse_registry_prefix, CopyOptions, Selection};
use clap::Args;

use super::imaging::{
    fail, human, print_json, progress, read_list, runtime, usage, OutputFormat, ParallelArgs,
    Partial, RegistryArgs,
};

#[derive(Debug, Args)]
#[command(after_help = "\
LIST (a file, or - for stdin) is either text, one repository per line:
  docker.io/library/alpine:3.*     tags matching a glob (* and ?)
  quay.io/prometheus/node-exporter every tag
  registry.local:5000/team/app:v1  one tag
or skopeo sync's YAML:
  docker.io:
    images:
      library/busybox: []          every tag
      library/alpine: [\"3.20\"]
    images-by-tag-regex:
      library/nginx: ^1\\.2[0-9]$

Each repository lands under its mirror name (docker.io/library/alpine, registry.local__5000/team/app),
below PREFIX if --to names one. A tag the destination holds at the same digest is not copied again.")]
pub struct SyncArgs {
    /// The list of repositories and tag patterns.
    pub list: String,
    /// The registry to sync into: HOST[:PORT] or an http(s):// URL, with an optional /PREFIX.
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub to: String,
    /// Say what would be copied; copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave out signatures, attestations and SBOMs (OCI referrers, cosign's tags).
    #[arg(long)]
    pub no_referrers: bool,
    #[command(flatten)]
    pub parallel: ParallelArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub fn run(args: SyncArgs) -> anyhow::Result<()> {
    let text = read_list(&args.list)?;
    let specs = parse_sync_list(&text).map_err(fail)?;
    if specs.is_empty() {
        return Err(usage("the list names no repository"));
    }
    let (registry, base, prefix) = parse_registry_prefix(&args.to).map_err(fail)?;
    let options = args.registry.options()?;
    let copy = CopyOptions {
        selection: Selection::All,
        parallel: args.parallel.count(),
        progress: progress(args.output),
    };
    let target = SyncTarget {
        registry: &registry,
        base,
        prefix: prefix.as_ref(),
        dry_run: args.dry_run,
        with_referrers: !args.no_referrers,
    };
    let text_out = args.output == OutputFormat::Text;
    let on_tag = move |t: &SyncedTag| {
        if !text_out {
            return;
        }
        match t.outcome {
            "failed" => eprintln!("FAILED {}: {}", t.source, t.error.as_deref().unwrap_or("?")),
            "copied" => eprintln!("copied {} -> {} ({})", t.source, t.target, human(t.bytes)),
            other => eprintln!("{other} {} -> {}", t.source, t.target),
        }
    };
    let done = runtime()?
        .block_on(sync(&specs, &target, &options, &copy, &on_tag))
        .map_err(fail)?;
    let count = |o: &str| done.iter().filter(|t| t.outcome == o).count();
    let failed = count("failed");
    if args.output == OutputFormat::Json {
        print_json(&done)?;
    } else {
        let bytes: u64 = done.iter().map(|t| t.bytes).sum();
        eprintln!(
            "synced {} tag(s) into {}: {} copied, {} unchanged{}, {failed} failed ({} transferred)",
            done.len(),
            args.to,
            count("copied"),
            count("unchanged"),
            if args.dry_run {
                format!(", {} to copy", count("would-copy"))
            } else {
                String::new()
            },
            human(bytes)
        );
    }
    if failed > 0 {
        return Err(anyhow::Error::new(Partial(format!(
            "{failed} of {} tag(s) could not be synced",
            done.len()
        ))));
    }
    Ok(())
}
