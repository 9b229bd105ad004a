//! Where the registry keeps its metadata in the document store. Everything a
//! repository owns lives under `repositories/<name>/`, in children whose names
//! start with `_` (which no repository name component can), so that the
//! catalog can tell repositories from the path components above them:
//!
//! - `_layers/<alg>/<hex>`: the blob is part of this repository;
//! - `_manifests/<alg>/<hex>`: a manifest revision; the value is its media type;
//! - `_tags/<tag>`: the value is the digest the tag points at;
//! - `_referrers/<alg>/<subject hex>/<alg>-<hex>`: a descriptor of a manifest
//!   whose `subject` is that digest;
//! - `_pulls/<tag>`: when the tag was last pulled (written at most once a
//!   minute), for retention rules;
//! - `_cached/<alg>/<hex>`: the manifest was fetched from the mirror's
//!   upstream (evictable); the value is when it was last pulled.
//!
//! Upload sessions are recorded as `uploads/<id>` (the owning repository).

use berth_reference::{Digest, RepositoryName, Tag};
use berth_storage::{DocKey, KeyError};

pub const REPOSITORIES: &str = "repositories";
pub const LAYERS: &str = "_layers";
pub const MANIFESTS: &str = "_manifests";
pub const TAGS: &str = "_tags";
pub const REFERRERS: &str = "_referrers";
pub const CACHED: &str = "_cached";
pub const PULLS: &str = "_pulls";

pub fn repository(repo: &RepositoryName) -> Result<DocKey, KeyError> {
    DocKey::new([REPOSITORIES, repo.as_str()])
}

pub fn layer_link(repo: &RepositoryName, d: &Digest) -> Result<DocKey, KeyError> {
    DocKey::new([
        REPOSITORIES,
        repo.as_str(),
        LAYERS,
        d.algorithm().as_str(),
        d.hex(),
    ])
}

pub fn manifest_revision(repo: &RepositoryName, d: &Digest) -> Result<DocKey, KeyError> {
    DocKey::new([
        REPOSITORIES,
        repo.as_str(),
        MANIFESTS,
        d.algorithm().as_str(),
        d.hex(),
    ])
}

pub fn cached_record(repo: &RepositoryName, d: &Digest) -> Result<DocKey, KeyError> {
    DocKey::new([
        REPOSITORIES,
        repo.as_str(),
        CACHED,
        d.algorithm().as_str(),
        d.hex(),
    ])
}

pub fn tag_pull(repo: &RepositoryName, tag: &Tag) -> Result<DocKey, KeyError> {
    DocKey::new([REPOSITORIES, repo.as_str(), PULLS, tag.as_str()])
}

pub fn tags(repo: &RepositoryName) -> Result<DocKey, KeyError> {
    DocKey::new([REPOSITORIES, repo.as_str(), TAGS])
}

pub fn tag(repo: &RepositoryName, tag: &Tag) -> Result<DocKey, KeyError> {
    DocKey::new([REPOSITORIES, repo.as_str(), TAGS, tag.as_str()])
}

pub fn referrers(repo: &RepositoryName, subject: &Digest) -> Result<DocKey, KeyError> {
    DocKey::new([
        REPOSITORIES,
        repo.as_str(),
        REFERRERS,
        subject.algorithm().as_str(),
        subject.hex(),
    ])
}

pub fn referrer(
    repo: &RepositoryName,
    subject: &Digest,
    referrer: &Digest,
) -> Result<DocKey, KeyError> {
    let entry = format!("{}-{}", referrer.algorithm(), referrer.hex());
    referrers(repo, subject)?.join(&entry)
}

pub fn upload(id: &berth_storage::UploadId) -> Result<DocKey, KeyError> {
    DocKey::new(["uploads", &id.to_string()])
}
