//! The copy engine: from any [`Source`] to any [`Destination`], a single
//! image or a whole index.
//!
//! Manifests are copied as the exact bytes read, so digests never change.
//! Blobs are deduplicated by digest, skipped when the destination holds
//! them, mounted across repositories of one registry, and otherwise
//! streamed (never held whole in memory), several at once. Order respects
//! what registries check: blobs, then image manifests, then the index.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use berth_manifest::{Kind, Manifest, Reference};
use berth_reference::Digest;
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Result, TransferError};
use crate::platform::{index_entries, Platform};
use crate::source::{Destination, ManifestBlob, Source};

/// Which part of an index to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The whole index, every platform (`--all`).
    All,
    /// One platform's image (`--platform`).
    Platform(Platform),
    /// The host's platform, or the only image (skopeo's default).
    Host,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobOutcome {
    Copied,
    Skipped,
    Mounted,
}

/// Progress reports; every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The work ahead: how many blobs and bytes may be transferred.
    fn plan(&self, _blobs: usize, _bytes: u64) {}
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Clone)]
pub struct CopyOptions {
    pub selection: Selection,
    /// Blobs transferred at once.
    pub parallel: usize,
    pub progress: Arc<dyn Progress>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            selection: Selection::Host,
            parallel: 4,
            progress: Arc::new(NoProgress),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    /// Digest of the manifest (or index) written as the destination's image.
    pub digest: Digest,
    pub media_type: String,
    pub manifests: usize,
    pub blobs: usize,
    pub blobs_copied: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub bytes_copied: u64,
    /// When one platform was picked out of an index: that index's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_index: Option<Digest>,
}

/// The blobs one image manifest needs.
struct Image {
    digest: Digest,
    blobs: Vec<Reference>,
}

fn parse(m: &ManifestBlob, what: &str) -> Result<Manifest> {
    Manifest::parse(&m.bytes, Some(&m.media_type))
        .map_err(|e| TransferError::Corrupt(format!("{what}: {e}")))
}

/// Pick one image out of an index for `want` (`None`: the host's, or the
/// only image).
pub(crate) fn choose_platform(
    index: &ManifestBlob,
    want: Option<&Platform>,
    what: &str,
) -> Result<Reference> {
    let entries = index_entries(&index.bytes)?;
    let host = Platform::host();
    let target = want.unwrap_or(&host);
    if let Some(e) = entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(|p| target.matches(p)))
    {
        return Ok(e.descriptor.clone());
    }
    if want.is_none() {
        let images: Vec<_> = entries
            .iter()
            .filter(|e| {
                e.platform
                    .as_ref()
                    .is_none_or(|p| p.os != "unknown" && !p.os.is_empty())
            })
            .collect();
        if let [one] = images.as_slice() {
            return Ok(one.descriptor.clone());
        }
    }
    let have: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
        .collect();
    Err(TransferError::NotFound(format!(
        "{what} has no image for {target} (it has {}); choose one with --platform, or copy all with --all",
        if have.is_empty() { "no platforms".to_string() } else { have.join(", ") }
    )))
}

/// Collect the manifests to write (children first, root last) and images.
async fn plan(
    source: &dyn Source,
    root: ManifestBlob,
    selection: &Selection,
) -> Result<(Vec<ManifestBlob>, Vec<Image>, ManifestBlob)> {
    let what = source.describe();
    let parsed = parse(&root, &what)?;
    if parsed.kind == Kind::Image {
        let image = Image {
            digest: root.digest.clone(),
            blobs: parsed.blobs,
        };
        return Ok((Vec::new(), vec![image], root));
    }
    match selection {
        Selection::All => {
            let mut children = Vec::new();
            let mut images = Vec::new();
            // Breadth-first over nested indexes, bounded.
            let mut queue: Vec<(ManifestBlob, Manifest)> = vec![(root.clone(), parsed)];
            let mut seen = HashSet::new();
            let mut rounds = 0;
            while let Some((_, idx)) = queue.pop() {
                rounds += 1;
                if rounds > 10_000 {
                    return Err(TransferError::Corrupt(format!(
                        "{what}: index nesting too deep"
                    )));
                }
                for child in &idx.manifests {
                    if !seen.insert(child.digest.clone()) {
                        continue;
                    }
                    let m = source.manifest(child).await?;
                    let p = parse(&m, &format!("{what} manifest {}", child.digest))?;
                    match p.kind {
                        Kind::Image => images.push(Image {
                            digest: m.digest.clone(),
                            blobs: p.blobs,
                        }),
                        Kind::Index => queue.push((m.clone(), p)),
                    }
                    children.push(m);
                }
            }
            // Nested indexes must come after their own children.
            children.reverse();
            let (idx, imgs): (Vec<_>, Vec<_>) = children
                .into_iter()
                .partition(|m| parse(m, "").is_ok_and(|p| p.kind == Kind::Index));
            let mut ordered = imgs;
            ordered.extend(idx);
            Ok((ordered, images, root))
        }
        Selection::Platform(p) => {
            let d = choose_platform(&root, Some(p), &what)?;
            single(source, &d, &what).await
        }
        Selection::Host => {
            let d = choose_platform(&root, None, &what)?;
            single(source, &d, &what).await
        }
    }
}

