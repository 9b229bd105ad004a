//! `docker-archive:FILE[:REF]`, what `docker save` writes: a tar with a
//! `manifest.json` listing, per image, its config file, its repo tags and
//! its layer tars.
//!
//! Such an archive has no manifest bytes, so reading one builds a Docker
//! schema2 manifest on the fly: the config's digest is the hash of the
//! config file, each layer's that of its tar (hashed once when the archive
//! is opened), and the manifest is serialised by berth. Opened for a copy,
//! plain-tar layers are gzip-compressed first (see `compress`), so the
//! manifest names the compressed blobs. Its digest is
//! therefore *computed*, and another tool reading the same archive may
//! arrive at a different one; copies made from it keep berth's bytes.
//! Writing docker-archive (one image, for `docker load`) keeps the config
//! and layers; the manifest is not stored, as the format has no place for
//! it (write oci-archive: to keep it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::{Digest, ImageReference};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::archive::{write_tar, TarIndex, TarItem};
use crate::compress::LayerCompression;
use crate::compress::LayerFormat;
use crate::error::{Result, TransferError};
use crate::layout::{LayoutDest, LayoutFiles};
use crate::source::{BlobRead, Destination, ManifestBlob, Source};
use crate::tar_codec::TarCompression;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

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
    /// Where each blob's bytes are.
    blobs: HashMap<Digest, BlobAt>,
    /// Holds the compressed layers while the source lives.
    _stage: Option<tempfile::TempDir>,
}

enum BlobAt {
    /// A member of the tar, by path.
    Member(String),
    /// A compressed copy of a layer, and its size.
    Staged(PathBuf, u64),
}

