//! [`UpstreamClient`]: one registry's HTTP client, and the request path every
//! operation goes through (authenticate, send, answer a 401 once, map the
//! status to an [`UpstreamError`]).
//!
//! The read operations the pull-through cache needs live here (manifests,
//! blobs, listings); uploads, mounts and deletes are in `upload.rs`.
//! Everything is built on one private `execute`, so that the auth flow and
//! the error mapping exist exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_reference::{Algorithm, Digest, ManifestRef, RepositoryName, DOCKER_HUB};
use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::auth::{max_token_response, token_url, Authenticator, Plan, Scope, TokenResponse};
use crate::blob::{BlobBody, BlobMeta, BlobStream, ByteRange, ContentRange, Verifying};
use crate::challenge::challenges_from_headers;
use crate::config::UpstreamConfig;
use crate::error::{parse_retry_after, TimeoutPhase, UpstreamError};
use crate::policy::NetPolicy;
use crate::stall::{StallClock, Stalling};

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

/// Facts about a manifest from a HEAD (or, when the HEAD lacked them, a GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestMeta {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest's bytes exactly as served, with its media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// Computed from the bytes (and checked against the reference when that
    /// is a digest).
    pub digest: Digest,
}

/// One page of a listing, and where the next one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// The `Link: <…>; rel="next"` target, when there is more.
    pub next: Option<Url>,
}

/// A request body.
pub(crate) enum ReqBody {
    Empty,
    /// Resendable (after a 401).
    Bytes(Bytes),
    /// Sent once: a 401 on it is final, so the auth flow runs beforehand.
    Stream(reqwest::Body),
}

/// One request, before auth.
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
    pub scopes: Vec<Scope>,
    /// Total timeout; `None` for blob transfers.
    pub timeout: Option<Duration>,
}

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
}

/// The stall window of the request a response answers, carried in the
/// response's extensions so that every body reader finds it.
#[derive(Debug, Clone, Copy)]
struct StallWindow(Duration);

/// The stall window a response's body is read under.
fn stall_window(resp: &Response) -> Duration {
    resp.extensions()
        .get::<StallWindow>()
        .map_or(crate::config::DEFAULT_STALL_TIMEOUT, |w| w.0)
}

/// Run `send` (a request's `send()`), failing with a first-byte timeout when
/// no response headers arrive within `limit`.
async fn within_first_byte<F>(
    limit: Duration,
    what: &str,
    send: F,
) -> Result<Response, UpstreamError>
where
    F: std::future::Future<Output = Result<Response, reqwest::Error>>,
{
    match tokio::time::timeout(limit, send).await {
        Ok(r) => r.map_err(|e| UpstreamError::transport(what, e)),
        Err(_) => Err(UpstreamError::timeout(what, TimeoutPhase::FirstByte, limit)),
    }
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

/// `application/json; charset=utf-8` → `application/json`.
fn bare_media_type(v: &str) -> &str {
    v.split(';').next().unwrap_or("").trim()
}

/// Media type of a manifest whose `Content-Type` was missing or generic:
/// its `mediaType` field, else its shape (OCI allows omitting the field).
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    match p {
        Probe {
            media_type: Some(m),
            ..
        } if !m.is_empty() => Some(m),
        Probe {
            manifests: Some(_), ..
        } => Some(OCI_INDEX.to_string()),
        Probe {
            config: Some(_),
            layers: Some(_),
            ..
        } => Some(OCI_MANIFEST.to_string()),
        _ => None,
    }
}

