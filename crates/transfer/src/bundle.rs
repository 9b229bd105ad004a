//! Air-gap bundles: many images in one archive, each blob once.
//!
//! A bundle is an OCI image layout in a tar (what `oci-archive:` is), whose
//! `index.json` has one entry per image, annotated with the image's full
//! original reference twice: `org.opencontainers.image.ref.name` (so skopeo
//! can read one image as `oci-archive:FILE:docker.io/library/alpine:3.20`)
//! and [`ANNOTATION_BUNDLE_REF`]. Loading verifies every blob's digest and
//! that every image is complete before anything is pushed, then pushes each
//! image under its mirror name (`docker.io/library/alpine:3.20` lands in
//! repository `docker.io/library/alpine`), which an `--offline` berth
//! serves as the mirror of `docker.io`.
//!
//! What refers to each image (signatures, attestations, SBOMs: see
//! `referrers`) is carried too, as entries of their own named by digest
//! (`docker.io/library/alpine@sha256:...`) or by cosign's tag
//! (`docker.io/library/alpine:sha256-<hex>.sig`), so that loading pushes
//! them beside the image under the same mirror name.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use berth_manifest::{Kind, Manifest};
use berth_reference::{Digest, ImageReference, RepositoryName};
use futures::StreamExt;
use serde::Serialize;
use url::Url;

use crate::archive::{write_layout_tar, TarIndex};
use crate::copy::{copy, CopyOptions, CopyReport, Selection};
use crate::error::{Result, TransferError};
use crate::incremental::{
    Base, FillFromSite, Known, SiteHolds, ANNOTATION_INCREMENTAL, ANNOTATION_SINCE,
};
use crate::layout::{
    blob_path, parse_index_json, LayoutDest, LayoutEntry, LayoutFiles, LayoutSource,
};
use crate::registry::{RegistryDest, RegistryOptions, RegistrySource};
use crate::source::ManifestBlob;
use crate::tar_codec::TarCompression;

/// berth's own annotation carrying an image's original reference.
pub const ANNOTATION_BUNDLE_REF: &str = "io.berth.bundle.reference";
/// On a signature, attestation or SBOM: the image it came with.
pub const ANNOTATION_REFERRER_OF: &str = "io.berth.bundle.referrer-of";

/// One image put into, or loaded from, a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleImage {
    pub reference: String,
    /// Where it was pushed (load only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub digest: Digest,
    pub report: CopyReport,
}

/// Read a list of references: one per line, `#` comments and blank lines ignored.
pub fn parse_list(text: &str) -> Result<Vec<ImageReference>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("docker://").unwrap_or(line);
        let r: ImageReference = line
            .parse()
            .map_err(|e| TransferError::Invalid(format!("line {}: {e}", n + 1)))?;
        if seen.insert(r.to_string()) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Fetch `images` from their registries into a bundle at `out`, the tar
/// compressed as `compression` says.
/// `on_image` is told about each image as it completes.
/// With `base`, blobs the site holds already are left out (see
/// `incremental`).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    images: &[ImageReference],
    out: &Path,
    compression: TarCompression,
    with_referrers: bool,
    base: Option<&Base>,
    registry: &RegistryOptions,
    opts: &CopyOptions,
    on_image: &(dyn Fn(&BundleImage) + Send + Sync),
) -> Result<Vec<BundleImage>> {
    let stage = crate::archive::stage_beside(out, ".berth-bundle-")?;
    let layout = LayoutDest::create(stage.path(), None).await?;
    let known = match base {
        Some(b) => Some(Known::open(b).await?),
        None => None,
    };
    let known = known.as_ref();
    let mut done = Vec::new();
    for r in images {
        let src = RegistrySource::open(r, registry).await?;
        let img = add_image(&layout, known, &src, r, None, opts).await?;
        on_image(&img);
        let subject = img.digest.clone();
        done.push(img);
        if !with_referrers {
            continue;
        }
        // Signatures, attestations, SBOMs: whole, every manifest of theirs.
        let mut all = opts.clone();
        all.selection = Selection::All;
        for referrer in src.referrer_refs(&subject).await? {
            let rsrc = src.sibling(referrer.clone());
            let img =
                add_image(&layout, known, &rsrc, &referrer, Some(r.to_string()), &all).await?;
            on_image(&img);
            done.push(img);
        }
    }
    if let Some(k) = known {
        mark_incremental(stage.path(), k)?;
    }
    let dir = stage.path().to_path_buf();
    let target = out.to_path_buf();
    tokio::task::spawn_blocking(move || write_layout_tar(&dir, &target, compression))
        .await
        .map_err(|e| TransferError::Invalid(format!("tar task: {e}")))??;
    Ok(done)
}

