//! Image transports and the copy engine: everything `berth copy`, `inspect`,
//! `cache` and `bundle` do with images, independent of the command line.
//!
//! A [`Source`] yields a root manifest (exact bytes), child manifests and
//! blob streams; a [`Destination`] accepts them. Transports, by module:
//! - `transport`: parsing skopeo-style references into an [`ImageRef`];
//! - `registry`: `docker://` over `berth-upstream` (auth, TLS, mounts);
//! - `layout`: OCI image layout directories (`oci:DIR[:TAG]`);
//! - `archive`: tar files read in place through an entry index
//!   (`oci-archive:`), and written from a staged layout;
//! - `docker_archive`: what `docker save` writes, read as a Docker schema2
//!   image whose manifest is computed (the archive has no manifest bytes);
//! - `copy`: the engine (dedup, skip, mount, bounded parallelism, exact
//!   manifest bytes, platform selection) and [`Progress`] reporting;
//! - `inspect`: a summary of an image for `berth inspect`;
//! - `bundle`: air-gap bundles (many images in one OCI-layout tar);
//! - `error`: [`TransferError`] and its [`ErrorKind`] for exit codes.
#![forbid(unsafe_code)]

mod archive;
pub mod bundle;
mod compress;
mod copy;
mod docker_archive;
mod error;
pub mod incremental;
pub mod inspect;
mod layout;
mod platform;
pub mod referrers;
mod registry;
mod source;
pub mod sync;
mod tar_codec;
mod transport;

pub use archive::{OciArchiveDest, TarIndex};
pub use compress::LayerCompression;
pub use copy::{copy, BlobOutcome, CopyOptions, CopyReport, NoProgress, Progress, Selection};
pub use docker_archive::DockerArchiveSource;
pub use error::{ErrorKind, Result, TransferError};
pub use layout::{LayoutDest, LayoutSource, ANNOTATION_REF_NAME};
pub use platform::Platform;
pub use registry::{
    is_loopback, parse_registry_prefix, parse_registry_target, NullDest, RegistryDest,
    RegistryOptions, RegistrySource,
};
pub use source::{BlobRead, ByteStream, Destination, ManifestBlob, Source};
pub use tar_codec::TarCompression;
pub use transport::ImageRef;

/// Open a reference for reading, as it is.
pub async fn open_source(r: &ImageRef, opts: &RegistryOptions) -> Result<Box<dyn Source>> {
    open_source_with(r, opts, LayerCompression::None).await
}

/// Open a reference for copying: plain-tar layers (docker-archive) are
/// treated as `compression` says.
pub async fn open_source_with(
    r: &ImageRef,
    opts: &RegistryOptions,
    compression: LayerCompression,
) -> Result<Box<dyn Source>> {
    Ok(match r {
        ImageRef::Docker(reference) => Box::new(RegistrySource::open(reference, opts).await?),
        ImageRef::Oci { dir, tag } => Box::new(LayoutSource::open_dir(dir, tag.clone()).await?),
        ImageRef::OciArchive { file, tag } => {
            Box::new(LayoutSource::open_archive(file, tag.clone()).await?)
        }
        ImageRef::DockerArchive { file, reference } => {
            Box::new(DockerArchiveSource::open_with(file, reference.clone(), compression).await?)
        }
    })
}

/// Open a reference for writing.
pub async fn open_destination(
    r: &ImageRef,
    opts: &RegistryOptions,
) -> Result<Box<dyn Destination>> {
    Ok(match r {
        ImageRef::Docker(reference) => Box::new(RegistryDest::open(reference, opts).await?),
        ImageRef::Oci { dir, tag } => Box::new(LayoutDest::create(dir, tag.clone()).await?),
        ImageRef::OciArchive { file, tag } => {
            Box::new(OciArchiveDest::create(file, tag.clone()).await?)
        }
        ImageRef::DockerArchive { file, reference } => {
            Box::new(docker_archive::DockerArchiveDest::create(file, reference.clone()).await?)
        }
    })
}
