//! OCI image layouts (`oci:DIR[:TAG]`): reading any layout through the
//! [`LayoutFiles`] abstraction (a directory here, a tar file in
//! `archive.rs`), and writing a directory.
//!
//! Writing keeps blobs content-addressed and never half-written: bytes go to
//! `DIR/.berth-ingest/` and are renamed into `blobs/` only once their digest
//! verified. A partial ingest file survives an interrupted copy, and the
//! next attempt resumes from its length when the source can seek (a
//! registry's `Range` GET, a file). The tag is the
//! `org.opencontainers.image.ref.name` annotation in `index.json`, as skopeo
//! and umoci write it.
//!
//! Manifests are stored as they are, Docker schema2 ones included (with
//! their Docker media type in `index.json`), so digests never change. skopeo
//! converts those to OCI when it writes a layout, and reads only OCI-typed
//! entries back; berth reads both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::Digest;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::archive::TarIndex;
use crate::error::{Result, TransferError};
use crate::source::{BlobRead, ByteStream, Destination, ManifestBlob, Source};

/// The annotation that names an image in a layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MAX_SMALL: usize = 16 << 20;
/// Attempts at one blob when the source fails in a way that may pass.
const BLOB_ATTEMPTS: usize = 3;

pub(crate) fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// Read access to a layout's files, wherever they are kept.
#[async_trait]
pub(crate) trait LayoutFiles: Send + Sync {
    /// A small file's bytes (`None` when absent).
    async fn read_small(&self, path: &str) -> Result<Option<Bytes>>;
    /// A file's size and a stream of it from `offset` (`None` when absent).
    async fn open(&self, path: &str, offset: u64) -> Result<Option<(u64, ByteStream)>>;
}

pub(crate) struct DirFiles(pub PathBuf);

pub(crate) fn file_stream(file: tokio::fs::File, len: u64, path: PathBuf) -> ByteStream {
    let reader = file.take(len);
    Box::pin(
        tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10)
            .map(move |r| r.map_err(|e| TransferError::io(&path, e))),
    )
}

#[async_trait]
impl LayoutFiles for DirFiles {
    async fn read_small(&self, path: &str) -> Result<Option<Bytes>> {
        let p = self.0.join(path);
        match tokio::fs::metadata(&p).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TransferError::io(&p, e)),
            Ok(m) if m.len() > MAX_SMALL as u64 => {
                return Err(TransferError::Corrupt(format!(
                    "{} is larger than {MAX_SMALL} bytes",
                    p.display()
                )))
            }
            Ok(_) => {}
        }
        tokio::fs::read(&p)
            .await
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| TransferError::io(&p, e))
    }

    async fn open(&self, path: &str, offset: u64) -> Result<Option<(u64, ByteStream)>> {
        let p = self.0.join(path);
        let mut f = match tokio::fs::File::open(&p).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TransferError::io(&p, e)),
            Ok(f) => f,
        };
        let len = f
            .metadata()
            .await
            .map_err(|e| TransferError::io(&p, e))?
            .len();
        f.seek(std::io::SeekFrom::Start(offset.min(len)))
            .await
            .map_err(|e| TransferError::io(&p, e))?;
        Ok(Some((len, file_stream(f, len - offset.min(len), p))))
    }
}

/// One entry of a layout's `index.json`.
#[derive(Debug, Clone)]
pub struct LayoutEntry {
    pub descriptor: Reference,
    pub annotations: BTreeMap<String, String>,
}

impl LayoutEntry {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

pub(crate) fn parse_index_json(bytes: &[u8], what: &str) -> Result<Vec<LayoutEntry>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Desc {
        #[serde(default)]
        media_type: String,
        digest: String,
        size: u64,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Desc>,
    }
    let index: Index = serde_json::from_slice(bytes)
        .map_err(|e| TransferError::Corrupt(format!("{what}/index.json: {e}")))?;
    index
        .manifests
        .into_iter()
        .map(|d| {
            Ok(LayoutEntry {
                descriptor: Reference {
                    digest: d
                        .digest
                        .parse()
                        .map_err(|e| TransferError::Corrupt(format!("{what}/index.json: {e}")))?,
                    size: d.size,
                    media_type: d.media_type,
                },
                annotations: d.annotations,
            })
        })
        .collect()
}

/// The media type of a manifest whose descriptor did not say.
pub(crate) fn sniff_media_type(bytes: &[u8]) -> String {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    if let Some(m) = v.get("mediaType").and_then(Value::as_str) {
        return m.to_string();
    }
    if v.get("manifests").is_some() {
        OCI_INDEX.to_string()
    } else {
        OCI_MANIFEST.to_string()
    }
}

/// An image in an OCI layout (a directory or an `oci-archive:` tar).
pub struct LayoutSource {
    files: Box<dyn LayoutFiles>,
    name: String,
    tag: Option<String>,
}

