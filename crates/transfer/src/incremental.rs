//! Incremental bundles: the second trip into an air gap carries only what
//! the site lacks. `bundle create --since OLD` leaves out every blob OLD
//! carried; `--skip-present-in REGISTRY` every blob that registry (a copy
//! of the site's, reachable from the connected side) already holds under
//! the image's mirror name. Manifests always travel: they are small, and
//! `load` needs them to know what each image is.
//!
//! Such a bundle says so in its `index.json` annotations
//! ([`ANNOTATION_INCREMENTAL`], and [`ANNOTATION_SINCE`]: OLD's images).
//! Loading it checks every blob it does carry as usual; one it left out
//! must be in the destination already — in the image's own repository, or
//! mountable from the repository of one of OLD's images — else the load
//! stops, naming what to load first.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::{Digest, RepositoryName};
use berth_upstream::UpstreamClient;

use crate::error::{Result, TransferError};
use crate::layout::LayoutDest;
use crate::registry::{RegistryDest, RegistryOptions};
use crate::source::{Destination, ManifestBlob, Source};

/// On an incremental bundle's index: `true`.
pub const ANNOTATION_INCREMENTAL: &str = "io.berth.bundle.incremental";
/// On a bundle made `--since OLD`: OLD's image references, as JSON.
pub const ANNOTATION_SINCE: &str = "io.berth.bundle.since";

/// What the site is known to hold already.
pub enum Base {
    /// Everything in this earlier bundle.
    Since(PathBuf),
    /// What this registry holds under each image's mirror name (below
    /// `prefix`).
    PresentIn {
        registry: String,
        options: RegistryOptions,
        prefix: Option<RepositoryName>,
    },
}

/// [`Base`], opened.
pub(crate) enum Known {
    Blobs {
        blobs: Arc<HashSet<Digest>>,
        images: Vec<String>,
    },
    Registry {
        registry: String,
        client: UpstreamClient,
        prefix: Option<RepositoryName>,
    },
}

impl Known {
    pub(crate) async fn open(base: &Base) -> Result<Known> {
        match base {
            Base::Since(old) => {
                let (index, _, entries) = crate::bundle::open_bundle(old).await?;
                let blobs = index
                    .names()
                    .filter_map(|n| n.strip_prefix("blobs/"))
                    .filter_map(|n| n.split_once('/'))
                    .filter_map(|(alg, hex)| format!("{alg}:{hex}").parse().ok())
                    .collect();
                let images = entries
                    .iter()
                    .filter_map(crate::bundle::reference_of)
                    .collect();
                Ok(Known::Blobs {
                    blobs: Arc::new(blobs),
                    images,
                })
            }
            Base::PresentIn {
                registry,
                options,
                prefix,
            } => Ok(Known::Registry {
                registry: registry.clone(),
                client: options.client(registry, None).await?,
                prefix: prefix.clone(),
            }),
        }
    }

    /// The annotation value naming OLD's images, for `--since`.
    pub(crate) fn since(&self) -> Option<String> {
        match self {
            Known::Blobs { images, .. } => serde_json::to_string(images).ok(),
            Known::Registry { .. } => None,
        }
    }

    /// A destination writing `layout` that skips what the site holds, for
    /// the image `original`.
    pub(crate) fn skipping(
        &self,
        layout: LayoutDest,
        original: &berth_reference::ImageReference,
    ) -> Result<SkipKnown> {
        let check = match self {
            Known::Blobs { blobs, .. } => Check::Set(blobs.clone()),
            Known::Registry {
                registry,
                client,
                prefix,
            } => {
                let target = crate::bundle::mirror_target(original, registry, prefix.as_ref())?;
                Check::Registry(client.clone(), target.repository)
            }
        };
        Ok(Guarded {
            inner: layout,
            presence: check,
        })
    }
}

pub(crate) enum Check {
    Set(Arc<HashSet<Digest>>),
    Registry(UpstreamClient, RepositoryName),
}

/// Whether the destination counts a blob as present (so the copy engine
/// neither reads nor sends it).
#[async_trait]
pub(crate) trait Presence<D>: Send + Sync {
    async fn present(&self, inner: &D, desc: &Reference) -> Result<bool>;
}

/// A destination whose `has_blob` is decided by `presence`; everything
/// else is the inner destination's.
pub(crate) struct Guarded<D, P> {
    inner: D,
    presence: P,
}

#[async_trait]
impl<D: Destination, P: Presence<D>> Destination for Guarded<D, P> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn has_blob(&self, desc: &Reference) -> Result<bool> {
        self.presence.present(&self.inner, desc).await
    }

    async fn put_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        self.inner.put_blob(desc, source, progress).await
    }

    async fn put_manifest(&self, manifest: &ManifestBlob, root: bool) -> Result<()> {
        self.inner.put_manifest(manifest, root).await
    }

    async fn commit(&self) -> Result<()> {
        self.inner.commit().await
    }
}

/// A bundle layout that leaves out the blobs the site holds.
pub(crate) type SkipKnown = Guarded<LayoutDest, Check>;

#[async_trait]
impl<D: Destination> Presence<D> for Check {
    async fn present(&self, inner: &D, desc: &Reference) -> Result<bool> {
        let known = match self {
            Check::Set(s) => s.contains(&desc.digest),
            Check::Registry(client, repo) => client
                .blob_exists(repo, &desc.digest)
                .await
                .map_err(|e| TransferError::registry(format!("checking {repo}"), e))?,
        };
        Ok(known || inner.has_blob(desc).await?)
    }
}

/// Loading an incremental bundle: a blob it left out is looked for in the
/// destination — the image's own repository, then mounted from OLD's
/// images' repositories — and is an error naming what to load first when
/// it is in neither.
pub(crate) struct SiteHolds {
    /// Blobs the bundle carries.
    pub carried: Arc<HashSet<Digest>>,
    /// Repositories at the destination a left-out blob may be mounted from.
    pub mount_from: Arc<Vec<RepositoryName>>,
    /// The bundle, for the error.
    pub what: String,
}

pub(crate) type FillFromSite = Guarded<RegistryDest, SiteHolds>;

impl FillFromSite {
    pub(crate) fn new(inner: RegistryDest, presence: SiteHolds) -> Self {
        Guarded { inner, presence }
    }
}

#[async_trait]
impl Presence<RegistryDest> for SiteHolds {
    async fn present(&self, inner: &RegistryDest, desc: &Reference) -> Result<bool> {
        if inner.has_blob(desc).await? {
            return Ok(true);
        }
        if self.carried.contains(&desc.digest) {
            return Ok(false);
        }
        for from in self.mount_from.iter() {
            if inner.mount_from(&desc.digest, from).await {
                return Ok(true);
            }
        }
        Err(TransferError::NotFound(format!(
            "{}: blob {} was left out of this incremental bundle, and {} holds it nowhere: load the bundle it was made since first",
            self.what,
            desc.digest,
            inner.describe(),
        )))
    }
}
