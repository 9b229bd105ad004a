//! Blobs as seen through a repository: a blob is readable in a repository
//! only if it was pushed, mounted or cached there (or is one of its
//! manifests), although its bytes are stored once for all repositories.

use berth_reference::{Digest, RepositoryName};

use crate::{layout, ByteRange, ByteStream, Registry, RegistryError, Result};

/// A blob known to be in a repository, with its size.
#[derive(Debug, Clone)]
pub struct OpenBlob {
    pub size: u64,
    digest: Digest,
}

impl Registry {
    /// Whether `digest` belongs to `repo` (as a layer/config or a manifest).
    pub(crate) async fn blob_linked(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        let s = &self.storage;
        Ok(s.doc_get(&layout::layer_link(repo, digest)?)
            .await?
            .is_some()
            || s.doc_get(&layout::manifest_revision(repo, digest)?)
                .await?
                .is_some())
    }

    /// Make a stored blob part of `repo` (after an upload, a mount or a cache fill).
    pub async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.storage
            .doc_put(
                &layout::layer_link(repo, digest)?,
                crate::inventory::link_stamp(),
            )
            .await?;
        self.note_repository(repo).await;
        Ok(())
    }

    /// Size of a blob in a repository; `BLOB_UNKNOWN` if it is not there.
    pub async fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        if !self.blob_linked(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        self.storage
            .blob_size(digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))
    }

    /// Check that a blob is in a repository and how big it is, once, for a
    /// read that follows (a GET needs the size for its headers and ranges,
    /// then the bytes: the membership lookup is not repeated).
    pub async fn blob_open(&self, repo: &RepositoryName, digest: &Digest) -> Result<OpenBlob> {
        let size = self.blob_size(repo, digest).await?;
        Ok(OpenBlob {
            size,
            digest: digest.clone(),
        })
    }

    /// Stream a blob found by [`Registry::blob_open`], or a range of it.
    pub async fn blob_stream(
        &self,
        blob: &OpenBlob,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.storage
            .blob_read(&blob.digest, range)
            .await
            .map_err(|e| match e {
                berth_storage::StorageError::BlobNotFound => {
                    RegistryError::BlobUnknown(blob.digest.clone())
                }
                other => other.into(),
            })
    }

    /// Stream a blob (or a range of it) from a repository.
    pub async fn blob_read(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let blob = self.blob_open(repo, digest).await?;
        self.blob_stream(&blob, range).await
    }

    /// Remove a blob from a repository. Its bytes stay until garbage
    /// collection finds no repository using them.
    pub async fn blob_delete(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        if self
            .storage
            .doc_delete(&layout::layer_link(repo, digest)?)
            .await?
        {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }

    /// Cross-repository mount: link `digest` into `repo` if `from` has it.
    /// Returns `false` when it could not (the client then uploads).
    pub async fn blob_mount(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        if !self.blob_linked(from, digest).await? || self.storage.blob_size(digest).await?.is_none()
        {
            return Ok(false);
        }
        self.link_blob(repo, digest).await?;
        Ok(true)
    }
}