/// Copy one image into the bundle's layout under `name` (its original
/// reference), noting what it refers to when it is a referrer.
async fn add_image(
    layout: &LayoutDest,
    known: Option<&Known>,
    src: &RegistrySource,
    reference: &ImageReference,
    referrer_of: Option<String>,
    opts: &CopyOptions,
) -> Result<BundleImage> {
    let name = reference.to_string();
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_BUNDLE_REF.to_string(), name.clone());
    if let Some(of) = referrer_of {
        annotations.insert(ANNOTATION_REFERRER_OF.to_string(), of);
    }
    let dest = layout.for_image(Some(name.clone()), annotations);
    let report = match known {
        Some(k) => copy(src, &k.skipping(dest, reference)?, opts).await?,
        None => copy(src, &dest, opts).await?,
    };
    Ok(BundleImage {
        reference: name,
        target: None,
        digest: report.digest.clone(),
        report,
    })
}

/// Note in the staged `index.json` that the bundle is incremental (and,
/// for `--since`, OLD's images).
fn mark_incremental(stage: &Path, known: &Known) -> Result<()> {
    let path = stage.join("index.json");
    let raw = std::fs::read(&path).map_err(|e| TransferError::io(&path, e))?;
    let mut index: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| TransferError::Corrupt(format!("{}: {e}", path.display())))?;
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_INCREMENTAL.into(), "true".into());
    if let Some(since) = known.since() {
        annotations.insert(ANNOTATION_SINCE.into(), since.into());
    }
    index["annotations"] = annotations.into();
    let bytes = serde_json::to_vec(&index)
        .map_err(|e| TransferError::Invalid(format!("index.json: {e}")))?;
    std::fs::write(&path, bytes).map_err(|e| TransferError::io(&path, e))
}

