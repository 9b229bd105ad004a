//! Manifest reads: HEAD (falling back to GET when the upstream's HEAD is
//! incomplete) and GET, with the digest computed from the bytes and the
//! media type sniffed when the upstream's `Content-Type` says nothing.

use berth_reference::{Algorithm, Digest, ManifestRef, RepositoryName};
use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use reqwest::Method;
use serde::Deserialize;

use crate::auth::Scope;
use crate::error::UpstreamError;

use super::request::{check, read_bounded, with_code};
use super::{
    header_str, header_u64, UpstreamClient, DOCKER_CONTENT_DIGEST, MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE, OCI_INDEX, OCI_MANIFEST,
};

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

/// `application/json; charset=utf-8` → `application/json`.
pub(super) fn bare_media_type(v: &str) -> &str {
    v.split(';').next().unwrap_or("").trim()
}

/// Media type of a manifest whose `Content-Type` was missing or generic:
/// its `mediaType` field, else its shape (OCI allows omitting the field).
pub(super) fn sniff_media_type(bytes: &[u8]) -> Option<String> {
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

impl UpstreamClient {
    fn accept_header(accept: &[&str]) -> Result<HeaderValue, UpstreamError> {
        let list = if accept.is_empty() {
            MANIFEST_MEDIA_TYPES
        } else {
            accept
        };
        HeaderValue::from_str(&list.join(", "))
            .map_err(|_| UpstreamError::Config(format!("invalid Accept media types {list:?}")))
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
}
