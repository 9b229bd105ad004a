//! [`UpstreamClient`]: one registry's HTTP client, and the request path every
//! operation goes through (authenticate, send, answer a 401 once, map the
//! status to an [`UpstreamError`]).
//!
//! The read operations the pull-through cache needs live here (manifests,
//! blobs, listings); uploads, mounts and deletes are in `upload.rs`.
//! Everything is built on one private `execute`, so that the auth flow and
//! the error mapping exist exactly once.
//!
//! Submodules: `request` (the request path: auth, sending, the 401 retry,
//! status mapping and bounded body reads), `manifests`, `blobs`, `listing`
//! (tags and catalog, with `Link` pagination).

use std::sync::Arc;
use std::time::Duration;

use berth_reference::{RepositoryName, DOCKER_HUB};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Response};
use url::Url;

use crate::auth::Authenticator;
use crate::config::UpstreamConfig;
use crate::error::UpstreamError;
use crate::policy::NetPolicy;

mod blobs;
mod listing;
mod manifests;
mod request;
#[cfg(test)]
mod tests;

pub use listing::Page;
pub use manifests::{Manifest, ManifestMeta};
pub(crate) use request::{check, read_bounded, Req, ReqBody};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker schema2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What manifest requests accept when the caller passes no list.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// Largest manifest accepted (the spec asks registries to take at least 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 8 << 20;
/// Largest listing page or error body read.
const MAX_JSON_BODY: usize = 16 << 20;
const MAX_ERROR_BODY: usize = 64 << 10;
/// Most pages followed by `tags_list`/`catalog`.
const MAX_PAGES: usize = 10_000;

pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

pub(crate) struct Inner {
    pub registry: String,
    /// Serialises token fetches (see `authorize`).
    pub token_fetch: tokio::sync::Mutex<()>,
    pub base: Url,
    pub http: reqwest::Client,
    pub auth: Authenticator,
    pub policy: NetPolicy,
    pub request_timeout: Duration,
    /// Request sent (connecting included) to response headers, for
    /// requests without a body.
    pub first_byte_timeout: Duration,
    /// See `stall`.
    pub stall_timeout: Duration,
    /// Sent with every request (see `UpstreamConfig::extra_headers`).
    pub extra_headers: reqwest::header::HeaderMap,
}

/// A client for one upstream registry. Cheap to clone; clones share the
/// connection pool and the token cache.
#[derive(Clone)]
pub struct UpstreamClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("registry", &self.inner.registry)
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_u64(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl UpstreamClient {
    /// Build a client. Fails on an unreadable CA file or an unusable TLS setup.
    pub fn new(config: UpstreamConfig) -> Result<UpstreamClient, UpstreamError> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let policy = NetPolicy::new(&base, config.insecure, &config.trusted_hosts);
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            // A safety net only: the first-byte and stall timeouts govern.
            .read_timeout(
                config
                    .read_timeout
                    .max(config.first_byte_timeout)
                    .max(config.stall_timeout),
            )
            // Blob GETs redirect to object stores/CDNs: followed only to
            // https on public addresses (see `policy`); reqwest drops the
            // Authorization header when a redirect leaves the origin.
            .redirect(policy.redirect_policy())
            .dns_resolver(policy.resolver())
            .tls_danger_accept_invalid_certs(config.insecure);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                UpstreamError::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| UpstreamError::Config(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(UpstreamError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| UpstreamError::Config(format!("cannot build the HTTP client: {e}")))?;
        let mut extra_headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.extra_headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| UpstreamError::Config(format!("header name {name:?}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| UpstreamError::Config(format!("the value of header {name}")))?;
            value.set_sensitive(true);
            extra_headers.insert(name, value);
        }
        Ok(UpstreamClient {
            inner: Arc::new(Inner {
                registry: config.registry.clone(),
                token_fetch: tokio::sync::Mutex::new(()),
                auth: Authenticator::new(config.credentials.clone(), base.clone()),
                base,
                http,
                policy,
                request_timeout: config.request_timeout,
                first_byte_timeout: config.first_byte_timeout,
                stall_timeout: config.stall_timeout,
                extra_headers,
            }),
        })
    }

    /// The registry host this client talks to, as users name it.
    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    /// Where its API answers.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The repository's name on the upstream: Docker Hub's official images
    /// live under `library/`, which callers may have left off.
    pub fn remote_name(&self, repo: &RepositoryName) -> String {
        let name = repo.as_str();
        if self.inner.registry == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        }
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.inner
            .base
            .join(path)
            .map_err(|e| UpstreamError::Config(format!("cannot build a URL for {path:?}: {e}")))
    }

    pub(crate) fn repo_url(&self, repo: &RepositoryName, tail: &str) -> Result<Url, UpstreamError> {
        self.url(&format!("v2/{}/{tail}", self.remote_name(repo)))
    }

    /// Resolve a `Location` header (absolute, or relative to the registry).
    pub(crate) fn location(&self, resp: &Response) -> Result<Url, UpstreamError> {
        let loc = header_str(resp.headers(), "location").ok_or_else(|| {
            UpstreamError::Protocol(format!("{} answered without a Location", resp.url()))
        })?;
        resp.url()
            .join(loc)
            .map_err(|e| UpstreamError::Protocol(format!("Location {loc:?} is not a URL: {e}")))
    }

    /// Check the registry answers `/v2/` (authenticating if it asks).
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let req = self.req(Method::GET, self.url("v2/")?, Vec::new());
        let resp = self.execute(req).await?;
        check(resp, "GET /v2/").await.map(|_| ())
    }
}
