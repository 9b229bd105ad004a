//! Identifiers of the OCI world, parsed once at the edge so that nothing
//! downstream (storage paths above all) ever sees an unchecked string.
//!
//! - [`Digest`]: `algorithm:encoded`, with streaming [`DigestHasher`]s.
//! - [`RepositoryName`] and [`Tag`]: the distribution spec's grammars.
//! - [`mirror_component`] and [`mirror_host`]: how a mirrored registry is
//!   spelled as a repository's first component (`registry.local__5000`).
//! - [`ManifestRef`]: the `<reference>` of `/v2/<name>/manifests/<reference>`.
//! - [`ImageReference`]: a user-facing image reference with Docker's normalisation
//!   (`alpine` = `docker.io/library/alpine:latest`).
//! - [`RepositoryPattern`] and [`glob_match`]: patterns configuration uses to
//!   select repositories and tags.
#![forbid(unsafe_code)]

mod digest;
mod image;
mod mirror;
mod name;
mod pattern;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use image::{
    normalise_registry, ImageReference, ImageReferenceError, DOCKER_HUB, DOCKER_HUB_ENDPOINT,
};
pub use mirror::{mirror_component, mirror_host, PORT_SEPARATOR};
pub use name::{is_registry_host, ManifestRef, NameError, RepositoryName, Tag};
pub use pattern::{glob_match, PatternError, RepositoryPattern};