/// The top-level annotations of a bundle's `index.json`.
async fn index_annotations(index: &TarIndex) -> Result<BTreeMap<String, String>> {
    let raw = index.read_small("index.json").await?.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    Ok(v.get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// A verified bundle.
pub struct Verified {
    pub index: TarIndex,
    pub entries: Vec<BundleEntry>,
    /// Made `--since` or `--skip-present-in`: blobs may be left out.
    pub incremental: bool,
    /// For `--since`: the earlier bundle's images.
    pub since: Vec<ImageReference>,
    /// The blobs it carries.
    pub carried: HashSet<Digest>,
}

/// An image listed in a bundle.
#[derive(Debug, Clone)]
pub struct BundleEntry {
    pub reference: ImageReference,
    pub ref_name: String,
    pub digest: Digest,
}

/// A bundle's tar index, its name for messages, and its `index.json` entries.
pub(crate) async fn open_bundle(file: &Path) -> Result<(TarIndex, String, Vec<LayoutEntry>)> {
    let index = TarIndex::open(file).await?;
    let what = file.display().to_string();
    let raw = index
        .read_small("index.json")
        .await?
        .ok_or_else(|| TransferError::Corrupt(format!("{what}: no index.json; is it a bundle?")))?;
    let entries = parse_index_json(&raw, &what)?;
    Ok((index, what, entries))
}

/// An image's original reference: berth's annotation, else the OCI ref name.
pub(crate) fn reference_of(e: &LayoutEntry) -> Option<String> {
    e.annotations
        .get(ANNOTATION_BUNDLE_REF)
        .or_else(|| e.annotations.get(crate::layout::ANNOTATION_REF_NAME))
        .cloned()
}

/// Open a bundle and verify it: every blob hashes to its name, and every
/// image's manifests and blobs are present. Nothing is pushed.
pub async fn verify(file: &Path) -> Result<Verified> {
    let (index, what, entries) = open_bundle(file).await?;
    let annotations = index_annotations(&index).await?;
    let incremental = annotations.get(ANNOTATION_INCREMENTAL).map(String::as_str) == Some("true");
    let since: Vec<ImageReference> = match annotations.get(ANNOTATION_SINCE) {
        Some(list) => serde_json::from_str::<Vec<String>>(list)
            .map_err(|e| TransferError::Corrupt(format!("{what}: {ANNOTATION_SINCE}: {e}")))?
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect(),
        None => Vec::new(),
    };
    // 1. Every blob matches its digest.
    let mut names: Vec<String> = index
        .names()
        .filter(|n| n.starts_with("blobs/"))
        .map(str::to_string)
        .collect();
    names.sort();
    let mut present = HashSet::new();
    for n in &names {
        let parts: Vec<&str> = n.split('/').collect();
        let [_, alg, hex] = parts.as_slice() else {
            return Err(TransferError::Corrupt(format!(
                "{what}: unexpected entry {n}"
            )));
        };
        let digest: Digest = format!("{alg}:{hex}")
            .parse()
            .map_err(|e| TransferError::Corrupt(format!("{what}: {n}: {e}")))?;
        let (size, mut stream) = index
            .open(n, 0)
            .await?
            .ok_or_else(|| TransferError::Corrupt(format!("{what}: {n} vanished")))?;
        let mut hasher = digest.algorithm().hasher();
        while let Some(c) = stream.next().await {
            hasher.update(&c?);
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(TransferError::DigestMismatch {
                what: format!("{what}: {n}"),
                expected: digest,
                actual,
            });
        }
        present.insert((digest, size));
    }
    // 2. Every image is complete.
    let mut out = Vec::new();
    for e in entries {
        let ref_name = reference_of(&e).ok_or_else(|| {
            TransferError::Corrupt(format!(
                "{what}: image {} has no reference annotation",
                e.descriptor.digest
            ))
        })?;
        let reference: ImageReference = ref_name
            .parse()
            .map_err(|err| TransferError::Corrupt(format!("{what}: {ref_name:?}: {err}")))?;
        let mut stack = vec![e.descriptor.clone()];
        let mut rounds = 0;
        while let Some(d) = stack.pop() {
            rounds += 1;
            if rounds > 100_000 {
                return Err(TransferError::Corrupt(format!(
                    "{what}: too many manifests"
                )));
            }
            if !present.contains(&(d.digest.clone(), d.size)) {
                return Err(TransferError::Corrupt(format!(
                    "{what}: {ref_name} needs {} ({} bytes), which the bundle lacks",
                    d.digest, d.size
                )));
            }
            let is_manifest = d.media_type.contains("manifest") || d.media_type.contains("index");
            if !is_manifest {
                continue;
            }
            let bytes = index
                .read_small(&blob_path(&d.digest))
                .await?
                .ok_or_else(|| TransferError::Corrupt(format!("{what}: {} missing", d.digest)))?;
            let m = Manifest::parse(&bytes, Some(&d.media_type))
                .map_err(|err| TransferError::Corrupt(format!("{what}: {}: {err}", d.digest)))?;
            match m.kind {
                Kind::Index => stack.extend(m.manifests),
                Kind::Image => {
                    for b in m.blobs {
                        // An incremental bundle leaves out what the site has.
                        if !incremental && !present.contains(&(b.digest.clone(), b.size)) {
                            return Err(TransferError::Corrupt(format!(
                                "{what}: {ref_name} needs blob {}, which the bundle lacks",
                                b.digest
                            )));
                        }
                    }
                }
            }
        }
        out.push(BundleEntry {
            reference,
            ref_name: e.ref_name().unwrap_or(&ref_name).to_string(),
            digest: e.descriptor.digest.clone(),
        });
    }
    Ok(Verified {
        index,
        entries: out,
        incremental,
        since,
        carried: present.into_iter().map(|(d, _)| d).collect(),
    })
}

/// The mirror name an image is stored under in a berth registry `registry`
/// (`registry.local:5000/app` as `registry.local__5000/app`), under
/// `prefix` when one is given (`airgap/docker.io/library/alpine`).
pub fn mirror_target(
    original: &ImageReference,
    registry: &str,
    prefix: Option<&RepositoryName>,
) -> Result<ImageReference> {
    let invalid =
        |e: berth_reference::NameError| TransferError::Invalid(format!("{original}: {e}"));
    let mut repository: RepositoryName = original.mirror_repository().map_err(invalid)?;
    if let Some(p) = prefix {
        repository = format!("{p}/{repository}").parse().map_err(invalid)?;
    }
    Ok(ImageReference {
        registry: registry.to_string(),
        repository,
        tag: original.tag.clone(),
        digest: original.digest.clone(),
    })
}

/// Verify a bundle, then push every image into `registry` under its mirror
/// name. `base` overrides where the registry answers.
pub async fn load(
    file: &Path,
    registry: &str,
    base: Option<Url>,
    prefix: Option<&RepositoryName>,
    options: &RegistryOptions,
    opts: &CopyOptions,
    on_image: &(dyn Fn(&BundleImage) + Send + Sync),
) -> Result<Vec<BundleImage>> {
    let Verified {
        index,
        entries,
        incremental,
        since,
        carried,
    } = verify(file).await?;
    let carried = std::sync::Arc::new(carried);
    let mount_from = std::sync::Arc::new(
        since
            .iter()
            .filter_map(|r| mirror_target(r, registry, prefix).ok())
            .map(|t| t.repository)
            .collect::<Vec<_>>(),
    );
    let mut options = options.clone();
    if let Some(u) = base {
        options.upstreams.push((registry.to_string(), u));
    }
    let client = options.client(registry, None).await?;
    let mut opts = opts.clone();
    opts.selection = Selection::All;
    let mut done = Vec::new();
    for e in entries {
        let target = mirror_target(&e.reference, registry, prefix)?;
        let src = LayoutSource::from_tar(
            index.clone(),
            format!("oci-archive:{}", file.display()),
            Some(e.ref_name.clone()),
        );
        let dest = RegistryDest::with_client(client.clone(), target.clone());
        let report = if incremental {
            let fill = FillFromSite::new(
                dest,
                SiteHolds {
                    carried: carried.clone(),
                    mount_from: mount_from.clone(),
                    what: file.display().to_string(),
                },
            );
            copy(&src, &fill, &opts).await?
        } else {
            copy(&src, &dest, &opts).await?
        };
        let img = BundleImage {
            reference: e.reference.to_string(),
            target: Some(target.to_string()),
            digest: report.digest.clone(),
            report,
        };
        on_image(&img);
        done.push(img);
    }
    Ok(done)
}

/// The root manifest of each image, for tests and `--dry-run` listings.
pub async fn manifests(file: &Path) -> Result<Vec<(BundleEntry, ManifestBlob)>> {
    let Verified { index, entries, .. } = verify(file).await?;
    let mut out = Vec::new();
    for e in entries {
        let src = LayoutSource::from_tar(
            index.clone(),
            file.display().to_string(),
            Some(e.ref_name.clone()),
        );
        let m = crate::source::Source::root(&src).await?;
        out.push((e, m));
    }
    Ok(out)
}

/// One image of a bundle, as `bundle ls` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedImage {
    pub reference: String,
    pub digest: Digest,
    /// `os/arch[/variant]` of each image (one for a single image).
    pub platforms: Vec<String>,
    /// Bytes of every manifest, config and layer it needs.
    pub size: u64,
    /// For a signature, attestation or SBOM: the image it came with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer_of: Option<String>,
}

/// What a bundle holds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub images: Vec<ListedImage>,
    /// Distinct blobs (manifests included) and their bytes: what the file carries.
    pub blobs: usize,
    pub bytes: u64,
    /// Bytes of blobs that more than one image needs (counted once in `bytes`).
    pub shared_bytes: u64,
    /// Made `--since` or `--skip-present-in`: what it left out, which the
    /// site must hold already, is not in `bytes`.
    pub incremental: bool,
    pub left_out_bytes: u64,
}

