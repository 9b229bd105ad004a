//! `docker-archive:FILE[:REF]`, what `docker save` writes: a tar with a
//! `manifest.json` listing, per image, its config file, its repo tags and
//! its layer tars.
//!
//! Such an archive has no manifest bytes, so reading one builds a Docker
//! schema2 manifest on the fly: the config's digest is the hash of the
//! config file, each layer's that of its tar (hashed once when the archive
//! is opened), and the manifest is serialised by berth. Its digest is
//! therefore *computed*, and another tool reading the same archive may
//! arrive at a different one; copies made from it keep berth's bytes.
//! Writing docker-archive is not supported (use oci-archive:, which keeps
//! the image's real manifest).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::{Digest, ImageReference};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::archive::TarIndex;
use crate::error::{Result, TransferError};
use crate::layout::LayoutFiles;
use crate::source::{BlobRead, Destination, ManifestBlob, Source};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: &'static str,
    size: u64,
    digest: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2 {
    schema_version: u32,
    media_type: &'static str,
    config: Desc,
    layers: Vec<Desc>,
}

/// One image of a `docker save` archive, read as a Docker schema2 image.
pub struct DockerArchiveSource {
    index: TarIndex,
    name: String,
    manifest: ManifestBlob,
    /// Blob digest → path inside the tar.
    paths: HashMap<Digest, String>,
}

fn same_image(a: &str, b: &str) -> bool {
    match (a.parse::<ImageReference>(), b.parse::<ImageReference>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl DockerArchiveSource {
    pub async fn open(file: &Path, reference: Option<String>) -> Result<Self> {
        let index = TarIndex::open(file).await?;
        let name = format!("docker-archive:{}", file.display());
        let raw = index.read_small("manifest.json").await?.ok_or_else(|| {
            TransferError::Corrupt(format!(
                "{name}: no manifest.json (is it a docker save archive?)"
            ))
        })?;
        let entries: Vec<SaveEntry> = serde_json::from_slice(&raw)
            .map_err(|e| TransferError::Corrupt(format!("{name}/manifest.json: {e}")))?;
        let entry = match &reference {
            Some(r) if r.starts_with('@') => {
                let n: usize = r[1..]
                    .parse()
                    .map_err(|_| TransferError::Invalid(format!("{name}: {r:?} is not @INDEX")))?;
                entries.get(n).ok_or_else(|| {
                    TransferError::NotFound(format!(
                        "{name}: no image {r} ({} images)",
                        entries.len()
                    ))
                })?
            }
            Some(r) => entries
                .iter()
                .find(|e| e.repo_tags.iter().flatten().any(|t| same_image(t, r)))
                .ok_or_else(|| TransferError::NotFound(format!("{name}: no image tagged {r:?}")))?,
            None => match entries.as_slice() {
                [one] => one,
                _ => {
                    return Err(TransferError::Invalid(format!(
                        "{name} holds {} images; name one as {name}:REPO:TAG or {name}:@INDEX",
                        entries.len()
                    )))
                }
            },
        };
        let config = index.read_small(&entry.config).await?.ok_or_else(|| {
            TransferError::Corrupt(format!("{name}: config {} is missing", entry.config))
        })?;
        let config_digest = Digest::sha256_of(&config);
        let mut paths = HashMap::new();
        paths.insert(config_digest.clone(), entry.config.clone());
        let mut layers = Vec::new();
        for l in &entry.layers {
            let (size, mut stream) = index
                .open(l, 0)
                .await?
                .ok_or_else(|| TransferError::Corrupt(format!("{name}: layer {l} is missing")))?;
            let mut hasher = berth_reference::Algorithm::Sha256.hasher();
            let mut first = None;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if first.is_none() && chunk.len() >= 2 {
                    first = Some([chunk[0], chunk[1]]);
                }
                hasher.update(&chunk);
            }
            let digest = hasher.finish();
            let media_type = if first == Some([0x1f, 0x8b]) {
                DOCKER_LAYER_GZIP
            } else {
                DOCKER_LAYER_TAR
            };
            paths.insert(digest.clone(), l.clone());
            layers.push(Desc {
                media_type,
                size,
                digest: digest.to_string(),
            });
        }
        let m = Schema2 {
            schema_version: 2,
            media_type: DOCKER_MANIFEST,
            config: Desc {
                media_type: DOCKER_CONFIG,
                size: config.len() as u64,
                digest: config_digest.to_string(),
            },
            layers,
        };
        let bytes = Bytes::from(
            serde_json::to_vec_pretty(&m).map_err(|e| TransferError::Invalid(e.to_string()))?,
        );
        let manifest = ManifestBlob {
            digest: Digest::sha256_of(&bytes),
            bytes,
            media_type: DOCKER_MANIFEST.to_string(),
        };
        Ok(DockerArchiveSource {
            index,
            name: match reference {
                Some(r) => format!("{name}:{r}"),
                None => name,
            },
            manifest,
            paths,
        })
    }
}

#[async_trait]
impl Source for DockerArchiveSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn root(&self) -> Result<ManifestBlob> {
        Ok(self.manifest.clone())
    }

    async fn manifest(&self, desc: &Reference) -> Result<ManifestBlob> {
        if desc.digest == self.manifest.digest {
            return Ok(self.manifest.clone());
        }
        Err(TransferError::NotFound(format!(
            "{}: no manifest {}",
            self.name, desc.digest
        )))
    }

    async fn blob(&self, desc: &Reference, offset: u64) -> Result<BlobRead> {
        let path = self.paths.get(&desc.digest).ok_or_else(|| {
            TransferError::NotFound(format!("{}: no blob {}", self.name, desc.digest))
        })?;
        let (_, stream) =
            self.index.open(path, offset).await?.ok_or_else(|| {
                TransferError::Corrupt(format!("{}: {path} is missing", self.name))
            })?;
        Ok(BlobRead { offset, stream })
    }
}

/// Writing docker-archive: refused with advice.
pub(crate) struct DockerArchiveDest;

impl DockerArchiveDest {
    pub(crate) async fn create(file: &Path, _reference: Option<String>) -> Result<Self> {
        let f: PathBuf = file.to_path_buf();
        Err(TransferError::Unsupported(format!(
            "writing docker-archive:{} is not supported; write oci-archive:{} instead (docker load does not keep manifest digests anyway)",
            f.display(),
            f.display()
        )))
    }
}

#[async_trait]
impl Destination for DockerArchiveDest {
    fn describe(&self) -> String {
        "docker-archive".into()
    }
    async fn has_blob(&self, _desc: &Reference) -> Result<bool> {
        Ok(false)
    }
    async fn put_blob(
        &self,
        _desc: &Reference,
        _source: &dyn Source,
        _progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        Err(TransferError::Unsupported("docker-archive output".into()))
    }
    async fn put_manifest(&self, _m: &ManifestBlob, _root: bool) -> Result<()> {
        Err(TransferError::Unsupported("docker-archive output".into()))
    }
}
