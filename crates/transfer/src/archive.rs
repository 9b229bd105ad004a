//! Tar files holding image content, read in place and written from a
//! staged directory.
//!
//! Reading (`oci-archive:`, bundles, `docker-archive:`): one pass over the
//! tar headers records where each regular file's bytes lie ([`TarIndex`]);
//! files are then streamed straight from those offsets. Nothing is
//! extracted, and no more than one read buffer of a layer is in memory.
//! Only uncompressed tars can be read in place (skopeo and `docker save`
//! write uncompressed ones); a gzip or zstd one is decompressed once into a
//! temporary file first (see `tar_codec`).
//!
//! Writing (`oci-archive:`, bundles): the layout is staged in a temporary
//! directory beside the target file, then tarred (deterministic order and
//! metadata) to a temporary name and renamed over the target.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use berth_manifest::Reference;
use bytes::Bytes;
use tokio::io::AsyncSeekExt;

use crate::error::{Result, TransferError};
use crate::layout::{file_stream, LayoutDest, LayoutFiles};
use crate::source::{ByteStream, Destination, ManifestBlob, Source};
use crate::tar_codec::{decompress_to_temp, Compressing, TarCompression};

const MAX_SMALL: u64 = 16 << 20;
/// Most entries indexed in one archive (bounds the header scan).
const MAX_ENTRIES: usize = 1_000_000;

/// Where each regular file of a tar lies: path → (data offset, size).
#[derive(Clone)]
pub struct TarIndex {
    file: PathBuf,
    entries: Arc<HashMap<String, (u64, u64)>>,
    /// For a compressed archive, the decompressed copy `file` names,
    /// removed with the last clone of the index.
    _decompressed: Option<Arc<tempfile::TempPath>>,
}

fn normalise(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    p.to_string()
}

impl TarIndex {
    /// The archive file, and where `path`'s data lies in it (offset, size).
    pub(crate) fn locate(&self, path: &str) -> Option<(&Path, u64, u64)> {
        let &(off, size) = self.entries.get(&normalise(path))?;
        Some((&self.file, off, size))
    }

    /// Scan `file`'s headers (seeking over the data).
    pub async fn open(file: &Path) -> Result<TarIndex> {
        let path = file.to_path_buf();
        tokio::task::spawn_blocking(move || TarIndex::scan(&path))
            .await
            .map_err(|e| TransferError::Invalid(format!("tar scan task: {e}")))?
    }

    fn scan(original: &Path) -> Result<TarIndex> {
        let mut f = std::fs::File::open(original).map_err(|e| TransferError::io(original, e))?;
        let mut magic = [0u8; 4];
        let n = f
            .read(&mut magic)
            .map_err(|e| TransferError::io(original, e))?;
        let decompressed = match TarCompression::detect(&magic[..n]) {
            TarCompression::None => None,
            how => Some(Arc::new(decompress_to_temp(original, how)?)),
        };
        let path: &Path = match &decompressed {
            Some(tmp) => {
                f = std::fs::File::open(tmp.as_ref() as &Path)
                    .map_err(|e| TransferError::io(tmp.to_path_buf(), e))?;
                tmp
            }
            None => original,
        };
        f.seek(SeekFrom::Start(0))
            .map_err(|e| TransferError::io(path, e))?;
        let corrupt = |e: std::io::Error| {
            TransferError::Corrupt(format!("{} is not a readable tar: {e}", original.display()))
        };
        let mut archive = tar::Archive::new(f);
        let mut entries = HashMap::new();
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            if entries.len() >= MAX_ENTRIES {
                return Err(TransferError::Corrupt(format!(
                    "{} has more than {MAX_ENTRIES} entries",
                    original.display()
                )));
            }
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                continue;
            }
            let name = entry.path().map_err(corrupt)?;
            let name = normalise(&name.to_string_lossy());
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(TarIndex {
            file: path.to_path_buf(),
            entries: Arc::new(entries),
            _decompressed: decompressed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Paths of the regular files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn size_of(&self, path: &str) -> Option<u64> {
        self.entries.get(&normalise(path)).map(|(_, s)| *s)
    }
}

#[async_trait]
impl LayoutFiles for TarIndex {
    async fn read_small(&self, path: &str) -> Result<Option<Bytes>> {
        let Some(&(off, size)) = self.entries.get(&normalise(path)) else {
            return Ok(None);
        };
        if size > MAX_SMALL {
            return Err(TransferError::Corrupt(format!(
                "{path} in {} is larger than {MAX_SMALL} bytes",
                self.file.display()
            )));
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&file).map_err(|e| TransferError::io(&file, e))?;
            f.seek(SeekFrom::Start(off))
                .map_err(|e| TransferError::io(&file, e))?;
            let mut buf = vec![0u8; size as usize];
            f.read_exact(&mut buf)
                .map_err(|e| TransferError::io(&file, e))?;
            Ok(Some(Bytes::from(buf)))
        })
        .await
        .map_err(|e| TransferError::Invalid(format!("read task: {e}")))?
    }

