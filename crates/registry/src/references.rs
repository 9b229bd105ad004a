//! The push-time check that everything a manifest references is present:
//! its blobs linked into the repository with the sizes its descriptors
//! give, an index's child manifests stored there.
//!
//! The cost is one lookup per *distinct* digest, never per descriptor: a
//! manifest may name the same layer thousands of times, and checking each
//! occurrence against storage cost a store round trip apiece (1.3 s of CPU
//! for 25,000 layers). Past [`LIST_THRESHOLD`] distinct digests, membership
//! comes from one listing of the repository's links instead of a lookup per
//! digest. Everything here is linear in the size of the manifest (plus, for
//! a large one, the size of the listing).

use std::collections::{HashMap, HashSet};

use berth_manifest::Reference;
use berth_reference::{Algorithm, Digest, RepositoryName};

use crate::{layout, Registry, RegistryError, Result};

/// Distinct digests past which a repository's links are listed once rather
/// than looked up one by one.
pub(crate) const LIST_THRESHOLD: usize = 64;

/// The distinct digests of `refs` in first-seen order, each with the size
/// its descriptors give; two descriptors of one digest with different sizes
/// make the manifest invalid.
pub(crate) fn distinct(refs: &[Reference]) -> Result<Vec<(&Digest, u64)>> {
    let mut seen: HashMap<&Digest, u64> = HashMap::with_capacity(refs.len().min(4096));
    let mut out = Vec::new();
    for r in refs {
        match seen.get(&r.digest) {
            Some(&size) if size != r.size => {
                return Err(RegistryError::ManifestInvalid(format!(
                    "descriptors of {} give two sizes, {size} and {}",
                    r.digest, r.size
                )))
            }
            Some(_) => {}
            None => {
                seen.insert(&r.digest, r.size);
                out.push((&r.digest, r.size));
            }
        }
    }
    Ok(out)
}

/// The hex names under one `_layers/<alg>` or `_manifests/<alg>` directory
/// of a repository, listed once per algorithm on first need.
struct Listing {
    kind: &'static str,
    by_algorithm: HashMap<Algorithm, HashSet<String>>,
}

impl Listing {
    fn new(kind: &'static str) -> Listing {
        Listing {
            kind,
            by_algorithm: HashMap::new(),
        }
    }

    async fn contains(
        &mut self,
        registry: &Registry,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        let alg = digest.algorithm();
        if !self.by_algorithm.contains_key(&alg) {
            let dir = layout::repository(repo)?
                .join(self.kind)?
                .join(alg.as_str())?;
            let names = registry.storage.doc_list(&dir).await?;
            self.by_algorithm.insert(alg, names.into_iter().collect());
        }
        Ok(self
            .by_algorithm
            .get(&alg)
            .is_some_and(|set| set.contains(digest.hex())))
    }
}

impl Registry {
    /// Fail with MANIFEST_BLOB_UNKNOWN (or MANIFEST_INVALID for a size that
    /// does not match) unless every blob and child manifest is present.
    pub(crate) async fn check_references(
        &self,
        repo: &RepositoryName,
        blobs: &[Reference],
        children: &[Reference],
    ) -> Result<()> {
        let blobs = distinct(blobs)?;
        let children = distinct(children)?;
        let listed = blobs.len() + children.len() > LIST_THRESHOLD;
        let mut layers = Listing::new(layout::LAYERS);
        let mut manifests = Listing::new(layout::MANIFESTS);
        for (digest, size) in blobs {
            // A blob is in the repository when it is linked there, or is
            // one of its manifests (an artifact may reference a manifest).
            let linked = if listed {
                layers.contains(self, repo, digest).await?
                    || manifests.contains(self, repo, digest).await?
            } else {
                self.blob_linked(repo, digest).await?
            };
            if !linked {
                return Err(RegistryError::ManifestBlobUnknown(digest.clone()));
            }
            match self.storage.blob_size(digest).await? {
                None => return Err(RegistryError::ManifestBlobUnknown(digest.clone())),
                Some(stored) if stored != size => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "descriptor of {digest} says {size} bytes, the blob has {stored}"
                    )))
                }
                Some(_) => {}
            }
        }
        for (digest, _) in children {
            let present = if listed {
                manifests.contains(self, repo, digest).await?
            } else {
                self.storage
                    .doc_get(&layout::manifest_revision(repo, digest)?)
                    .await?
                    .is_some()
            };
            if !present {
                return Err(RegistryError::ManifestBlobUnknown(digest.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(c: char, size: u64) -> Reference {
        Reference {
            digest: format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .expect("digest"),
            size,
            media_type: "application/octet-stream".into(),
        }
    }

    #[test]
    fn duplicates_collapse_and_disagreeing_sizes_are_invalid() {
        let refs: Vec<Reference> = (0..25_000)
            .map(|i| if i % 2 == 0 { r('a', 7) } else { r('b', 9) })
            .collect();
        let d = distinct(&refs).expect("consistent");
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].0, d[0].1), (&refs[0].digest, 7));
        assert_eq!((d[1].0, d[1].1), (&refs[1].digest, 9));
        let bad = [r('a', 7), r('b', 9), r('a', 8)];
        assert!(matches!(
            distinct(&bad),
            Err(RegistryError::ManifestInvalid(_))
        ));
    }
}
