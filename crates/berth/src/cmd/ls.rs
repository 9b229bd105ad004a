//! `berth ls REGISTRY` (the catalog) and `berth tags REPO`: one name per
//! line, every page followed.

use berth_transfer::{parse_registry_target, ImageRef};
use clap::Args;

use super::imaging::{fail, print_json, runtime, usage, OutputFormat, RegistryArgs};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The registry: HOST[:PORT], docker://HOST[:PORT] or an http(s):// URL.
    pub registry: String,
    /// Names asked for per page (the registry's default otherwise).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The repository: docker://HOST/NAME or HOST/NAME (Docker's normalisation applies).
    pub repository: String,
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

fn print_names(names: &[String], output: OutputFormat, key: &str) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&serde_json::json!({ key: names })),
        OutputFormat::Text => {
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
    }
}

pub fn run_ls(args: LsArgs) -> anyhow::Result<()> {
    let (registry, base) = parse_registry_target(&args.registry).map_err(fail)?;
    let mut opts = args.registry_args.options()?;
    if let Some(u) = base {
        opts.upstreams.push((registry.clone(), u));
    }
    let names = runtime()?.block_on(async {
        let client = opts.client(&registry, None).await.map_err(fail)?;
        client.catalog(args.page_size).await.map_err(|e| {
            fail(berth_transfer::TransferError::registry(
                format!("listing {registry}"),
                e,
            ))
        })
    })?;
    print_names(&names, args.output, "repositories")
}

pub fn run_tags(args: TagsArgs) -> anyhow::Result<()> {
    let r = match args.repository.parse::<ImageRef>().map_err(fail)? {
        ImageRef::Docker(r) => r,
        other => {
            return Err(usage(format!(
                "{other}: tags lists a registry repository (docker://HOST/NAME)"
            )))
        }
    };
    let opts = args.registry_args.options()?;
    let names = runtime()?.block_on(async {
        let client = opts
            .client(&r.registry, Some(r.repository.as_str()))
            .await
            .map_err(fail)?;
        client
            .tags_list(&r.repository, args.page_size)
            .await
            .map_err(|e| {
                fail(berth_transfer::TransferError::registry(
                    format!("listing tags of {}/{}", r.registry, r.repository),
                    e,
                ))
            })
    })?;
    print_names(&names, args.output, "tags")
}