fn same_image(a: &str, b: &str) -> bool {
    match (a.parse::<ImageReference>(), b.parse::<ImageReference>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl DockerArchiveSource {
    /// The archive as it is (inspecting it shows its own layers).
    pub async fn open(file: &Path, reference: Option<String>) -> Result<Self> {
        Self::open_with(file, reference, LayerCompression::None).await
    }

    /// The archive with its plain-tar layers treated as `compression` says.
    pub async fn open_with(
        file: &Path,
        reference: Option<String>,
        compression: LayerCompression,
    ) -> Result<Self> {
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
        let mut blobs = HashMap::new();
        blobs.insert(config_digest.clone(), BlobAt::Member(entry.config.clone()));
        let stage = match compression {
            LayerCompression::None => None,
            // In the temporary directory, not beside the archive: that may
            // be read-only media carried into an air gap.
            LayerCompression::Gzip | LayerCompression::Zstd => Some(
                tempfile::Builder::new()
                    .prefix("berth-gzip-")
                    .tempdir()
                    .map_err(|e| TransferError::io(std::env::temp_dir(), e))?,
            ),
        };
        let mut layers = Vec::new();
        let mut formats = Vec::new();
        for (i, l) in entry.layers.iter().enumerate() {
            let (archive, offset, size) = index
                .locate(l)
                .ok_or_else(|| TransferError::Corrupt(format!("{name}: layer {l} is missing")))?;
            let archive = archive.to_path_buf();
            let staged = stage
                .as_ref()
                .map_or_else(PathBuf::new, |d| d.path().join(format!("{i}.layer")));
            let layer = tokio::task::spawn_blocking(move || {
                crate::compress::layer(&archive, offset, size, compression, &staged)
            })
            .await
            .map_err(|e| TransferError::Invalid(format!("layer task: {e}")))??;
            let at = match layer.staged {
                Some(p) => BlobAt::Staged(p, layer.size),
                None => BlobAt::Member(l.clone()),
            };
            blobs.insert(layer.digest.clone(), at);
            formats.push(layer.format);
            layers.push(Desc {
                media_type: "",
                size: layer.size,
                digest: layer.digest.to_string(),
            });
        }
        // Docker's schema2 has no zstd layer: with one, the image is OCI.
        let oci = formats.contains(&LayerFormat::Zstd);
        for (d, f) in layers.iter_mut().zip(&formats) {
            d.media_type = match (oci, f) {
                (false, LayerFormat::Tar) => DOCKER_LAYER_TAR,
                (false, _) => DOCKER_LAYER_GZIP,
                (true, LayerFormat::Tar) => OCI_LAYER_TAR,
                (true, LayerFormat::Gzip) => OCI_LAYER_GZIP,
                (true, LayerFormat::Zstd) => OCI_LAYER_ZSTD,
            };
        }
        let (manifest_type, config_type) = if oci {
            (OCI_MANIFEST, OCI_CONFIG)
        } else {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        };
        let m = Schema2 {
            schema_version: 2,
            media_type: manifest_type,
            config: Desc {
                media_type: config_type,
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
            media_type: manifest_type.to_string(),
        };
        Ok(DockerArchiveSource {
            index,
            name: match reference {
                Some(r) => format!("{name}:{r}"),
                None => name,
            },
            manifest,
            blobs,
            _stage: stage,
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
        let at = self.blobs.get(&desc.digest).ok_or_else(|| {
            TransferError::NotFound(format!("{}: no blob {}", self.name, desc.digest))
        })?;
        let stream = match at {
            BlobAt::Member(path) => {
                let (_, stream) = self.index.open(path, offset).await?.ok_or_else(|| {
                    TransferError::Corrupt(format!("{}: {path} is missing", self.name))
                })?;
                stream
            }
            BlobAt::Staged(path, size) => {
                use tokio::io::AsyncSeekExt;
                let io = |e| TransferError::io(path, e);
                let offset = offset.min(*size);
                let mut f = tokio::fs::File::open(path).await.map_err(io)?;
                f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
                crate::layout::file_stream(f, size - offset, path.clone())
            }
        };
        Ok(BlobRead { offset, stream })
    }
}

/// Writing one image as `docker load` reads it: `manifest.json`, the
/// config as `<hex>.json` and each layer as `<hex>.tar`, as they are (docker
/// load takes compressed layers too). Blobs are staged beside the file and
/// tarred on commit. An index cannot be written (pick a platform).
pub(crate) struct DockerArchiveDest {
    file: PathBuf,
    reference: Option<String>,
    _stage: tempfile::TempDir,
    layout: LayoutDest,
    root: std::sync::Mutex<Option<ManifestBlob>>,
}

impl DockerArchiveDest {
    pub(crate) async fn create(file: &Path, reference: Option<String>) -> Result<Self> {
        let stage = crate::archive::stage_beside(file, ".berth-stage-")?;
        let layout = LayoutDest::create(stage.path(), None).await?;
        Ok(DockerArchiveDest {
            file: file.to_path_buf(),
            reference,
            _stage: stage,
            layout,
            root: std::sync::Mutex::new(None),
        })
    }
}

fn single_image_only() -> TransferError {
    TransferError::Unsupported(
        "docker-archive holds single images: pick one with --platform, or write oci-archive: to keep the whole index"
            .into(),
    )
}

#[async_trait]
impl Destination for DockerArchiveDest {
    fn describe(&self) -> String {
        match &self.reference {
            Some(r) => format!("docker-archive:{}:{r}", self.file.display()),
            None => format!("docker-archive:{}", self.file.display()),
        }
    }

    async fn has_blob(&self, desc: &Reference) -> Result<bool> {
        self.layout.has_blob(desc).await
    }

    async fn put_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        self.layout.put_blob(desc, source, progress).await
    }

    async fn put_manifest(&self, m: &ManifestBlob, root: bool) -> Result<()> {
        if !root || berth_manifest::media_type::is_index(&m.media_type) {
            return Err(single_image_only());
        }
        if let Ok(mut r) = self.root.lock() {
            *r = Some(m.clone());
        }
        Ok(())
    }

    async fn commit(&self) -> Result<()> {
        let root = self
            .root
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .ok_or_else(|| TransferError::Invalid("no image was written".into()))?;
        let v: serde_json::Value = serde_json::from_slice(&root.bytes)
            .map_err(|e| TransferError::Corrupt(format!("manifest {}: {e}", root.digest)))?;
        let digest_of = |d: &serde_json::Value| -> Result<Digest> {
            d.get("digest")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    TransferError::Corrupt(format!("manifest {}: bad descriptor", root.digest))
                })
        };
        let config = digest_of(v.get("config").ok_or_else(single_image_only)?)?;
        let mut items = Vec::new();
        let blob = |d: &Digest| self.layout.dir().join(crate::layout::blob_path(d));
        let config_name = format!("{}.json", config.hex());
        items.push((config_name.clone(), TarItem::File(blob(&config))));
        let mut layer_names = Vec::new();
        for l in v
            .get("layers")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            let d = digest_of(l)?;
            let name = format!("{}.tar", d.hex());
            if !layer_names.contains(&name) {
                items.push((name.clone(), TarItem::File(blob(&d))));
            }
            layer_names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": self.reference.iter().collect::<Vec<_>>(),
            "Layers": layer_names,
        }]);
        items.push((
            "manifest.json".to_string(),
            TarItem::Bytes(
                serde_json::to_vec(&manifest).map_err(|e| TransferError::Invalid(e.to_string()))?,
            ),
        ));
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_tar(&items, &file, TarCompression::None))
            .await
            .map_err(|e| TransferError::Invalid(format!("tar task: {e}")))?
    }
}
