//! `berth rm REF`: delete a manifest from a registry. A tag is resolved to
//! its digest first, since registries delete manifests by digest (which
//! removes every tag pointing at it).

use berth_reference::ManifestRef;
use berth_transfer::{ImageRef, TransferError};
use clap::Args;

use super::imaging::{fail, print_json, runtime, usage, OutputFormat, RegistryArgs};

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The image: docker://HOST/NAME:TAG or @DIGEST.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

pub fn run(args: RmArgs) -> anyhow::Result<()> {
    let r = match args.reference.parse::<ImageRef>().map_err(fail)? {
        ImageRef::Docker(r) => r,
        other => {
            return Err(usage(format!(
                "{other}: rm deletes from a registry (docker://HOST/NAME:TAG)"
            )))
        }
    };
    let opts = args.registry.options()?;
    let digest = runtime()?.block_on(async {
        let client = opts
            .client(&r.registry, Some(r.repository.as_str()))
            .await
            .map_err(fail)?;
        let what = format!("docker://{r}");
        let digest = match &r.digest {
            Some(d) => d.clone(),
            None => {
                let reference: ManifestRef = r
                    .reference_str()
                    .parse()
                    .map_err(|e| usage(format!("{what}: {e}")))?;
                client
                    .manifest_head(&r.repository, &reference, &[])
                    .await
                    .map_err(|e| fail(TransferError::registry(format!("resolving {what}"), e)))?
                    .digest
            }
        };
        client
            .manifest_delete(&r.repository, &ManifestRef::Digest(digest.clone()))
            .await
            .map_err(|e| fail(TransferError::registry(format!("deleting {what}"), e)))?;
        anyhow::Ok(digest)
    })?;
    match args.output {
        OutputFormat::Json => {
            print_json(&serde_json::json!({"deleted": r.to_string(), "digest": digest}))
        }
        OutputFormat::Text => {
            println!("deleted {r} ({digest})");
            Ok(())
        }
    }
}
