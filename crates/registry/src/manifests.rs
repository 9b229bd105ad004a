//! Manifests: accepted only when they parse and everything they reference is
//! already in the repository; stored byte for byte as pushed, with the media
//! type they were pushed as.

use berth_manifest::{Manifest, ManifestError};
use berth_reference::{Digest, ManifestRef, RepositoryName};
use bytes::Bytes;

use crate::memo::key;
use crate::{layout, Registry, RegistryError, Result};

/// A manifest as stored: the exact bytes, their digest and media type.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a successful manifest push tells the client.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    /// The `subject` digest, for the `OCI-Subject` response header.
    pub subject: Option<Digest>,
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        match e {
            ManifestError::TooLarge => RegistryError::SizeInvalid(e.to_string()),
            ManifestError::Schema1 | ManifestError::UnsupportedMediaType(_) => {
                RegistryError::ManifestInvalid(e.to_string())
            }
            ManifestError::Invalid(m) => RegistryError::ManifestInvalid(m),
        }
    }
}

impl Registry {
    /// Push a manifest under a tag or a digest.
    pub async fn manifest_put(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        let manifest = Manifest::parse(&bytes, content_type)?;
        let digest = match reference {
            ManifestRef::Digest(expected) => {
                let actual = Digest::of_bytes(expected.algorithm(), &bytes);
                if &actual != expected {
                    return Err(RegistryError::DigestInvalid {
                        expected: expected.to_string(),
                        actual: Some(actual.to_string()),
                    });
                }
                actual
            }
            ManifestRef::Tag(_) => Digest::sha256_of(&bytes),
        };
        // Held until the manifest is stored: GC keeps what it references,
        // and its own bytes (a re-push of a deleted manifest finds them
        // stored, unreferenced and old, and writes only its records).
        let _fence = self.fence_enter(&manifest, &digest).await;
        // Once per distinct digest, not per descriptor (see `references`).
        self.check_references(repo, &manifest.blobs, &manifest.manifests)
            .await?;

        let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
        let tag = match reference {
            ManifestRef::Tag(t) => Some(t),
            ManifestRef::Digest(_) => None,
        };
        self.store_manifest(repo, &digest, &manifest, bytes, tag)
            .await?;
        self.pin(repo, &digest).await?;
        drop(_fence);
        // Other replicas' collections, on shared storage.
        self.shared_fence_after_push(repo, &digest, &manifest)
            .await?;
        Ok(PutManifest { digest, subject })
    }

    /// Store a manifest fetched from an upstream by the pull-through cache.
    /// Its blobs and children are not required to be here yet: they are
    /// fetched when a client asks for them. The digest was verified by the
    /// caller against the bytes.
    pub async fn manifest_store_cached(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        content_type: Option<&str>,
        bytes: Bytes,
        tag: Option<&berth_reference::Tag>,
    ) -> Result<StoredManifest> {
        let manifest = Manifest::parse(&bytes, content_type)?;
        let _fence = self.fence_enter(&manifest, digest).await;
        let media_type = manifest.media_type.clone();
        // Pushed content stays pinned when the cache stores it again.
        let pinned = self
            .storage
            .doc_get(&layout::manifest_revision(repo, digest)?)
            .await?
            .is_some()
            && self
                .storage
                .doc_get(&layout::cached_record(repo, digest)?)
                .await?
                .is_none();
        self.store_manifest(repo, digest, &manifest, bytes.clone(), tag)
            .await?;
        if !pinned {
            self.mark_cached(repo, digest).await?;
        }
        Ok(StoredManifest {
            digest: digest.clone(),
            media_type,
            bytes,
        })
    }

    async fn store_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        manifest: &Manifest,
        bytes: Bytes,
        tag: Option<&berth_reference::Tag>,
    ) -> Result<()> {
        let size = bytes.len() as u64;
        self.storage.blob_put(digest, bytes).await?;
        let revision = layout::manifest_revision(repo, digest)?;
        let written = self
            .storage
            .doc_put(
                &revision,
                crate::inventory::revision_record(&manifest.media_type),
            )
            .await;
        // A re-push may change the media type it is served with.
        self.manifest_memo
            .remove(&key(repo.as_str(), &digest.to_string()));
        written?;
        if let Some(subject) = &manifest.subject {
            self.referrer_add(repo, &subject.digest, digest, size, manifest)
                .await?;
        }
        if let Some(tag) = tag {
            self.tag_write(repo, tag, digest).await?;
        }
        self.note_repository(repo).await;
        Ok(())
    }

    /// Fetch a manifest by tag or digest.
    pub async fn manifest_get(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<StoredManifest> {
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        let digest = match reference {
            ManifestRef::Digest(d) => d.clone(),
            ManifestRef::Tag(t) => self.tag_resolve(repo, t).await?.ok_or_else(unknown)?,
        };
        let k = key(repo.as_str(), &digest.to_string());
        if let Some(stored) = self.manifest_memo.get(&k) {
            return Ok(stored);
        }
        let token = self.manifest_memo.token();
        let media_type = self
            .storage
            .doc_get(&layout::manifest_revision(repo, &digest)?)
            .await?
            .ok_or_else(unknown)?;
        let stream = match self.storage.blob_read(&digest, None).await {
            Ok(s) => s,
            Err(berth_storage::StorageError::BlobNotFound) => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let bytes = berth_storage::fs::collect(stream)
            .await
            .map_err(berth_storage::StorageError::from)?;
        // Manifests are small: check every read against the digest, so that
        // a damaged copy is never served (a mirror fetches it again instead).
        let actual = Digest::of_bytes(digest.algorithm(), &bytes);
        if actual != digest {
            tracing::error!(repository = %repo, %digest, %actual, size = bytes.len(),
                "stored manifest does not match its digest; not serving it");
            return Err(unknown());
        }
        let stored = StoredManifest {
            digest,
            media_type: crate::inventory::parse_revision(&media_type).0,
            bytes: Bytes::from(bytes),
        };
        self.manifest_memo.fill(token, k, stored.clone());
        Ok(stored)
    }

    /// Delete by digest (the manifest, every tag pointing at it, and its
    /// referrer entry) or by tag (just the tag).
    pub async fn manifest_delete(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<()> {
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        match reference {
            ManifestRef::Tag(t) => {
                if self.tag_remove(repo, t).await? {
                    Ok(())
                } else {
                    Err(unknown())
                }
            }
            ManifestRef::Digest(d) => {
                let stored = self.manifest_get(repo, reference).await?;
                if let Ok(m) = Manifest::parse(&stored.bytes, Some(&stored.media_type)) {
                    if let Some(subject) = m.subject {
                        self.storage
                            .doc_delete(&layout::referrer(repo, &subject.digest, d)?)
                            .await?;
                    }
                }
                for tag in self.tags_pointing_at(repo, d).await? {
                    self.tag_remove(repo, &tag).await?;
                }
                let removed = self
                    .storage
                    .doc_delete(&layout::manifest_revision(repo, d)?)
                    .await;
                self.manifest_memo
                    .remove(&key(repo.as_str(), &d.to_string()));
                if removed? {
                    Ok(())
                } else {
                    Err(unknown())
                }
            }
        }
    }
}
