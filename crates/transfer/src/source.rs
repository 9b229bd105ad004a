//! The two sides of every transfer: [`Source`] (where an image is read
//! from) and [`Destination`] (where it is written). Each transport
//! implements them; the copy engine and `inspect` only see these traits.

use std::pin::Pin;

use async_trait::async_trait;
use berth_manifest::Reference;
use berth_reference::Digest;
use bytes::Bytes;
use futures::Stream;

use crate::error::{Result, TransferError};
use crate::registry::RegistrySource;

/// A stream of blob bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// A manifest's exact bytes, with its media type and digest.
#[derive(Debug, Clone)]
pub struct ManifestBlob {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

impl ManifestBlob {
    /// Check `bytes` against `digest` and wrap them.
    pub fn verified(bytes: Bytes, media_type: String, digest: &Digest, what: &str) -> Result<Self> {
        let actual = Digest::of_bytes(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(TransferError::DigestMismatch {
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(ManifestBlob {
            bytes,
            media_type,
            digest: actual,
        })
    }

    pub fn descriptor(&self) -> Reference {
        Reference {
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            media_type: self.media_type.clone(),
        }
    }
}

/// A blob being read, starting at `offset` (0 unless a resumed read was
/// asked for and the source could honour it).
pub struct BlobRead {
    pub offset: u64,
    pub stream: ByteStream,
}

/// Where an image is read from.
#[async_trait]
pub trait Source: Send + Sync {
    /// How users name it, for messages.
    fn describe(&self) -> String;
    /// The manifest (or index) the reference names.
    async fn root(&self) -> Result<ManifestBlob>;
    /// A manifest referenced by digest from an index.
    async fn manifest(&self, desc: &Reference) -> Result<ManifestBlob>;
    /// A blob's bytes from `offset` (sources that cannot seek start at 0 and
    /// say so in [`BlobRead::offset`]).
    async fn blob(&self, desc: &Reference, offset: u64) -> Result<BlobRead>;
    /// The registry repository behind this source, for cross-repository mounts.
    fn as_registry(&self) -> Option<&RegistrySource> {
        None
    }
}

/// Where an image is written.
#[async_trait]
pub trait Destination: Send + Sync {
    fn describe(&self) -> String;
    /// Whether the destination already holds this blob (it is then skipped).
    async fn has_blob(&self, desc: &Reference) -> Result<bool>;
    /// Obtain the blob without transferring its bytes (a registry's
    /// cross-repository mount). `false` when that is not possible.
    async fn mount_blob(&self, _desc: &Reference, _source: &dyn Source) -> Result<bool> {
        Ok(false)
    }
    /// Transfer one blob from `source`, reporting bytes through `progress`.
    async fn put_blob(
        &self,
        desc: &Reference,
        source: &dyn Source,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()>;
    /// Store a manifest: a child of an index (`root == false`, by digest) or
    /// the one the destination reference names (`root == true`).
    async fn put_manifest(&self, manifest: &ManifestBlob, root: bool) -> Result<()>;
    /// Finish (write index files, close archives). Called once, last.
    async fn commit(&self) -> Result<()> {
        Ok(())
    }
}