impl LayoutSource {
    pub async fn open_dir(dir: &Path, tag: Option<String>) -> Result<Self> {
        if !dir.join("index.json").is_file() {
            return Err(TransferError::NotFound(format!(
                "{} is not an OCI layout (no index.json)",
                dir.display()
            )));
        }
        Ok(LayoutSource {
            files: Box::new(DirFiles(dir.to_path_buf())),
            name: format!("oci:{}", dir.display()),
            tag,
        })
    }

    pub async fn open_archive(file: &Path, tag: Option<String>) -> Result<Self> {
        let index = TarIndex::open(file).await?;
        Ok(LayoutSource {
            files: Box::new(index),
            name: format!("oci-archive:{}", file.display()),
            tag,
        })
    }

    pub(crate) fn from_tar(index: TarIndex, name: String, tag: Option<String>) -> Self {
        LayoutSource {
            files: Box::new(index),
            name,
            tag,
        }
    }

    /// The entries of `index.json`.
    pub async fn entries(&self) -> Result<Vec<LayoutEntry>> {
        let bytes = self
            .files
            .read_small("index.json")
            .await?
            .ok_or_else(|| TransferError::NotFound(format!("{}: no index.json", self.name)))?;
        parse_index_json(&bytes, &self.name)
    }

    async fn read_manifest(&self, desc: &Reference) -> Result<ManifestBlob> {
        let what = format!("manifest {} in {}", desc.digest, self.name);
        let bytes = self
            .files
            .read_small(&blob_path(&desc.digest))
            .await?
            .ok_or_else(|| TransferError::NotFound(format!("{what} is missing")))?;
        let media_type = if desc.media_type.is_empty() {
            sniff_media_type(&bytes)
        } else {
            desc.media_type.clone()
        };
        ManifestBlob::verified(bytes, media_type, &desc.digest, &what)
    }
}

