//! `berth rm REF`: delete a tag, or a manifest, from a registry.
//!
//! `NAME:TAG` removes that tag only (OCI 1.1 tag deletion: `DELETE
//! /v2/NAME/manifests/TAG`); the manifest and its other tags stay. A
//! registry that deletes only by digest (Distribution 2.8 refuses a tag)
//! gets a clear error naming `--manifest`, never a silent wider delete.
//! `NAME@DIGEST`, or `--manifest` with a tag, deletes the manifest itself,
//! which removes every tag pointing at it.

use berth_reference::{Digest, ManifestRef};
use berth_transfer::{ImageRef, TransferError};
use berth_upstream::UpstreamError;
use clap::Args;

use super::imaging::{fail, print_json, runtime, usage, Advised, OutputFormat, RegistryArgs};

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The image: docker://HOST/NAME:TAG (removes the tag) or
    /// docker://HOST/NAME@DIGEST (removes the manifest).
    pub reference: String,
    /// With a tag: delete the manifest it points at, and with it every tag
    /// on that manifest, instead of the tag alone.
    #[arg(long)]
    pub manifest: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// What was deleted.
enum Deleted {
    Tag(Digest),
    Manifest(Digest),
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
    let what = format!("docker://{r}");
    let deleted = runtime()?.block_on(async {
        let client = opts
            .client(&r.registry, Some(r.repository.as_str()))
            .await
            .map_err(fail)?;
        if let Some(d) = &r.digest {
            client
                .manifest_delete(&r.repository, &ManifestRef::Digest(d.clone()))
                .await
                .map_err(|e| fail(TransferError::registry(format!("deleting {what}"), e)))?;
            return anyhow::Ok(Deleted::Manifest(d.clone()));
        }
        let tag: ManifestRef = r
            .reference_str()
            .parse()
            .map_err(|e| usage(format!("{what}: {e}")))?;
        // Resolved first in both cases: to say which manifest the tag was
        // on, and so that a missing tag is "not found", whatever the
        // registry answers a DELETE of one.
        let digest = client
            .manifest_head(&r.repository, &tag, &[])
            .await
            .map_err(|e| fail(TransferError::registry(format!("resolving {what}"), e)))?
            .digest;
        if args.manifest {
            client
                .manifest_delete(&r.repository, &ManifestRef::Digest(digest.clone()))
                .await
                .map_err(|e| fail(TransferError::registry(format!("deleting {what}"), e)))?;
            return Ok(Deleted::Manifest(digest));
        }
        match client.manifest_delete(&r.repository, &tag).await {
            Ok(()) => Ok(Deleted::Tag(digest)),
            Err(UpstreamError::Rejected {
                status: status @ (400 | 405),
                code,
                message,
            }) => Err(anyhow::Error::new(Advised {
                message: format!(
                    "{}: the registry does not delete a tag alone (HTTP {status}{}: {message})",
                    what,
                    code.map(|c| format!(" {c}")).unwrap_or_default()
                ),
                hint: format!(
                    "`berth rm --manifest {what}` deletes manifest {digest} and every tag on it"
                ),
                code: 1,
            })),
            Err(e) => Err(fail(TransferError::registry(format!("deleting {what}"), e))),
        }
    })?;
    match (args.output, deleted) {
        (OutputFormat::Json, Deleted::Tag(d)) => print_json(&serde_json::json!({
            "deleted": r.to_string(), "kind": "tag", "digest": d
        })),
        (OutputFormat::Json, Deleted::Manifest(d)) => print_json(&serde_json::json!({
            "deleted": r.to_string(), "kind": "manifest", "digest": d
        })),
        (OutputFormat::Text, Deleted::Tag(d)) => {
            println!("untagged {r} (the manifest {d} and its other tags remain)");
            Ok(())
        }
        (OutputFormat::Text, Deleted::Manifest(d)) => {
            println!("deleted manifest {d} of {r}, and every tag on it");
            Ok(())
        }
    }
}
