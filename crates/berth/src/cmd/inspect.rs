//! `berth inspect REF`: digest, media type, platforms, layers with sizes,
//! and config highlights; `--raw` prints the manifest's exact bytes and
//! `--config` the image config.

use std::io::Write;

use berth_transfer::inspect::{image_details, inspect, read_small_blob, InspectReport};
use berth_transfer::{open_source, ImageRef, Platform};
use clap::Args;

use super::imaging::{fail, human, print_json, runtime, OutputFormat, RegistryArgs};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: docker://REF (or a bare REF), oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE.
    pub reference: String,
    /// For an index: the platform to describe (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print the manifest (or index) exactly as stored.
    #[arg(long, conflicts_with = "config")]
    pub raw: bool,
    /// Print the image's config blob.
    #[arg(long)]
    pub config: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let r: ImageRef = args.reference.parse().map_err(fail)?;
    let platform: Option<Platform> = args
        .platform
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(fail)?;
    let opts = args.registry.options()?;
    let rt = runtime()?;
    rt.block_on(async {
        let src = open_source(&r, &opts).await.map_err(fail)?;
        if args.raw {
            let root = src.root().await.map_err(fail)?;
            std::io::stdout().write_all(&root.bytes)?;
            return Ok(());
        }
        let (report, _root) = inspect(src.as_ref(), platform.as_ref())
            .await
            .map_err(fail)?;
        if args.config {
            let image = report.image.as_ref().ok_or_else(|| {
                super::imaging::usage("this index has no image for this platform; pass --platform")
            })?;
            let m = src
                .manifest(&berth_manifest::Reference {
                    digest: image.digest.clone(),
                    size: 0,
                    media_type: image.media_type.clone(),
                })
                .await;
            let m = match m {
                Ok(m) => m,
                Err(_) => src.root().await.map_err(fail)?,
            };
            let details = image_details(src.as_ref(), &m).await.map_err(fail)?;
            let digest = details
                .config
                .digest
                .clone()
                .ok_or_else(|| super::imaging::usage("the manifest has no config"))?;
            let desc = berth_manifest::Reference {
                digest,
                size: details.total_size - details.layers.iter().map(|l| l.size).sum::<u64>(),
                media_type: details.config.media_type.clone(),
            };
            let bytes = read_small_blob(src.as_ref(), &desc).await.map_err(fail)?;
            std::io::stdout().write_all(&bytes)?;
            return Ok(());
        }
        match args.output {
            OutputFormat::Json => print_json(&report),
            OutputFormat::Text => {
                print_text(&report);
                Ok(())
            }
        }
    })
}

fn print_text(r: &InspectReport) {
    println!("Name:       {}", r.name);
    println!("Digest:     {}", r.digest);
    println!("MediaType:  {}", r.media_type);
    if !r.platforms.is_empty() {
        println!("Platforms:");
        for p in &r.platforms {
            println!("  {:<20} {}  {}", p.platform, p.digest, p.media_type);
        }
    }
    if let Some(i) = &r.image {
        if !r.platforms.is_empty() {
            println!("Image:      {}", i.digest);
        }
        if let Some(p) = &i.platform {
            println!("Platform:   {p}");
        }
        if let Some(c) = &i.config.created {
            println!("Created:    {c}");
        }
        if let Some(e) = &i.config.entrypoint {
            println!("Entrypoint: {}", e.join(" "));
        }
        if let Some(c) = &i.config.cmd {
            println!("Cmd:        {}", c.join(" "));
        }
        if !i.config.labels.is_empty() {
            println!("Labels:");
            for (k, v) in &i.config.labels {
                println!("  {k}={v}");
            }
        }
        println!(
            "Layers:     {} ({} total)",
            i.layers.len(),
            human(i.total_size)
        );
        for l in &i.layers {
            println!("  {}  {:>10}  {}", l.digest, human(l.size), l.media_type);
        }
    }
}