#[async_trait]
impl Source for LayoutSource {
    fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => self.name.clone(),
        }
    }

    async fn root(&self) -> Result<ManifestBlob> {
        let entries = self.entries().await?;
        let chosen = match &self.tag {
            Some(tag) => entries
                .iter()
                .rev()
                .find(|e| e.ref_name() == Some(tag.as_str()))
                .ok_or_else(|| {
                    let names: Vec<&str> = entries.iter().filter_map(|e| e.ref_name()).collect();
                    TransferError::NotFound(format!(
                        "{}: no image named {tag:?} (it has: {})",
                        self.name,
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                })?,
            None => match entries.as_slice() {
                [one] => one,
                [] => {
                    return Err(TransferError::NotFound(format!(
                        "{}: the layout holds no image",
                        self.name
                    )))
                }
                _ => {
                    return Err(TransferError::Invalid(format!(
                        "{} holds {} images; name one as {}:NAME",
                        self.name,
                        entries.len(),
                        self.name
                    )))
                }
            },
        };
        self.read_manifest(&chosen.descriptor).await
    }

    async fn manifest(&self, desc: &Reference) -> Result<ManifestBlob> {
        self.read_manifest(desc).await
    }

    async fn blob(&self, desc: &Reference, offset: u64) -> Result<BlobRead> {
        let (_, stream) = self
            .files
            .open(&blob_path(&desc.digest), offset)
            .await?
            .ok_or_else(|| {
                TransferError::NotFound(format!(
                    "blob {} is missing from {}",
                    desc.digest, self.name
                ))
            })?;
        Ok(BlobRead { offset, stream })
    }
}

/// Writing images into an OCI layout directory.
pub struct LayoutDest {
    dir: PathBuf,
    tag: Option<String>,
    annotations: BTreeMap<String, String>,
    index_lock: tokio::sync::Mutex<()>,
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| TransferError::io(&tmp, e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| TransferError::io(path, e))
}

impl LayoutDest {
    /// Open (creating if needed) the layout at `dir`; the image written
    /// will be named `tag` in `index.json`.
    pub async fn create(dir: &Path, tag: Option<String>) -> Result<Self> {
        tokio::fs::create_dir_all(dir.join("blobs"))
            .await
            .map_err(|e| TransferError::io(dir, e))?;
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).await?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let v = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
            write_atomic(&index, v.to_string().as_bytes()).await?;
        }
        Ok(LayoutDest {
            dir: dir.to_path_buf(),
            tag,
            annotations: BTreeMap::new(),
            index_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Extra annotations for the image's `index.json` entry.
    pub fn with_annotations(mut self, a: BTreeMap<String, String>) -> Self {
        self.annotations = a;
        self
    }

    /// The same layout, for another image named `tag`.
    pub fn for_image(&self, tag: Option<String>, annotations: BTreeMap<String, String>) -> Self {
        LayoutDest {
            dir: self.dir.clone(),
            tag,
            annotations,
            index_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, d: &Digest) -> PathBuf {
        self.dir.join(blob_path(d))
    }

    fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join(".berth-ingest")
            .join(format!("{}-{}", d.algorithm().as_str(), d.hex()))
    }

    async fn publish(&self, from: &Path, d: &Digest) -> Result<()> {
        let to = self.path_of(d);
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| TransferError::io(parent, e))?;
        }
        tokio::fs::rename(from, &to)
            .await
            .map_err(|e| TransferError::io(&to, e))
    }

    /// One attempt at a blob, resuming a partial ingest file if any.
    async fn fetch_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let ingest = self.ingest_path(&desc.digest);
        if let Some(parent) = ingest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| TransferError::io(parent, e))?;
        }
        let mut hasher = desc.digest.algorithm().hasher();
        let mut have = 0u64;
        if let Ok(m) = tokio::fs::metadata(&ingest).await {
            if m.len() > 0 && m.len() < desc.size {
                let mut f = tokio::fs::File::open(&ingest)
                    .await
                    .map_err(|e| TransferError::io(&ingest, e))?;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(|e| TransferError::io(&ingest, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    have += n as u64;
                }
            }
        }
        let read = source.blob(desc, have).await?;
        if read.offset != have {
            hasher = desc.digest.algorithm().hasher();
            have = 0;
        } else if have > 0 {
            tracing::info!(digest = %desc.digest, offset = have, "resuming an interrupted blob");
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(have > 0)
            .truncate(have == 0)
            .open(&ingest)
            .await
            .map_err(|e| TransferError::io(&ingest, e))?;
        let mut stream = read.stream;
        let mut n = have;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            if n > desc.size {
                drop(file);
                let _ = tokio::fs::remove_file(&ingest).await;
                return Err(TransferError::Corrupt(format!(
                    "blob {} is longer than its {} bytes",
                    desc.digest, desc.size
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| TransferError::io(&ingest, e))?;
            progress(chunk.len() as u64);
        }
        file.flush()
            .await
            .map_err(|e| TransferError::io(&ingest, e))?;
        file.sync_all()
            .await
            .map_err(|e| TransferError::io(&ingest, e))?;
        drop(file);
        let actual = hasher.finish();
        if n != desc.size || actual != desc.digest {
            let _ = tokio::fs::remove_file(&ingest).await;
            return Err(TransferError::DigestMismatch {
                what: format!("blob {} ({n} of {} bytes)", desc.digest, desc.size),
                expected: desc.digest.clone(),
                actual,
            });
        }
        self.publish(&ingest, &desc.digest).await
    }

    async fn update_index(&self, m: &ManifestBlob) -> Result<()> {
        let _guard = self.index_lock.lock().await;
        let path = self.dir.join("index.json");
        let raw = tokio::fs::read(&path)
            .await
            .map_err(|e| TransferError::io(&path, e))?;
        let mut index: Value = serde_json::from_slice(&raw)
            .map_err(|e| TransferError::Corrupt(format!("{}: {e}", path.display())))?;
        if !index.is_object() {
            return Err(TransferError::Corrupt(format!(
                "{} is not an object",
                path.display()
            )));
        }
        let digest = m.digest.to_string();
        let mut manifests: Vec<Value> = index
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        manifests.retain(|d| {
            let name = d
                .get("annotations")
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .and_then(Value::as_str);
            match &self.tag {
                Some(t) => name != Some(t.as_str()),
                None => {
                    !(name.is_none() && d.get("digest").and_then(Value::as_str) == Some(&digest))
                }
            }
        });
        let mut annotations = self.annotations.clone();
        if let Some(t) = &self.tag {
            annotations.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
        }
        let mut desc = json!({
            "mediaType": m.media_type,
            "digest": digest,
            "size": m.bytes.len(),
        });
        if !annotations.is_empty() {
            desc["annotations"] = json!(annotations);
        }
        manifests.push(desc);
        index["schemaVersion"] = json!(2);
        index["manifests"] = Value::Array(manifests);
        let bytes =
            serde_json::to_vec(&index).map_err(|e| TransferError::Invalid(e.to_string()))?;
        write_atomic(&path, &bytes).await
    }
}

#[async_trait]
impl Destination for LayoutDest {
    fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci:{}:{t}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    async fn has_blob(&self, desc: &Reference) -> Result<bool> {
        Ok(tokio::fs::metadata(self.path_of(&desc.digest))
            .await
            .is_ok_and(|m| m.len() == desc.size))
    }

    async fn put_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let mut last = None;
        for attempt in 0..BLOB_ATTEMPTS {
            match self.fetch_blob(desc, source, progress).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt + 1 < BLOB_ATTEMPTS => {
                    tracing::warn!(digest = %desc.digest, error = %e, "blob transfer interrupted; resuming");
                    tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TransferError::Invalid("no attempt made".into())))
    }

    async fn put_manifest(&self, m: &ManifestBlob, root: bool) -> Result<()> {
        let path = self.path_of(&m.digest);
        if !path.exists() {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| TransferError::io(parent, e))?;
            }
            write_atomic(&path, &m.bytes).await?;
        }
        if root {
            self.update_index(m).await?;
        }
        Ok(())
    }

    async fn commit(&self) -> Result<()> {
        // Only removes the ingest directory when nothing partial is left in it.
        let _ = tokio::fs::remove_dir(self.dir.join(".berth-ingest")).await;
        Ok(())
    }
}
