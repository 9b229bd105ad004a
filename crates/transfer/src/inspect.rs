//! `berth inspect`: what an image is (digest, media type, platforms,
//! layers with sizes, config highlights), read through any [`Source`].

use std::collections::BTreeMap;

use berth_manifest::Reference;
use berth_reference::Digest;
use bytes::BytesMut;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::copy::choose_platform;
use crate::error::{Result, TransferError};
use crate::platform::{index_entries, Platform};
use crate::source::{ManifestBlob, Source};

const MAX_CONFIG: usize = 16 << 20;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The entries of an index (empty for a single image).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformEntry>,
    /// The image itself, or the selected platform's image of an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageDetails>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformEntry {
    pub platform: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageDetails {
    pub digest: Digest,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub layers: Vec<LayerInfo>,
    /// Config plus layers, compressed as stored.
    pub total_size: u64,
    pub config: ConfigInfo,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigInfo {
    pub digest: Option<Digest>,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    created: Option<String>,
    architecture: Option<String>,
    os: Option<String>,
    variant: Option<String>,
    config: Option<RunConfig>,
}

/// Read a small blob whole (a config), bounded.
pub async fn read_small_blob(source: &dyn Source, desc: &Reference) -> Result<bytes::Bytes> {
    if desc.size > MAX_CONFIG as u64 {
        return Err(TransferError::Unsupported(format!(
            "blob {} is too large to read whole ({} bytes)",
            desc.digest, desc.size
        )));
    }
    let mut read = source.blob(desc, 0).await?;
    let mut buf = BytesMut::new();
    while let Some(c) = read.stream.next().await {
        let c = c?;
        if buf.len() + c.len() > MAX_CONFIG {
            return Err(TransferError::Corrupt(format!(
                "blob {} is too large",
                desc.digest
            )));
        }
        buf.extend_from_slice(&c);
    }
    let bytes = buf.freeze();
    let actual = Digest::of_bytes(desc.digest.algorithm(), &bytes);
    if actual != desc.digest {
        return Err(TransferError::DigestMismatch {
            what: format!("blob {}", desc.digest),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

fn descriptor(v: &Value) -> Option<Reference> {
    Some(Reference {
        digest: v.get("digest")?.as_str()?.parse().ok()?,
        size: v.get("size")?.as_u64()?,
        media_type: v
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// Details of an image manifest.
pub async fn image_details(source: &dyn Source, m: &ManifestBlob) -> Result<ImageDetails> {
    let v: Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| TransferError::Corrupt(format!("manifest {}: {e}", m.digest)))?;
    let layers: Vec<LayerInfo> = v
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|l| LayerInfo {
            digest: l
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            size: l.get("size").and_then(Value::as_u64).unwrap_or(0),
            media_type: l
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
        .collect();
    let config_desc = v.get("config").and_then(descriptor);
    let mut config = ConfigInfo::default();
    if let Some(cd) = &config_desc {
        config.digest = Some(cd.digest.clone());
        config.media_type = cd.media_type.clone();
        let is_image_config = cd.media_type.is_empty()
            || cd.media_type == "application/vnd.oci.image.config.v1+json"
            || cd.media_type == "application/vnd.docker.container.image.v1+json";
        if is_image_config {
            let raw = read_small_blob(source, cd).await?;
            let c: ImageConfig = serde_json::from_slice(&raw).unwrap_or_default();
            let rc = c.config.unwrap_or_default();
            config.created = c.created;
            config.architecture = c.architecture;
            config.os = c.os;
            config.variant = c.variant;
            config.entrypoint = rc.entrypoint;
            config.cmd = rc.cmd;
            config.env = rc.env;
            config.working_dir = rc.working_dir.filter(|w| !w.is_empty());
            config.user = rc.user.filter(|u| !u.is_empty());
            config.labels = rc.labels.unwrap_or_default();
        }
    }
    let total_size =
        layers.iter().map(|l| l.size).sum::<u64>() + config_desc.as_ref().map_or(0, |c| c.size);
    let platform = match (&config.os, &config.architecture) {
        (Some(os), Some(arch)) => Some(
            Platform {
                os: os.clone(),
                architecture: arch.clone(),
                variant: config.variant.clone(),
            }
            .to_string(),
        ),
        _ => None,
    };
    Ok(ImageDetails {
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        platform,
        layers,
        total_size,
        config,
    })
}

/// Inspect what `source` names; for an index, the platform `want` (or the
/// host's) is described in detail when present.
pub async fn inspect(
    source: &dyn Source,
    want: Option<&Platform>,
) -> Result<(InspectReport, ManifestBlob)> {
    let root = source.root().await?;
    let mut report = InspectReport {
        name: source.describe(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
        platforms: Vec::new(),
        image: None,
    };
    let is_index = berth_manifest::media_type::is_index(&root.media_type)
        || serde_json::from_slice::<Value>(&root.bytes).is_ok_and(|v| v.get("manifests").is_some());
    if is_index {
        for e in index_entries(&root.bytes)? {
            report.platforms.push(PlatformEntry {
                platform: e
                    .platform
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
                digest: e.descriptor.digest,
                media_type: e.descriptor.media_type,
                size: e.descriptor.size,
            });
        }
        match choose_platform(&root, want, &source.describe()) {
            Ok(d) => {
                let m = source.manifest(&d).await?;
                report.image = Some(image_details(source, &m).await?);
            }
            Err(e) if want.is_some() => return Err(e),
            Err(_) => {}
        }
    } else {
        report.image = Some(image_details(source, &root).await?);
    }
    Ok((report, root))
}
