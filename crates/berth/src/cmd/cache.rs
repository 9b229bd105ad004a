//! `berth cache REF... [-f LIST] --to BERTH`: warm a berth pull-through
//! cache. The berth fetches each image from its upstream itself (its
//! prefetch endpoint; this prints its progress), under its mirror name
//! (`docker.io/library/alpine:3.20` as repository `docker.io/library/alpine`,
//! `registry.local:5000/app` as `registry.local__5000/app`),
//! with its own upstream configuration, and keeps the complete image. A
//! server without the endpoint (or `--through-client`) has the image
//! pulled through it instead, every manifest and blob read in full here.
//! All platforms by default.

use berth_reference::{ImageReference, ManifestRef};
use berth_transfer::bundle::{mirror_target, parse_list};
use berth_transfer::{
    copy, parse_registry_target, CopyOptions, CopyReport, NullDest, RegistrySource, Selection,
    TransferError,
};
use clap::Args;
use serde::Serialize;

use super::imaging::{
    fail, human, print_json, progress, read_list, runtime, usage, OutputFormat, ParallelArgs,
    Partial, RegistryArgs, SelectArgs,
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
    /// Pull every byte through this client instead of asking the berth to
    /// fetch the images itself (what happens anyway when the server is not
    /// berth or has no prefetch endpoint).
    #[arg(long)]
    pub through_client: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// How an image was cached.
enum Fetched {
    /// The report of the fetch (by the server, or through this client).
    ByServer(CopyReport),
    /// The server has no prefetch endpoint.
    Unsupported,
}

impl Fetched {
    fn report(self) -> Result<CopyReport, TransferError> {
        match self {
            Fetched::ByServer(r) => Ok(r),
            Fetched::Unsupported => Err(TransferError::Unsupported("prefetch".into())),
        }
    }
}

/// Make the berth behind `src` hold `src`'s image: by asking it to fetch
/// the image itself (its progress printed when `verbose`), or, with
/// `through_client`, by reading every manifest and blob through it.
async fn fetch(
    src: &RegistrySource,
    opts: &CopyOptions,
    through_client: bool,
    verbose: bool,
) -> Result<Fetched, TransferError> {
    if through_client {
        let dest = NullDest {
            name: "the cache".to_string(),
        };
        return Ok(Fetched::ByServer(copy(src, &dest, opts).await?));
    }
    let target = src.reference().clone();
    let reference: ManifestRef = target
        .reference_str()
        .parse()
        .map_err(|e| TransferError::Invalid(format!("{target}: {e}")))?;
    let platforms = match &opts.selection {
        Selection::All => Vec::new(),
        Selection::Platform(p) => vec![p.to_string()],
        Selection::Host => vec![berth_transfer::Platform::host().to_string()],
    };
    let mut done = None;
    let mut on_event = |v: &serde_json::Value| {
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let number = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        match field("event").as_str() {
            "blob" if verbose && v.get("fetched").and_then(|f| f.as_bool()) == Some(true) => {
                eprintln!("  fetched {} ({})", field("digest"), human(number("size")));
            }
            "waiting" if verbose => {
                eprintln!(
                    "  fetching {} ({} so far)",
                    field("digest"),
                    human(number("bytes"))
                );
            }
            "done" => done = Some(v.clone()),
            _ => {}
        }
    };
    let supported = src
        .client()
        .prefetch(&target.repository, &reference, &platforms, &mut on_event)
        .await
        .map_err(|e| TransferError::registry(format!("prefetching {target}"), e))?;
    if !supported {
        return Ok(Fetched::Unsupported);
    }
    let done = done.unwrap_or_default();
    let number = |k: &str| done.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let digest = done
        .get("digest")
        .and_then(|d| d.as_str())
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| {
            TransferError::Invalid(format!("prefetching {target}: no digest in the answer"))
        })?;
    let (blobs, fetched) = (number("blobs") as usize, number("fetched") as usize);
    Ok(Fetched::ByServer(CopyReport {
        source: format!("docker://{target}"),
        destination: "the cache".to_string(),
        digest,
        media_type: String::new(),
        manifests: number("manifests") as usize,
        blobs,
        blobs_copied: fetched,
        blobs_skipped: blobs.saturating_sub(fetched),
        blobs_mounted: 0,
        bytes_copied: number("bytes"),
        from_index: None,
    }))
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
        let s = read_list(f)?;
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
                let mut all = copy_opts.clone();
                all.selection = Selection::All;
                let mut report = match fetch(&src, &copy_opts, args.through_client, text_out).await? {
                    Fetched::ByServer(r) => r,
                    Fetched::Unsupported => {
                        if text_out {
                            eprintln!("note: {registry} has no prefetch endpoint (not berth, or an older one): pulling the image through it from here");
                        }
                        fetch(&src, &copy_opts, true, text_out).await?.report()?
                    }
                };
                if !args.no_referrers {
                    // Asked through the berth, which lists its upstream's
                    // referrers and fetches cosign's tags like any tag.
                    for r in src.referrer_refs(&report.digest).await? {
                        let r = fetch(&src.sibling(r), &all, args.through_client, false).await?;
                        let extra = match r {
                            Fetched::ByServer(r) => r,
                            Fetched::Unsupported => return Err(TransferError::Unsupported("prefetch".into())),
                        };
                        report.manifests += extra.manifests;
                        report.blobs += extra.blobs;
                        report.blobs_copied += extra.blobs_copied;
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