async fn single(
    source: &dyn Source,
    d: &Reference,
    what: &str,
) -> Result<(Vec<ManifestBlob>, Vec<Image>, ManifestBlob)> {
    let m = source.manifest(d).await?;
    let p = parse(&m, &format!("{what} manifest {}", d.digest))?;
    if p.kind != Kind::Image {
        return Err(TransferError::Unsupported(format!(
            "{what}: the platform's entry is itself an index; copy it with --all"
        )));
    }
    Ok((
        Vec::new(),
        vec![Image {
            digest: m.digest.clone(),
            blobs: p.blobs,
        }],
        m,
    ))
}

/// Copy the image `source` names to `dest`.
pub async fn copy(
    source: &dyn Source,
    dest: &dyn Destination,
    opts: &CopyOptions,
) -> Result<CopyReport> {
    let top = source.root().await?;
    let top_digest = top.digest.clone();
    let (children, images, root) = plan(source, top, &opts.selection).await?;
    let from_index = (root.digest != top_digest).then_some(top_digest);
    let mut seen = HashSet::new();
    let mut blobs = Vec::new();
    for img in &images {
        for b in &img.blobs {
            if seen.insert(b.digest.clone()) {
                blobs.push(b.clone());
            }
        }
    }
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    opts.progress.plan(blobs.len(), total);
    let copied = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let mounted = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let progress = &opts.progress;
    let results: Vec<Result<()>> = futures::stream::iter(blobs.iter())
        .map(|b| {
            let (copied, skipped, mounted, bytes) = (&copied, &skipped, &mounted, &bytes);
            async move {
                progress.blob_started(&b.digest, b.size);
                let outcome = if dest.has_blob(b).await? {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    BlobOutcome::Skipped
                } else if dest.mount_blob(b, source).await? {
                    mounted.fetch_add(1, Ordering::Relaxed);
                    BlobOutcome::Mounted
                } else {
                    let report = |n: u64| {
                        bytes.fetch_add(n, Ordering::Relaxed);
                        progress.blob_progress(&b.digest, n);
                    };
                    dest.put_blob(b, source, &report).await?;
                    copied.fetch_add(1, Ordering::Relaxed);
                    BlobOutcome::Copied
                };
                progress.blob_finished(&b.digest, b.size, outcome);
                Ok(())
            }
        })
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    for r in results {
        r?;
    }
    for m in &children {
        put_manifest(source, dest, m, false, &images).await?;
    }
    put_manifest(source, dest, &root, true, &images).await?;
    dest.commit().await?;
    Ok(CopyReport {
        source: source.describe(),
        destination: dest.describe(),
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        manifests: children.len() + 1,
        blobs: blobs.len(),
        blobs_copied: copied.into_inner(),
        blobs_skipped: skipped.into_inner(),
        blobs_mounted: mounted.into_inner(),
        bytes_copied: bytes.into_inner(),
        from_index,
    })
}

/// Put a manifest; when the registry answers that a blob it references is
/// unknown although the blob was reported present (registries whose blob
/// HEAD answers for content held in other repositories), upload that
/// manifest's blobs for real and try once more.
async fn put_manifest(
    source: &dyn Source,
    dest: &dyn Destination,
    m: &ManifestBlob,
    root: bool,
    images: &[Image],
) -> Result<()> {
    let err = match dest.put_manifest(m, root).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some(image) = images.iter().find(|i| i.digest == m.digest) else {
        return Err(err);
    };
    if !err.is_blob_unknown() {
        return Err(err);
    }
    tracing::info!(manifest = %m.digest, "destination lacks blobs it reported present; uploading them");
    for b in &image.blobs {
        dest.put_blob(b, source, &|_| {}).await?;
    }
    dest.put_manifest(m, root).await
}