    async fn open(&self, path: &str, offset: u64) -> Result<Option<(u64, ByteStream)>> {
        let Some(&(off, size)) = self.entries.get(&normalise(path)) else {
            return Ok(None);
        };
        let offset = offset.min(size);
        let mut f = tokio::fs::File::open(&self.file)
            .await
            .map_err(|e| TransferError::io(&self.file, e))?;
        f.seek(SeekFrom::Start(off + offset))
            .await
            .map_err(|e| TransferError::io(&self.file, e))?;
        Ok(Some((
            size,
            file_stream(f, size - offset, self.file.clone()),
        )))
    }
}

/// One entry of a tar being written.
pub(crate) enum TarItem {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Write `items` as a tar at `target` (through a temporary name, renamed
/// when complete), with fixed metadata so the same content gives the same
/// archive. File contents are streamed from disk.
pub(crate) fn write_tar(
    items: &[(String, TarItem)],
    target: &Path,
    compression: TarCompression,
) -> Result<()> {
    let tmp = target.with_file_name(format!(
        ".{}.partial-{}",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("archive"),
        std::process::id()
    ));
    let werr = |e: std::io::Error| TransferError::io(&tmp, e);
    let out = std::fs::File::create(&tmp).map_err(werr)?;
    let out = Compressing::new(std::io::BufWriter::with_capacity(1 << 20, out), compression)
        .map_err(werr)?;
    let mut builder = tar::Builder::new(out);
    for (name, item) in items {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        match item {
            TarItem::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{name}/"), std::io::empty())
                    .map_err(werr)?;
            }
            TarItem::File(p) => {
                let f = std::fs::File::open(p).map_err(|e| TransferError::io(p, e))?;
                let len = f.metadata().map_err(|e| TransferError::io(p, e))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(len);
                builder.append_data(&mut h, name, f).map_err(werr)?;
            }
            TarItem::Bytes(b) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(b.len() as u64);
                builder
                    .append_data(&mut h, name, b.as_slice())
                    .map_err(werr)?;
            }
        }
    }
    let buf = builder
        .into_inner()
        .and_then(Compressing::finish)
        .map_err(werr)?;
    let file = buf
        .into_inner()
        .map_err(|e| TransferError::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, target).map_err(|e| TransferError::io(target, e))
}

/// Tar a layout directory into `target`: `oci-layout`, `index.json`, then
/// the blobs in sorted order.
pub fn write_layout_tar(dir: &Path, target: &Path, compression: TarCompression) -> Result<()> {
    let mut blobs = Vec::new();
    let blob_root = dir.join("blobs");
    for alg in std::fs::read_dir(&blob_root).map_err(|e| TransferError::io(&blob_root, e))? {
        let alg = alg.map_err(|e| TransferError::io(&blob_root, e))?;
        if !alg.path().is_dir() {
            continue;
        }
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for b in std::fs::read_dir(alg.path()).map_err(|e| TransferError::io(alg.path(), e))? {
            let b = b.map_err(|e| TransferError::io(alg.path(), e))?;
            let name = b.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                blobs.push(format!("blobs/{alg_name}/{name}"));
            }
        }
    }
    blobs.sort();
    let mut dirs: Vec<String> = blobs
        .iter()
        .filter_map(|b| b.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    dirs.dedup();
    let mut items = vec![
        (
            "oci-layout".to_string(),
            TarItem::File(dir.join("oci-layout")),
        ),
        (
            "index.json".to_string(),
            TarItem::File(dir.join("index.json")),
        ),
        ("blobs".to_string(), TarItem::Dir),
    ];
    items.extend(dirs.into_iter().map(|d| (d, TarItem::Dir)));
    items.extend(blobs.into_iter().map(|b| {
        let p = dir.join(&b);
        (b, TarItem::File(p))
    }));
    write_tar(&items, target, compression)
}

