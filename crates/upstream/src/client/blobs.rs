//! Blob reads: HEAD for size and existence, and the streamed GET (whole or
//! a range) under the stall timeout, verified against the digest when whole.

use berth_reference::{Digest, RepositoryName};
use futures::TryStreamExt;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::auth::Scope;
use crate::blob::{BlobBody, BlobMeta, BlobStream, ByteRange, ContentRange, Verifying};
use crate::error::UpstreamError;
use crate::stall::Stalling;

use super::request::{check, stall_window, with_code};
use super::{header_str, header_u64, UpstreamClient, DOCKER_CONTENT_DIGEST};

impl UpstreamClient {
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
        self.blob_get_checked(repo, digest, range, true).await
    }

    /// [`blob_get`] of a whole blob whose digest the caller computes
    /// itself, on another core (the cache's fills, which would otherwise
    /// hash every byte twice, once of them on the download's own task). The
    /// caller must check the digest and the length before trusting a byte.
    ///
    /// [`blob_get`]: Self::blob_get
    pub async fn blob_get_unverified(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobBody, UpstreamError> {
        self.blob_get_checked(repo, digest, None, false).await
    }

    async fn blob_get_checked(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        range: Option<ByteRange>,
        verify: bool,
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
        let stream: BlobStream = if partial || !verify {
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
}
