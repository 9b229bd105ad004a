//! `berth cache REF... [-f LIST] --to BERTH`: warm a berth pull-through
//! cache. Each image is pulled *through* that berth under its mirror name
//! (`docker.io/library/alpine:3.20` as repository `docker.io/library/alpine`,
//! `registry.local:5000/app` as `registry.local__5000/app`),
//! so the berth fetches it with its own upstream configuration and keeps
//! it; every manifest and blob is read in full, so the cache ends up
//! holding the complete image. All platforms by default.

use std::io::Read;

use anyhow::Context as _;
use berth_reference::ImageReference;
use berth_transfer::bundle::{mirror_target, parse_list};
use berth_transfer::{
    copy, parse_registry_target, CopyOptions, CopyReport, NullDest, RegistrySource, Selection,
};
use clap::Args;
use serde::Serialize;

use super::imaging::{
    fail, human, print_json, progress, runtime, usage, OutputFormat, ParallelArgs, Partial,
    RegistryArgs, SelectArgs,
};

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Images to cache (Docker's normalisation applies).
    pub images: Vec<String>,
    /// A file of image references, one per line (- for stdin).
    #[arg(short = 'f', long = "file", value_name = "LIST")]
    pub file: Option<String>,
    /// The berth server: HOST[:PORT] or an http(s):// URL.
    #[arg(long, value_name = "BERTH")]
    pub to: String,
    /// Every platform by default; --platform keeps one.
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Leave out what refers to each image: signatures, attestations and
    /// SBOMs (OCI referrers, cosign's sha256-<hex>.sig/.att/.sbom tags).
    #[arg(long)]
    pub no_referrers: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct Outcome {
    image: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<CopyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let mut text = args.images.join("\n");
    if let Some(f) = &args.file {
        let s = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?
        };
        text.push('\n');
        text.push_str(&s);
    }
    let images: Vec<ImageReference> = parse_list(&text).map_err(fail)?;
    if images.is_empty() {
        return Err(usage("no image to cache: name images or give -f LIST"));
    }
    let (registry, base) = parse_registry_target(&args.to).map_err(fail)?;
    let mut opts = args.registry.options()?;
    if let Some(u) = base {
        opts.upstreams.push((registry.clone(), u));
    }
    let copy_opts = CopyOptions {
        selection: args.select.selection(Selection::All)?,
        parallel: args.parallel.count(),
        progress: progress(args.output),
    };
    let text_out = args.output == OutputFormat::Text;
    let total = images.len();
    let outcomes = runtime()?.block_on(async {
        let client = opts.client(&registry, None).await.map_err(fail)?;
        let mut outcomes = Vec::new();
        for (n, img) in images.iter().enumerate() {
            let target = mirror_target(img, &registry, None);
            if text_out {
                match &target {
                    Ok(t) => eprintln!("[{}/{total}] caching {img} as {t}", n + 1),
                    Err(_) => eprintln!("[{}/{total}] caching {img}", n + 1),
                }
            }
            let result = async {
                let target = target?;
                let src = RegistrySource::with_client(client.clone(), target);
                let dest = NullDest {
                    name: format!("cache {registry}"),
                };
                let mut report = copy(&src, &dest, &copy_opts).await?;
                if !args.no_referrers {
                    // Asked through the berth, which fetches cosign's tags
                    // from the upstream like any tag.
                    let mut all = copy_opts.clone();
                    all.selection = Selection::All;
                    for r in src.referrer_refs(&report.digest).await? {
                        let extra = copy(&src.sibling(r), &dest, &all).await?;
                        report.manifests += extra.manifests;
                        report.blobs += extra.blobs;
                        report.bytes_copied += extra.bytes_copied;
                    }
                }
                Ok(report)
            }
            .await;
            let o = match result {
                Ok(r) => {
                    if text_out {
                        eprintln!(
                            "[{}/{total}] cached {img}: {} manifest(s), {} blob(s), {} ({})",
                            n + 1,
                            r.manifests,
                            r.blobs,
                            human(r.bytes_copied),
                            r.digest
                        );
                    }
                    Outcome {
                        image: img.to_string(),
                        ok: true,
                        report: Some(r),
                        error: None,
                    }
                }
                Err(e) => {
                    let e = fail(e);
                    if text_out {
                        eprintln!("[{}/{total}] FAILED {img}: {e:#}", n + 1);
                    }
                    Outcome {
                        image: img.to_string(),
                        ok: false,
                        report: None,
                        error: Some(format!("{e:#}")),
                    }
                }
            };
            outcomes.push(o);
        }
        anyhow::Ok(outcomes)
    })?;
    let ok = outcomes.iter().filter(|o| o.ok).count();
    if args.output == OutputFormat::Json {
        print_json(&outcomes)?;
    } else {
        let bytes: u64 = outcomes
            .iter()
            .filter_map(|o| o.report.as_ref())
            .map(|r| r.bytes_copied)
            .sum();
        eprintln!(
            "cached {ok} of {total} image(s) in {registry} ({} read)",
            human(bytes)
        );
    }
    if ok < total {
        return Err(anyhow::Error::new(Partial(format!(
            "{} of {total} image(s) could not be cached",
            total - ok
        ))));
    }
    Ok(())
}
