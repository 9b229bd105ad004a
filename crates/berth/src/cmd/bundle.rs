//! `berth bundle create LIST|- -o FILE` and `berth bundle load FILE --to
//! REGISTRY`: the air-gap bundle (see `berth_transfer::bundle`).

use std::path::PathBuf;

use berth_transfer::bundle::{self, BundleImage};
use berth_transfer::incremental::Base;
use berth_transfer::{parse_registry_prefix, CopyOptions, Selection, TarCompression};
use clap::{Args, Subcommand};

use super::imaging::{
    fail, human, print_json, progress, read_list, runtime, OutputFormat, ParallelArgs,
    RegistryArgs, SelectArgs,
};

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    pub command: BundleCommand,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Fetch the images of a list (one reference per line; - for stdin) into one archive.
    Create(CreateArgs),
    /// Verify a bundle, then push every image into a registry under its mirror name.
    Load(LoadArgs),
    /// List a bundle's images: platforms, sizes, and the bytes they share
    /// (read from its manifests; `load` verifies every blob).
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The bundle.
    pub archive: PathBuf,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A file of image references, one per line (`berth images` output), or - for stdin.
    pub list: String,
    /// The bundle to write: FILE.tar.gz or FILE.tar.zst are compressed
    /// (see --compress); `load` and `ls` read any of them.
    #[arg(short = 'o', long = "archive", value_name = "FILE")]
    pub archive: PathBuf,
    /// Compress the whole bundle [default: from the file name, .gz or .zst;
    /// none for anything else].
    #[arg(long, value_enum, value_name = "HOW")]
    pub compress: Option<BundleCompress>,
    /// Leave out what refers to each image: signatures, attestations and
    /// SBOMs (OCI referrers, cosign's sha256-<hex>.sig/.att/.sbom tags).
    #[arg(long)]
    pub no_referrers: bool,
    /// An incremental bundle: leave out every blob this earlier bundle
    /// carried (the site loaded it already).
    #[arg(long, value_name = "OLD", conflicts_with = "skip_present_in")]
    pub since: Option<PathBuf>,
    /// An incremental bundle: leave out every blob this registry (a copy
    /// of the site's) holds under the image's mirror name.
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub skip_present_in: Option<String>,
    /// Every platform by default; --platform keeps one.
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BundleCompress {
    Gzip,
    Zstd,
    None,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The bundle.
    pub archive: PathBuf,
    /// The registry to push into: HOST[:PORT] or an http(s):// URL, with an
    /// optional path under which every image goes (a Harbor project:
    /// harbor.corp/airgap puts docker.io/library/alpine in
    /// airgap/docker.io/library/alpine).
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub to: String,
    #[command(flatten)]
    pub parallel: ParallelArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub fn run(args: BundleArgs) -> anyhow::Result<()> {
    match args.command {
        BundleCommand::Create(a) => create(a),
        BundleCommand::Load(a) => load(a),
        BundleCommand::Ls(a) => ls(a),
    }
}

fn ls(args: LsArgs) -> anyhow::Result<()> {
    let listing = runtime()?
        .block_on(bundle::list(&args.archive))
        .map_err(fail)?;
    if args.output == OutputFormat::Json {
        return print_json(&listing);
    }
    let width = listing
        .images
        .iter()
        .map(|i| i.reference.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:width$}  {:19}  {:>10}  PLATFORMS",
        "IMAGE", "DIGEST", "SIZE"
    );
    for i in &listing.images {
        let digest = i.digest.to_string();
        let short = digest.get(..19).unwrap_or(&digest);
        let what = match &i.referrer_of {
            Some(of) => format!("(refers to {of})"),
            None => i.platforms.join(","),
        };
        println!(
            "{:width$}  {short:19}  {:>10}  {what}",
            i.reference,
            human(i.size),
        );
    }
    let referrers = listing
        .images
        .iter()
        .filter(|i| i.referrer_of.is_some())
        .count();
    if listing.incremental {
        println!(
            "incremental: {} left out, to be found at the site it was made for",
            human(listing.left_out_bytes)
        );
    }
    println!(
        "{} image(s) and {referrers} signature(s), attestation(s) or SBOM(s), {} blob(s), {} in all; {} shared between images",
        listing.images.len() - referrers,
        listing.blobs,
        human(listing.bytes),
        human(listing.shared_bytes)
    );
    Ok(())
}

fn report(images: &[BundleImage], output: OutputFormat, what: &str) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&images),
        OutputFormat::Text => {
            let bytes: u64 = images.iter().map(|i| i.report.bytes_copied).sum();
            eprintln!(
                "{what}: {} image(s), {} transferred",
                images.len(),
                human(bytes)
            );
            Ok(())
        }
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let text = read_list(&args.list)?;
    let images = bundle::parse_list(&text).map_err(fail)?;
    let compression = match args.compress {
        Some(BundleCompress::Gzip) => TarCompression::Gzip,
        Some(BundleCompress::Zstd) => TarCompression::Zstd,
        Some(BundleCompress::None) => TarCompression::None,
        None => TarCompression::from_name(&args.archive),
    };
    let opts = args.registry.options()?;
    let base = match (&args.since, &args.skip_present_in) {
        (Some(old), _) => Some(Base::Since(old.clone())),
        (None, Some(to)) => {
            let (registry, url, prefix) = parse_registry_prefix(to).map_err(fail)?;
            let mut options = opts.clone();
            if let Some(u) = url {
                options.upstreams.push((registry.clone(), u));
            }
            Some(Base::PresentIn {
                registry,
                options,
                prefix,
            })
        }
        (None, None) => None,
    };
    let copy = CopyOptions {
        selection: args.select.selection(Selection::All)?,
        parallel: args.parallel.count(),
        progress: progress(args.output),
    };
    let text_out = args.output == OutputFormat::Text;
    let on_image = move |i: &BundleImage| {
        if text_out {
            eprintln!(
                "added {} ({}, {} blob(s))",
                i.reference, i.digest, i.report.blobs
            );
        }
    };
    let done = runtime()?
        .block_on(bundle::create(
            &images,
            &args.archive,
            compression,
            !args.no_referrers,
            base.as_ref(),
            &opts,
            &copy,
            &on_image,
        ))
        .map_err(fail)?;
    report(
        &done,
        args.output,
        &format!("wrote {}", args.archive.display()),
    )
}

fn load(args: LoadArgs) -> anyhow::Result<()> {
    let (registry, base, prefix) = parse_registry_prefix(&args.to).map_err(fail)?;
    let opts = args.registry.options()?;
    let copy = CopyOptions {
        selection: Selection::All,
        parallel: args.parallel.count(),
        progress: progress(args.output),
    };
    let text_out = args.output == OutputFormat::Text;
    let on_image = move |i: &BundleImage| {
        if text_out {
            eprintln!(
                "loaded {} -> {} ({})",
                i.reference,
                i.target.as_deref().unwrap_or("?"),
                i.digest
            );
        }
    };
    let done = runtime()?
        .block_on(bundle::load(
            &args.archive,
            &registry,
            base,
            prefix.as_ref(),
            &opts,
            &copy,
            &on_image,
        ))
        .map_err(fail)?;
    report(
        &done,
        args.output,
        &format!(
            "loaded {} into {}",
            args.archive.display(),
            args.to.trim_end_matches('/')
        ),
    )
}
