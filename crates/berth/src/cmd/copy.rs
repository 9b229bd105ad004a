//! `berth copy SRC DST`: one image or a whole index between any two
//! transports, with per-side registry flags as skopeo has them.

use std::path::PathBuf;

use berth_reference::ImageReference;
use berth_transfer::{
    copy, open_destination, open_source_with, CopyOptions, ImageRef, LayerCompression, Selection,
};
use clap::Args;

use super::imaging::{
    fail, human, print_json, progress, runtime, OutputFormat, ParallelArgs, RegistryArgs,
    SelectArgs,
};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: docker://REF (or a bare REF), oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF].
    pub source: String,
    /// Destination: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:REF] (what `docker load` reads).
    pub destination: String,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Credentials for the source only.
    #[arg(long, value_name = "USER:PASS")]
    pub src_creds: Option<String>,
    /// Credentials for the destination only.
    #[arg(long, value_name = "USER:PASS")]
    pub dest_creds: Option<String>,
    /// TLS verification for the source only.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub src_tls_verify: Option<bool>,
    /// TLS verification for the destination only.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub dest_tls_verify: Option<bool>,
    /// CA directory for the source only.
    #[arg(long, value_name = "DIR")]
    pub src_cert_dir: Option<PathBuf>,
    /// CA directory for the destination only.
    #[arg(long, value_name = "DIR")]
    pub dest_cert_dir: Option<PathBuf>,
    /// Layers that are plain tars (a `docker save` archive's): gzip them
    /// before they are sent, as skopeo does, zstd them (the image is then
    /// OCI), or keep them as they are. Compressed layers are never
    /// recompressed.
    #[arg(long, value_enum, default_value_t = Compress::Gzip)]
    pub compress: Compress,
    /// Leave out what refers to the image: signatures, attestations and
    /// SBOMs (OCI referrers, cosign's sha256-<hex>.sig/.att/.sbom tags),
    /// which are copied by default from a registry into a registry or an
    /// oci: layout.
    #[arg(long)]
    pub no_referrers: bool,
    /// text or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    Gzip,
    /// zstd: the image becomes OCI (Docker's schema2 has no zstd layers).
    Zstd,
    None,
}

fn side(
    base: &RegistryArgs,
    creds: &Option<String>,
    tls: Option<bool>,
    certs: &Option<PathBuf>,
) -> RegistryArgs {
    let mut r = base.clone();
    if creds.is_some() {
        r.creds = creds.clone();
    }
    if tls.is_some() {
        r.tls_verify = tls;
    }
    if certs.is_some() {
        r.cert_dir = certs.clone();
    }
    r
}

pub fn run(args: CopyArgs) -> anyhow::Result<()> {
    let src: ImageRef = args.source.parse().map_err(fail)?;
    let dst: ImageRef = args.destination.parse().map_err(fail)?;
    let src_opts = side(
        &args.registry,
        &args.src_creds,
        args.src_tls_verify,
        &args.src_cert_dir,
    )
    .options()?;
    let dst_opts = side(
        &args.registry,
        &args.dest_creds,
        args.dest_tls_verify,
        &args.dest_cert_dir,
    )
    .options()?;
    let opts = CopyOptions {
        selection: args.select.selection(Selection::Host)?,
        parallel: args.parallel.count(),
        progress: progress(args.output),
    };
    let rt = runtime()?;
    let report = rt.block_on(async {
        let compression = match args.compress {
            Compress::Gzip => LayerCompression::Gzip,
            Compress::Zstd => LayerCompression::Zstd,
            Compress::None => LayerCompression::None,
        };
        let s = open_source_with(&src, &src_opts, compression).await?;
        let d = open_destination(&dst, &dst_opts).await?;
        let report = copy(s.as_ref(), d.as_ref(), &opts).await?;
        // Signatures, attestations and SBOMs go along, registry to registry.
        let mut referrers = Vec::new();
        // Signatures, attestations and SBOMs go along, from a registry into
        // a registry (under the same tag or digest) or an OCI layout (an
        // index entry each: cosign's under its tag, OCI referrers by digest
        // alone, as image-layout 1.1 keeps them).
        if let (false, Some(reg)) = (args.no_referrers, s.as_registry()) {
            let mut all = opts.clone();
            all.selection = Selection::All;
            let layout_or_registry = matches!(dst, ImageRef::Docker(_) | ImageRef::Oci { .. });
            for r in reg
                .referrer_refs(&report.digest)
                .await?
                .into_iter()
                .filter(|_| layout_or_registry)
            {
                let target = match &dst {
                    ImageRef::Docker(to) => ImageRef::Docker(ImageReference {
                        tag: r.tag.clone(),
                        digest: r.digest.clone(),
                        ..to.clone()
                    }),
                    ImageRef::Oci { dir, .. } => ImageRef::Oci {
                        dir: dir.clone(),
                        tag: r.tag.as_ref().map(|t| t.to_string()),
                    },
                    _ => continue,
                };
                let d = open_destination(&target, &dst_opts).await?;
                copy(&reg.sibling(r.clone()), d.as_ref(), &all).await?;
                referrers.push(d.describe());
            }
        }
        Ok::<_, berth_transfer::TransferError>((report, referrers))
    });
    let (report, referrers) = report.map_err(fail)?;
    match args.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Text => {
            eprintln!(
                "copied {} -> {}: {} manifest(s), {} blob(s) ({} copied, {} already there, {} mounted), {} transferred",
                report.source,
                report.destination,
                report.manifests,
                report.blobs,
                report.blobs_copied,
                report.blobs_skipped,
                report.blobs_mounted,
                human(report.bytes_copied)
            );
            for r in &referrers {
                eprintln!("copied with it: {r}");
            }
            if let Some(index) = &report.from_index {
                eprintln!(
                    "note: one platform out of the multi-platform index {index}; --all copies every platform"
                );
            }
            println!("{}", report.digest);
        }
    }
    Ok(())
}
