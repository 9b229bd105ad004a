//! The registry client berth uses to talk to other registries: the
//! pull-through cache's upstreams, and the far end of `berth copy`,
//! `inspect`, `ls`, `tags` and `rm`.
//!
//! One [`UpstreamClient`] per registry host, built from an [`UpstreamConfig`]
//! (base URL, credentials, CA file, `insecure`, timeouts). It speaks the auth
//! flows registries really use: anonymous first; on a 401, the
//! `WWW-Authenticate` challenge decides between a Bearer token from the
//! realm (anonymous or with Basic credentials, cached per scope until shortly
//! before `expires_in`) and Basic auth; the request is retried once.
//!
//! Modules, by what each owns:
//! - `config`: per-upstream settings and defaults (`docker.io` →
//!   `registry-1.docker.io`, `--upstream HOST=URL`).
//! - `auth_file`: [`Credentials`], and reading Docker `config.json` /
//!   Podman `auth.json`.
//! - `challenge`: `WWW-Authenticate` parsing.
//! - `auth`: scopes, the token cache and the per-registry auth state.
//! - `client`: the request path and the read operations (manifests, blobs,
//!   tags, catalog).
//! - `upload`: uploads, mounts, manifest puts and deletes.
//! - `blob`: streamed blob bodies, verified against their digest.
//! - `stall`: abandoning response bodies that stop making progress (the
//!   stall timeout; connect and first-byte timeouts are in `client`).
//! - `error`: [`UpstreamError`] and "unavailable" vs "not found".
//! - `policy`: where else than the registry the client may connect
//!   (redirects, token realms: https and public addresses only) and where
//!   credentials may go.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_upstream::{credentials_from_default_files, UpstreamClient, UpstreamConfig};
//! use futures::StreamExt;
//!
//! let creds = credentials_from_default_files("docker.io", None)?;
//! let client = UpstreamClient::new(UpstreamConfig::for_registry("docker.io")?.with_credentials(creds))?;
//! let repo = "library/alpine".parse()?;
//! let manifest = client.manifest_get(&repo, &"3.20".parse()?, &[]).await?;
//! println!("{} {}", manifest.media_type, manifest.digest);
//! # let layer: berth_reference::Digest = manifest.digest.clone();
//! let mut body = client.blob_get(&repo, &layer, None).await?;
//! while let Some(chunk) = body.stream.next().await {
//!     let _bytes = chunk?; // verified against the digest by the end of the stream
//! }
//! # Ok(()) }
//! ```
//!
//! Identifiers ([`Digest`](berth_reference::Digest),
//! [`RepositoryName`](berth_reference::RepositoryName),
//! [`ManifestRef`](berth_reference::ManifestRef)) come from `berth-reference`.
#![forbid(unsafe_code)]

mod auth;
mod auth_file;
mod blob;
mod challenge;
mod client;
mod config;
mod error;
mod policy;
mod prefetch;
mod referrers;
mod stall;
mod upload;

pub use auth::{
    merge_scopes, refresh_margin, Scope, TokenCache, TokenResponse, DEFAULT_TOKEN_LIFETIME,
};
pub use auth_file::{
    credentials_from_default_files, default_auth_file_paths, AuthFile, AuthFileError, Credentials,
};
pub use blob::{BlobBody, BlobMeta, BlobStream, ByteRange, ContentRange};
pub use challenge::{parse_www_authenticate, BearerChallenge, Challenge};
pub use client::{
    Manifest, ManifestMeta, Page, UpstreamClient, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES, MAX_MANIFEST_SIZE, OCI_INDEX, OCI_MANIFEST,
};
pub use config::{
    default_base_url, parse_upstream_override, UpstreamConfig, UpstreamTimeouts,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_READ_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALL_TIMEOUT, STALL_MIN_BYTES,
};
pub use error::{
    parse_spec_errors, SpecError, Timeout, TimeoutPhase, TransportCause, UpstreamError,
};
pub use policy::is_public;
pub use referrers::{referrers_tag, Referrer};
pub use upload::{MountOutcome, UploadSession, DEFAULT_CHUNK_SIZE};