/// Writing an image into an `oci-archive:` file: a layout staged beside the
/// file, tarred on commit. An existing archive is replaced, as skopeo does.
pub struct OciArchiveDest {
    file: PathBuf,
    tag: Option<String>,
    _stage: tempfile::TempDir,
    layout: LayoutDest,
}

impl OciArchiveDest {
    pub async fn create(file: &Path, tag: Option<String>) -> Result<Self> {
        let stage = stage_beside(file, ".berth-stage-")?;
        let layout = LayoutDest::create(stage.path(), tag.clone()).await?;
        Ok(OciArchiveDest {
            file: file.to_path_buf(),
            tag,
            _stage: stage,
            layout,
        })
    }
}

#[async_trait]
impl Destination for OciArchiveDest {
    fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci-archive:{}:{t}", self.file.display()),
            None => format!("oci-archive:{}", self.file.display()),
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
        self.layout.put_manifest(m, root).await
    }

    async fn commit(&self) -> Result<()> {
        self.layout.commit().await?;
        let dir = self.layout.dir().to_path_buf();
        let file = self.file.clone();
        // skopeo reads only plain `oci-archive:` tars.
        tokio::task::spawn_blocking(move || write_layout_tar(&dir, &file, TarCompression::None))
            .await
            .map_err(|e| TransferError::Invalid(format!("tar task: {e}")))?
    }
}

/// A staging directory beside `file` (so on its file system), removed when
/// dropped: archives are assembled there before they are written out.
pub(crate) fn stage_beside(file: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(|e| TransferError::io(&parent, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn written_tars_are_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        let target = dir.path().join("t.tar");
        write_tar(
            &[
                ("d".to_string(), TarItem::Dir),
                ("d/small.json".to_string(), TarItem::Bytes(b"{}".to_vec())),
                ("big.bin".to_string(), TarItem::File(dir.path().join("big"))),
            ],
            &target,
            TarCompression::None,
        )
        .unwrap();
        let index = TarIndex::open(&target).await.unwrap();
        assert_eq!(index.size_of("./d/small.json"), Some(2));
        assert_eq!(
            index
                .read_small("d/small.json")
                .await
                .unwrap()
                .unwrap()
                .as_ref(),
            b"{}"
        );
        let (size, mut s) = index.open("big.bin", 1000).await.unwrap().unwrap();
        assert_eq!(size, big.len() as u64);
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, big[1000..]);
        assert!(index.open("missing", 0).await.unwrap().is_none());
        // Compressed tars are read the same (through a decompressed copy),
        // and a broken stream is an error, not a short archive.
        for how in [TarCompression::Gzip, TarCompression::Zstd] {
            let packed = dir.path().join(format!("t.tar.{}", how.as_str()));
            write_tar(
                &[("big.bin".to_string(), TarItem::File(dir.path().join("big")))],
                &packed,
                how,
            )
            .unwrap();
            let index = TarIndex::open(&packed).await.unwrap();
            let (size, mut s) = index.open("big.bin", 0).await.unwrap().unwrap();
            assert_eq!(size, big.len() as u64);
            let mut got = Vec::new();
            while let Some(c) = s.next().await {
                got.extend_from_slice(&c.unwrap());
            }
            assert_eq!(got, big);
            let copy = index.path().to_path_buf();
            drop(index);
            assert!(!copy.exists(), "the decompressed copy outlived its index");
        }
        let gz = dir.path().join("x.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(matches!(
            TarIndex::open(&gz).await,
            Err(TransferError::Corrupt(_))
        ));
    }
}
