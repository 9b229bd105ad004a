//! Signatures, attestations and SBOMs travel with images: what refers to
//! an image in its registry, as references to copy beside it.
//!
//! - OCI 1.1 referrers, by digest (the referrers API, or the spec's
//!   `<alg>-<hex>` tag where the registry lacks it). Pushed by digest, a
//!   registry with the API indexes each by its `subject`.
//! - That `<alg>-<hex>` tag itself when the source has one, so that a
//!   destination without the API (Distribution 2.8) can still list them.
//! - cosign's tag scheme: `<alg>-<hex>.sig`, `.att` and `.sbom`.

use berth_reference::{Digest, ImageReference, ManifestRef, Tag};

use crate::error::{Result, TransferError};
use crate::registry::RegistrySource;

/// cosign's tag suffixes: signatures, attestations, SBOMs.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

impl RegistrySource {
    /// What refers to `subject` (an image this source holds), each as a
    /// reference in the same repository: by digest, or by tag.
    pub async fn referrer_refs(&self, subject: &Digest) -> Result<Vec<ImageReference>> {
        let name = format!(
            "docker://{}/{}@{subject}",
            self.reference.registry, self.reference.repository
        );
        let ctx = |what: &str| {
            let context = format!("{what} of {name}");
            move |e: berth_upstream::UpstreamError| TransferError::registry(context, e)
        };
        let mut out = Vec::new();
        for r in self
            .client
            .referrers(&self.repo, subject)
            .await
            .map_err(ctx("listing the referrers"))?
        {
            out.push(self.at(None, Some(r.digest)));
        }
        let base = format!("{}-{}", subject.algorithm().as_str(), subject.hex());
        let tags = std::iter::once(base.clone())
            .chain(COSIGN_SUFFIXES.iter().map(|s| format!("{base}.{s}")));
        for tag in tags {
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            match self
                .client
                .manifest_head(
                    &self.repo,
                    &ManifestRef::Tag(tag.clone()),
                    &berth_manifest::media_type::ALL,
                )
                .await
            {
                Ok(_) => out.push(self.at(Some(tag), None)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ctx("looking for cosign's tags")(e)),
            }
        }
        Ok(out)
    }

    /// This image's repository, at `tag` or `digest`.
    fn at(&self, tag: Option<Tag>, digest: Option<Digest>) -> ImageReference {
        ImageReference {
            registry: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            tag,
            digest,
        }
    }

    /// The same registry, repository and client, reading `reference`.
    pub fn sibling(&self, reference: ImageReference) -> RegistrySource {
        RegistrySource::with_client(self.client.clone(), reference)
    }
}