/// `os/arch[/variant]` from a JSON object with those fields (an index
/// entry's `platform`, or an image config).
fn platform_of(v: &serde_json::Value) -> Option<String> {
    let os = v.get("os")?.as_str()?;
    let arch = v.get("architecture")?.as_str()?;
    Some(match v.get("variant").and_then(|x| x.as_str()) {
        Some(var) if !var.is_empty() => format!("{os}/{arch}/{var}"),
        _ => format!("{os}/{arch}"),
    })
}

/// List a bundle's images, platforms and sizes from its manifests, without
/// hashing its blobs (`bundle load` verifies them). A blob that is named
/// but absent is an error, as it is for loading.
pub async fn list(file: &Path) -> Result<Listing> {
    let (index, what, entries) = open_bundle(file).await?;
    let incremental = index_annotations(&index)
        .await?
        .get(ANNOTATION_INCREMENTAL)
        .is_some_and(|v| v == "true");
    let small = |d: &Digest| {
        let index = index.clone();
        let path = blob_path(d);
        let what = what.clone();
        async move {
            index
                .read_small(&path)
                .await?
                .ok_or_else(|| TransferError::Corrupt(format!("{what}: {path} is missing")))
        }
    };
    let mut uses: BTreeMap<Digest, (u64, usize)> = BTreeMap::new();
    let mut images = Vec::new();
    for e in entries {
        let reference = reference_of(&e).unwrap_or_else(|| e.descriptor.digest.to_string());
        let mut needs: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut platforms = Vec::new();
        let mut stack = vec![(e.descriptor.clone(), None::<String>)];
        while let Some((d, platform)) = stack.pop() {
            if needs.len() > 1_000_000 {
                return Err(TransferError::Corrupt(format!("{what}: too many blobs")));
            }
            if needs.insert(d.digest.clone(), d.size).is_some() {
                continue;
            }
            let is_manifest = d.media_type.contains("manifest") || d.media_type.contains("index");
            if !is_manifest {
                continue;
            }
            let bytes = small(&d.digest).await?;
            let m = Manifest::parse(&bytes, Some(&d.media_type))
                .map_err(|err| TransferError::Corrupt(format!("{what}: {}: {err}", d.digest)))?;
            match m.kind {
                Kind::Index => {
                    // Manifest keeps no platforms: read them from the JSON.
                    let v: serde_json::Value = serde_json::from_slice(&bytes)
                        .map_err(|err| TransferError::Corrupt(format!("{what}: {err}")))?;
                    let listed = v.get("manifests").and_then(|m| m.as_array());
                    for (i, child) in m.manifests.into_iter().enumerate() {
                        let p = listed
                            .and_then(|l| l.get(i))
                            .and_then(|c| c.get("platform"))
                            .and_then(platform_of);
                        stack.push((child, p));
                    }
                }
                Kind::Image => {
                    let p = match platform {
                        Some(p) => Some(p),
                        None => match m.blobs.first() {
                            // An incremental bundle may have left the
                            // config out: the platform is then unknown.
                            Some(config)
                                if !incremental
                                    || index.locate(&blob_path(&config.digest)).is_some() =>
                            {
                                let c = small(&config.digest).await?;
                                serde_json::from_slice::<serde_json::Value>(&c)
                                    .ok()
                                    .as_ref()
                                    .and_then(platform_of)
                            }
                            _ => None,
                        },
                    };
                    // Attestation manifests in an index say unknown/unknown.
                    if let Some(p) = p.filter(|p| !p.starts_with("unknown/")) {
                        platforms.push(p);
                    }
                    for b in m.blobs {
                        needs.insert(b.digest, b.size);
                    }
                }
            }
        }
        for (d, size) in &needs {
            let u = uses.entry(d.clone()).or_insert((*size, 0));
            u.1 += 1;
        }
        platforms.sort();
        platforms.dedup();
        images.push(ListedImage {
            reference,
            digest: e.descriptor.digest.clone(),
            platforms,
            size: needs.values().sum(),
            referrer_of: e.annotations.get(ANNOTATION_REFERRER_OF).cloned(),
        });
    }
    let mut left_out = 0u64;
    for (d, (size, _)) in &uses {
        if index.locate(&blob_path(d)).is_none() {
            if !incremental {
                return Err(TransferError::Corrupt(format!(
                    "{what}: {d} is needed but missing"
                )));
            }
            left_out += size;
        }
    }
    Ok(Listing {
        images,
        blobs: uses.len(),
        bytes: uses.values().map(|(s, _)| s).sum::<u64>() - left_out,
        shared_bytes: uses.values().filter(|(_, n)| *n > 1).map(|(s, _)| s).sum(),
        incremental,
        left_out_bytes: left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_mirror_names() {
        let refs = parse_list(
            "# from berth images\ndocker.io/library/alpine:3.20\n\nnginx  # web\ndocker://quay.io/org/app@sha256:0123456789012345678901234567890123456789012345678901234567890123\nalpine:3.20\n",
        )
        .unwrap();
        let names: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            names,
            [
                "docker.io/library/alpine:3.20",
                "docker.io/library/nginx:latest",
                "quay.io/org/app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            ]
        );
        let t = mirror_target(&refs[0], "10.0.0.5:5000", None).unwrap();
        assert_eq!(t.to_string(), "10.0.0.5:5000/docker.io/library/alpine:3.20");
        let project: RepositoryName = "airgap/edge".parse().unwrap();
        let t = mirror_target(&refs[0], "harbor.corp", Some(&project)).unwrap();
        assert_eq!(
            t.to_string(),
            "harbor.corp/airgap/edge/docker.io/library/alpine:3.20"
        );
        let t = mirror_target(&refs[2], "localhost:5000", None).unwrap();
        assert_eq!(t.repository.as_str(), "quay.io/org/app");
        assert!(t.tag.is_none() && t.digest.is_some());
        assert!(parse_list("UPPER/case\n").is_err());
    }
}