fn is_generic_type(t: &str) -> bool {
    matches!(
        t,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// Parse a `Link` header for its `rel="next"` target.
pub(crate) fn parse_link_next(value: &str) -> Option<&str> {
    // Each link is `<uri>; params`; URIs may contain commas, so scan by '<' '>'.
    let mut rest = value;
    for _ in 0..64 {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let uri = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(uri);
        }
        rest = after;
    }
    None
}

impl UpstreamClient {
    /// Build a client. Fails on an unreadable CA file or an unusable TLS setup.
    pub fn new(config: UpstreamConfig) -> Result<UpstreamClient, UpstreamError> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let policy = NetPolicy::new(&base, config.insecure);
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

    /// Turn an auth plan into the header to send, fetching a token if needed.
    async fn authorize(
        &self,
        plan: Plan,
        request_scopes: &[Scope],
    ) -> Result<Option<String>, UpstreamError> {
        match plan {
            Plan::Anonymous => Ok(None),
            Plan::Header(h) => Ok(Some(h)),
            Plan::FetchToken {
                realm,
                service,
                scopes,
            } => {
                // One token fetch at a time per registry: requests that start
                // together (a pull's blobs) then share the first one's token.
                self.inner.policy.check(&realm).map_err(|why| {
                    tracing::warn!(registry = %self.inner.registry, reason = %why, "refused a token realm");
                    UpstreamError::Protocol(format!("token realm refused: {why}"))
                })?;
                let _one_at_a_time = self.inner.token_fetch.lock().await;
                if let Some(h) = self
                    .inner
                    .auth
                    .cached_header(&realm, service.as_deref(), &scopes)
                {
                    return Ok(Some(h));
                }
                // Credentials cross the network in the clear only for an
                // upstream the operator marked insecure.
                let credentials = self
                    .inner
                    .auth
                    .credentials()
                    .filter(|_| self.inner.policy.may_send_credentials(&realm));
                if credentials.is_none() && self.inner.auth.credentials().is_some() {
                    tracing::warn!(registry = %self.inner.registry, "the token realm is plain http: asking for a token without the configured credentials (mark the upstream insecure to send them)");
                }
                let rb = match credentials {
                    // OAuth2: trade the refresh token for an access token.
                    Some(c) if c.identity_token.is_some() => {
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        form.append_pair("grant_type", "refresh_token")
                            .append_pair("client_id", "berth")
                            .append_pair(
                                "refresh_token",
                                c.identity_token.as_deref().unwrap_or_default(),
                            );
                        if let Some(s) = &service {
                            form.append_pair("service", s);
                        }
                        let scope: Vec<String> = scopes.iter().map(Scope::to_string).collect();
                        form.append_pair("scope", &scope.join(" "));
                        self.inner
                            .http
                            .post(realm.clone())
                            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                            .body(form.finish())
                    }
                    // The token spec's GET, with Basic credentials if we have them.
                    Some(c) => self
                        .inner
                        .http
                        .get(token_url(&realm, service.as_deref(), &scopes))
                        .header(header::AUTHORIZATION, sensitive(&c.basic_header())?),
                    None => self
                        .inner
                        .http
                        .get(token_url(&realm, service.as_deref(), &scopes)),
                };
                let rb = rb.timeout(self.inner.request_timeout);
                let obtained = Instant::now();
                let mut resp =
                    within_first_byte(self.inner.first_byte_timeout, "token request", rb.send())
                        .await?;
                resp.extensions_mut()
                    .insert(StallWindow(self.inner.stall_timeout));
                let status = resp.status();
                if !status.is_success() {
                    let retry_after = parse_retry_after(header_str(resp.headers(), "retry-after"));
                    let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
                    return Err(UpstreamError::from_status(
                        status,
                        retry_after,
                        &body,
                        &format!("token server {realm}"),
                    ));
                }
                let body = read_bounded(resp, max_token_response()).await?;
                let (token, lifetime) = TokenResponse::parse(&body)?;
                self.inner.auth.store_token(
                    &realm,
                    service.as_deref(),
                    &[request_scopes, &scopes],
                    &token,
                    lifetime,
                    obtained,
                );
                tracing::debug!(registry = %self.inner.registry, %realm, lifetime_s = lifetime.as_secs(), "fetched a registry token");
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn send_once(
        &self,
        req: &Req,
        authorization: Option<&str>,
        body: Option<reqwest::Body>,
    ) -> Result<Response, UpstreamError> {
        let mut rb = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(a) = authorization {
            rb = rb.header(header::AUTHORIZATION, sensitive(a)?);
        }
        if let Some(t) = req.timeout {
            rb = rb.timeout(t);
        }
        let what = format!("{} {}", req.method, req.url);
        let mut resp = match body {
            // Sending a body may take any time; the HTTP client's read
            // timeout and the request's total timeout bound the answer.
            Some(b) => rb
                .body(b)
                .send()
                .await
                .map_err(|e| UpstreamError::transport(&what, e))?,
            None => within_first_byte(self.inner.first_byte_timeout, &what, rb.send()).await?,
        };
        resp.extensions_mut()
            .insert(StallWindow(self.inner.stall_timeout));
        Ok(resp)
    }

    /// Send a request through the auth flow; returns the response whatever
    /// its status (see [`check`]).
    pub(crate) async fn execute(&self, mut req: Req) -> Result<Response, UpstreamError> {
        // `retry` is the body to send again after a 401; `None` when the body
        // was a stream, which cannot be sent twice.
        let (first, retry): (Option<reqwest::Body>, Option<Option<Bytes>>) =
            match std::mem::replace(&mut req.body, ReqBody::Empty) {
                ReqBody::Empty => (None, Some(None)),
                ReqBody::Bytes(b) => (Some(reqwest::Body::from(b.clone())), Some(Some(b))),
                ReqBody::Stream(s) => (Some(s), None),
            };
        // Credentials go only to the registry itself; another host (an
        // upload Location elsewhere) must pass the network policy and never
        // gets them, nor a token obtained with them.
        let at_registry = req.url.origin() == self.inner.base.origin();
        let plan = if at_registry {
            self.inner.auth.plan(&req.scopes)
        } else {
            self.inner
                .policy
                .check(&req.url)
                .map_err(|why| UpstreamError::Protocol(format!("refused: {why}")))?;
            Plan::Anonymous
        };
        let authorization = self.authorize(plan, &req.scopes).await?;
        let resp = self
            .send_once(&req, authorization.as_deref(), first)
            .await?;
        let retry_body = match retry {
            Some(b) if resp.status() == StatusCode::UNAUTHORIZED => b,
            _ => return Ok(resp),
        };
        // One answer to the challenge, then whatever the registry says is final.
        // When a redirect led to the challenger (registry.k8s.io sends pulls
        // on to regional registries), the retry goes straight there: a
        // redirect to another host would drop the Authorization again.
        let final_url = resp.url().clone();
        let redirected = final_url.origin() != req.url.origin();
        if (redirected || !at_registry) && self.inner.auth.credentials().is_some() {
            // The challenger is not the registry: with credentials configured,
            // any token we could present carries their access.
            return Ok(resp);
        }
        let challenges = challenges_from_headers(resp.headers());
        let plan = self.inner.auth.plan_after_challenge(
            &challenges,
            &req.scopes,
            authorization.is_some() && !redirected,
        )?;
        if redirected {
            if matches!(&plan, Plan::Header(h) if h.starts_with("Basic ")) {
                // Our password goes only to the registry we were pointed at.
                return Ok(resp);
            }
            req.url = final_url;
        }
        let authorization = self.authorize(plan, &req.scopes).await?;
        self.send_once(
            &req,
            authorization.as_deref(),
            retry_body.map(reqwest::Body::from),
        )
        .await
    }

    pub(crate) fn req(&self, method: Method, url: Url, scopes: Vec<Scope>) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            scopes,
            timeout: Some(self.inner.request_timeout),
        }
    }

    fn accept_header(accept: &[&str]) -> Result<HeaderValue, UpstreamError> {
        let list = if accept.is_empty() {
            MANIFEST_MEDIA_TYPES
        } else {
            accept
        };
        HeaderValue::from_str(&list.join(", "))
            .map_err(|_| UpstreamError::Config(format!("invalid Accept media types {list:?}")))
    }

    /// Check the registry answers `/v2/` (authenticating if it asks).
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let req = self.req(Method::GET, self.url("v2/")?, Vec::new());
        let resp = self.execute(req).await?;
        check(resp, "GET /v2/").await.map(|_| ())
    }

    /// Send a HEAD or GET for a manifest and check its status (an upstream
    /// 404 carries MANIFEST_UNKNOWN even without a body).
    async fn manifest_request(
        &self,
        method: Method,
        repo: &RepositoryName,
        reference: &ManifestRef,
        accept: &[&str],
    ) -> Result<reqwest::Response, UpstreamError> {
        let what = format!("{method} manifest {repo}:{reference}");
        let mut req = self.req(
            method,
            self.repo_url(repo, &format!("manifests/{reference}"))?,
            vec![Scope::pull(&self.remote_name(repo))],
        );
        req.headers
            .insert(header::ACCEPT, Self::accept_header(accept)?);
        let resp = self.execute(req).await?;
        check(resp, &what)
            .await
            .map_err(|e| with_code(e, "MANIFEST_UNKNOWN"))
    }

    /// HEAD a manifest: its digest, media type and size. Falls back to a GET
    /// when the upstream's HEAD lacks any of them.
    pub async fn manifest_head(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
        accept: &[&str],
    ) -> Result<ManifestMeta, UpstreamError> {
        let resp = self
            .manifest_request(Method::HEAD, repo, reference, accept)
            .await?;
        let h = resp.headers();
        let header_digest =
            header_str(h, DOCKER_CONTENT_DIGEST).and_then(|d| d.trim().parse::<Digest>().ok());
        let media_type = header_str(h, "content-type")
            .map(bare_media_type)
            .filter(|t| !is_generic_type(t))
            .map(str::to_string);
        let size = header_u64(h, header::CONTENT_LENGTH);
        let digest = match reference {
            ManifestRef::Digest(d) => {
                if let Some(hd) = &header_digest {
                    if hd != d {
                        return Err(UpstreamError::DigestMismatch {
                            expected: d.clone(),
                            actual: hd.clone(),
                        });
                    }
                }
                Some(d.clone())
            }
            ManifestRef::Tag(_) => header_digest,
        };
        match (digest, media_type, size) {
            (Some(digest), Some(media_type), Some(size)) => Ok(ManifestMeta {
                digest,
                media_type,
                size,
            }),
            _ => {
                tracing::debug!(registry = %self.inner.registry, %repo, %reference, "manifest HEAD lacked digest/type/size; using GET");
                let m = self.manifest_get(repo, reference, accept).await?;
                Ok(ManifestMeta {
                    size: m.bytes.len() as u64,
                    digest: m.digest,
                    media_type: m.media_type,
                })
            }
        }
    }

    /// GET a manifest. Its digest is computed from the bytes; when the
    /// reference is a digest, the bytes must match it.
    pub async fn manifest_get(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
        accept: &[&str],
    ) -> Result<Manifest, UpstreamError> {
        let what = format!("GET manifest {repo}:{reference}");
        let resp = self
            .manifest_request(Method::GET, repo, reference, accept)
            .await?;
        let hint = header_str(resp.headers(), DOCKER_CONTENT_DIGEST)
            .and_then(|d| d.trim().parse::<Digest>().ok());
        let content_type = header_str(resp.headers(), "content-type")
            .map(bare_media_type)
            .unwrap_or("")
            .to_string();
        let bytes = read_bounded(resp, MAX_MANIFEST_SIZE).await?;
        let digest = match reference {
            ManifestRef::Digest(d) => {
                let actual = Digest::of_bytes(d.algorithm(), &bytes);
                if &actual != d {
                    return Err(UpstreamError::DigestMismatch {
                        expected: d.clone(),
                        actual,
                    });
                }
                actual
            }
            ManifestRef::Tag(_) => {
                let algorithm = hint.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
                let actual = Digest::of_bytes(algorithm, &bytes);
                if let Some(h) = hint.filter(|h| *h != actual) {
                    tracing::warn!(registry = %self.inner.registry, %repo, %reference, header = %h, computed = %actual,
                        "upstream's Docker-Content-Digest does not match the manifest bytes; using the computed digest");
                }
                actual
            }
        };
        let media_type = if is_generic_type(&content_type) {
            sniff_media_type(&bytes).ok_or_else(|| {
                UpstreamError::Protocol(format!(
                    "{what}: no media type (Content-Type {content_type:?}, none in the document)"
                ))
            })?
        } else {
            content_type
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEAD a blob: its size (and digest, checked against the header if sent).
    pub async fn blob_head(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobMeta, UpstreamError> {
        let what = format!("HEAD blob {repo}@{digest}");
        let req = self.req(
            Method::HEAD,
            self.repo_url(repo, &format!("blobs/{digest}"))?,
            vec![Scope::pull(&self.remote_name(repo))],
        );
        let resp = self.execute(req).await?;
        let resp = check(resp, &what)
            .await
            .map_err(|e| with_code(e, "BLOB_UNKNOWN"))?;
        if let Some(hd) = header_str(resp.headers(), DOCKER_CONTENT_DIGEST)
            .and_then(|d| d.trim().parse::<Digest>().ok())
        {
            if &hd != digest {
                return Err(UpstreamError::DigestMismatch {
                    expected: digest.clone(),
                    actual: hd,
                });
            }
        }
        let size = header_u64(resp.headers(), header::CONTENT_LENGTH)
            .ok_or_else(|| UpstreamError::Protocol(format!("{what}: no Content-Length")))?;
        Ok(BlobMeta {
            digest: digest.clone(),
            size,
        })
    }

    /// Whether the upstream has a blob (`blob_head` with 404 as `false`).
    pub async fn blob_exists(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        match self.blob_head(repo, digest).await {
            Ok(_) => Ok(true),
            Err(UpstreamError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// GET a blob, or a range of it, as a stream. Nothing is buffered; the
    /// timeouts are connect, first byte (to the response headers) and stall
    /// (the body ends in an error when it stops moving), never a total. A
    /// whole blob is verified against `digest` as it streams (see [`BlobBody`]).
    pub async fn blob_get(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody, UpstreamError> {
        let what = format!("GET blob {repo}@{digest}");
        let mut req = self.req(
            Method::GET,
            self.repo_url(repo, &format!("blobs/{digest}"))?,
            vec![Scope::pull(&self.remote_name(repo))],
        );
        req.timeout = None;
        if let Some(r) = range {
            let v = HeaderValue::from_str(&r.header_value())
                .map_err(|_| UpstreamError::Config(format!("invalid range {r:?}")))?;
            req.headers.insert(header::RANGE, v);
        }
        let resp = self.execute(req).await?;
        let resp = check(resp, &what)
            .await
            .map_err(|e| with_code(e, "BLOB_UNKNOWN"))?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let length = header_u64(resp.headers(), header::CONTENT_LENGTH);
        let content_range =
            header_str(resp.headers(), "content-range").and_then(ContentRange::parse);
        if partial && content_range.is_none() {
            return Err(UpstreamError::Protocol(format!(
                "{what}: 206 without a Content-Range"
            )));
        }
        let context = what.clone();
        let window = stall_window(&resp);
        let raw: BlobStream = Box::pin(Stalling::new(
            resp.bytes_stream()
                .map_err(move |e| UpstreamError::transport(&format!("{context}: body"), e)),
            window,
            format!("{what}: body"),
        ));
        let stream: BlobStream = if partial {
            raw
        } else {
            Box::pin(Verifying::new(raw, digest.clone(), length))
        };
        Ok(BlobBody {
            length,
            partial,
            content_range,
            stream,
        })
    }

    /// One page of `/v2/<name>/tags/list` (`n`, `last` as in the spec), or
    /// the page at `next` from a previous answer.
    pub async fn tags_page(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, UpstreamError> {
        let mut url = self.repo_url(repo, "tags/list")?;
        set_page_query(&mut url, n, last);
        self.list_page(url, vec![Scope::pull(&self.remote_name(repo))], "tags")
            .await
    }

    /// All tags of a repository, following `Link` pagination; `page_size`
    /// is the `n` asked for per page (the upstream's default when `None`).
    pub async fn tags_list(
        &self,
        repo: &RepositoryName,
        page_size: Option<usize>,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut url = self.repo_url(repo, "tags/list")?;
        set_page_query(&mut url, page_size, None);
        self.list_all(url, vec![Scope::pull(&self.remote_name(repo))], "tags")
            .await
    }

    /// One page of `/v2/_catalog`.
    pub async fn catalog_page(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, UpstreamError> {
        let mut url = self.url("v2/_catalog")?;
        set_page_query(&mut url, n, last);
        self.list_page(url, vec![Scope::catalog()], "repositories")
            .await
    }

    /// Every repository in the upstream's catalog, following `Link`
    /// pagination; `page_size` as for [`UpstreamClient::tags_list`].
    pub async fn catalog(&self, page_size: Option<usize>) -> Result<Vec<String>, UpstreamError> {
        let mut url = self.url("v2/_catalog")?;
        set_page_query(&mut url, page_size, None);
        self.list_all(url, vec![Scope::catalog()], "repositories")
            .await
    }

    async fn list_all(
        &self,
        first: Url,
        scopes: Vec<Scope>,
        field: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut out = Vec::new();
        let mut url = first;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.clone()) {
                return Err(UpstreamError::Protocol(format!(
                    "pagination loops back to {url}"
                )));
            }
            let page = self.list_page(url, scopes.clone(), field).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
        Err(UpstreamError::Protocol(format!(
            "more than {MAX_PAGES} pages of {field}"
        )))
    }

    /// Fetch one listing page from `url`.
    pub(crate) async fn list_page(
        &self,
        url: Url,
        scopes: Vec<Scope>,
        field: &str,
    ) -> Result<Page, UpstreamError> {
        let what = format!("GET {}", url.path());
        let req = self.req(Method::GET, url, scopes);
        let resp = self.execute(req).await?;
        let resp = check(resp, &what).await.map_err(|e| {
            if field == "tags" {
                with_code(e, "NAME_UNKNOWN")
            } else {
                e
            }
        })?;
        let next = header_str(resp.headers(), "link")
            .and_then(parse_link_next)
            .map(|l| resp.url().join(l))
            .transpose()
            .map_err(|e| UpstreamError::Protocol(format!("{what}: bad Link header: {e}")))?;
        let body = read_bounded(resp, MAX_JSON_BODY).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Protocol(format!("{what}: {e}")))?;
        let items = match v.get(field) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        UpstreamError::Protocol(format!("{what}: {field} holds a non-string"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(UpstreamError::Protocol(format!(
                    "{what}: {field} is not a list"
                )))
            }
        };
        Ok(Page { items, next })
    }
}

fn set_page_query(url: &mut Url, n: Option<usize>, last: Option<&str>) {
    if n.is_none() && last.is_none() {
        return;
    }
    let mut q = url.query_pairs_mut();
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    if let Some(l) = last {
        q.append_pair("last", l);
    }
}

/// Give a 404 without a spec body (every HEAD) the code the spec would use.
fn with_code(e: UpstreamError, code: &str) -> UpstreamError {
    match e {
        UpstreamError::NotFound {
            code: None,
            message,
        } => UpstreamError::NotFound {
            code: Some(code.to_string()),
            message,
        },
        other => other,
    }
}

/// Read a whole (small) body, refusing more than `limit` bytes, and
/// failing when it stalls (see `stall`).
pub(crate) async fn read_bounded(mut resp: Response, limit: usize) -> Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::Protocol(format!(
            "{} sent a body larger than {limit} bytes",
            resp.url()
        )));
    }
    let mut buf = Vec::new();
    let mut clock = StallClock::new(stall_window(&resp));
    let what = format!("reading the body of {}", resp.url());
    loop {
        clock.resume();
        let chunk = match tokio::time::timeout_at(clock.deadline(), resp.chunk()).await {
            Ok(c) => c.map_err(|e| UpstreamError::transport(&what, e))?,
            Err(_) => return Err(clock.error(&what)),
        };
        let Some(chunk) = chunk else { break };
        clock.record(chunk.len());
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::Protocol(format!(
                "{} sent a body larger than {limit} bytes",
                resp.url()
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// An `Authorization` value, marked sensitive so that it is never logged.
fn sensitive(value: &str) -> Result<HeaderValue, UpstreamError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        UpstreamError::Protocol("credentials or token not valid in a header".to_string())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Pass a success through; turn anything else into an [`UpstreamError`].
pub(crate) async fn check(resp: Response, what: &str) -> Result<Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = parse_retry_after(header_str(resp.headers(), "retry-after"));
    // A final 401 says why in its challenge: `insufficient_scope` is what
    // Docker Hub answers for a repository that is private or does not exist.
    let challenge_error = (status == StatusCode::UNAUTHORIZED)
        .then(|| {
            challenges_from_headers(resp.headers())
                .iter()
                .find_map(|c| c.bearer().and_then(|b| b.error))
        })
        .flatten();
    let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    let what = match challenge_error {
        Some(e) => format!("{what} (challenge error: {e})"),
        None => what.to_string(),
    };
    Err(UpstreamError::from_status(
        status,
        retry_after,
        &body,
        &what,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_next() {
        assert_eq!(
            parse_link_next(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            parse_link_next(r#"<https://x/a,b>; rel="prev", <https://x/next?x=1,2>; rel=next"#),
            Some("https://x/next?x=1,2")
        );
        assert_eq!(parse_link_next(r#"</p>; rel="prev""#), None);
        assert_eq!(parse_link_next("garbage"), None);
    }

    #[test]
    fn media_type_sniffing() {
        assert_eq!(
            bare_media_type("application/json; charset=utf-8"),
            "application/json"
        );
        assert_eq!(
            sniff_media_type(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            )
            .as_deref(),
            Some(DOCKER_MANIFEST)
        );
        assert_eq!(
            sniff_media_type(br#"{"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"config":{},"layers":[]}"#).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(sniff_media_type(br#"{"schemaVersion":1}"#), None);
        assert_eq!(sniff_media_type(b"nope"), None);
    }

    #[test]
    fn docker_hub_official_images_get_library() {
        let c = UpstreamClient::new(UpstreamConfig::for_registry("docker.io").unwrap()).unwrap();
        let n: RepositoryName = "alpine".parse().unwrap();
        assert_eq!(c.remote_name(&n), "library/alpine");
        assert_eq!(
            c.repo_url(&n, "manifests/latest").unwrap().as_str(),
            "https://registry-1.docker.io/v2/library/alpine/manifests/latest"
        );
        let c = UpstreamClient::new(
            UpstreamConfig::for_registry("quay.io")
                .unwrap()
                .with_base_url(Url::parse("https://mirror.example/quay").unwrap()),
        )
        .unwrap();
        assert_eq!(c.remote_name(&n), "alpine");
        assert_eq!(
            c.repo_url(&n, "tags/list").unwrap().as_str(),
            "https://mirror.example/quay/v2/alpine/tags/list"
        );
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let cfg = UpstreamConfig::for_registry("r.example")
            .unwrap()
            .with_ca_file(Some(p));
        assert!(matches!(
            UpstreamClient::new(cfg),
            Err(UpstreamError::Config(_))
        ));
        let cfg = UpstreamConfig::for_registry("r.example")
            .unwrap()
            .with_ca_file(Some(dir.path().join("missing.pem")));
        assert!(matches!(
            UpstreamClient::new(cfg),
            Err(UpstreamError::Config(_))
        ));
    }
}
