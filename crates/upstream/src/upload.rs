//! Writing to an upstream: blob uploads (monolithic and chunked, streamed
//! from any byte stream), cross-repository mounts, manifest puts, deletes.
//!
//! Separate from the read path because only the CLI (`berth copy`, `cache`,
//! `bundle load`, `rm`) writes, and because uploads are a small state
//! machine ([`UploadSession`]: each answer's `Location` is where the next
//! request goes). Streamed bodies cannot be re-sent after a 401, so every
//! upload starts with a body-less POST that runs the auth flow and leaves a
//! push token in the cache for the requests that carry data.

use std::error::Error as StdError;

use berth_reference::{Digest, ManifestRef, RepositoryName};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderValue};
use reqwest::Method;
use url::Url;

use crate::auth::Scope;
use crate::client::{check, Req, ReqBody, UpstreamClient, DOCKER_CONTENT_DIGEST};
use crate::error::UpstreamError;

/// Default chunk size for [`UpstreamClient::blob_upload_chunked`].
pub const DEFAULT_CHUNK_SIZE: usize = 8 << 20;
/// Most chunks one upload may take (bounds the loop; 8 MiB chunks make 80 TiB).
const MAX_CHUNKS: u64 = 10_000_000;

/// An upload in progress on the upstream.
#[derive(Debug, Clone)]
pub struct UploadSession {
    repo: RepositoryName,
    /// Where the next PATCH/PUT goes (the last `Location`).
    location: Url,
    /// Bytes the upstream has accepted so far.
    offset: u64,
    /// `OCI-Chunk-Min-Length`, when the upstream requires a minimum chunk.
    min_chunk: Option<u64>,
}

impl UploadSession {
    pub fn repository(&self) -> &RepositoryName {
        &self.repo
    }

    pub fn location(&self) -> &Url {
        &self.location
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The smallest chunk the upstream accepts, if it said.
    pub fn min_chunk(&self) -> Option<u64> {
        self.min_chunk
    }

    fn with_digest(&self, digest: &Digest) -> Url {
        let mut url = self.location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        url
    }
}

/// What a mount request achieved.
#[derive(Debug)]
pub enum MountOutcome {
    /// The blob is now in the target repository.
    Mounted,
    /// The upstream did not mount (it lacks the blob there, or does not
    /// mount across repositories) and opened an upload instead.
    Upload(UploadSession),
}

fn octet_stream() -> HeaderValue {
    HeaderValue::from_static("application/octet-stream")
}

fn header_value(s: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(s)
        .map_err(|_| UpstreamError::Config(format!("invalid header value {s:?}")))
}

impl UpstreamClient {
    fn push_scopes(&self, repo: &RepositoryName) -> Vec<Scope> {
        vec![Scope::push(&self.remote_name(repo))]
    }

    fn write_req(&self, method: Method, url: Url, scopes: Vec<Scope>) -> Req {
        Req {
            method,
            url,
            headers: Default::default(),
            body: ReqBody::Empty,
            scopes,
            timeout: Some(self.inner.request_timeout),
        }
    }

    fn session_from(
        &self,
        repo: &RepositoryName,
        resp: &reqwest::Response,
    ) -> Result<UploadSession, UpstreamError> {
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(UploadSession {
            repo: repo.clone(),
            location: self.location(resp)?,
            offset: 0,
            min_chunk,
        })
    }

    /// Open an upload (`POST /v2/<name>/blobs/uploads/`).
    pub async fn upload_start(
        &self,
        repo: &RepositoryName,
    ) -> Result<UploadSession, UpstreamError> {
        let mut req = self.write_req(
            Method::POST,
            self.repo_url(repo, "blobs/uploads/")?,
            self.push_scopes(repo),
        );
        req.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self.execute(req).await?;
        let resp = check(resp, &format!("POST upload {repo}")).await?;
        self.session_from(repo, &resp)
    }

    /// Ask the upstream to mount `digest` from repository `from` into `repo`
    /// (same registry) instead of uploading it again.
    pub async fn blob_mount(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<MountOutcome, UpstreamError> {
        let mut url = self.repo_url(repo, "blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", &self.remote_name(from));
        let mut scopes = self.push_scopes(repo);
        scopes.push(Scope::pull(&self.remote_name(from)));
        let mut req = self.write_req(Method::POST, url, scopes);
        req.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self.execute(req).await?;
        let resp = check(resp, &format!("mount {digest} from {from} into {repo}")).await?;
        if resp.status() == reqwest::StatusCode::CREATED {
            Ok(MountOutcome::Mounted)
        } else {
            Ok(MountOutcome::Upload(self.session_from(repo, &resp)?))
        }
    }

    /// Send one chunk (`PATCH` with `Content-Range`); the session moves on.
    pub async fn upload_chunk(
        &self,
        session: &mut UploadSession,
        chunk: Bytes,
    ) -> Result<(), UpstreamError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let start = session.offset;
        let end = start + chunk.len() as u64 - 1;
        let mut req = self.write_req(
            Method::PATCH,
            session.location.clone(),
            self.push_scopes(&session.repo),
        );
        req.timeout = None;
        req.headers.insert(header::CONTENT_TYPE, octet_stream());
        req.headers.insert(
            header::CONTENT_LENGTH,
            header_value(&chunk.len().to_string())?,
        );
        req.headers.insert(
            header::CONTENT_RANGE,
            header_value(&format!("{start}-{end}"))?,
        );
        let len = chunk.len() as u64;
        req.body = ReqBody::Bytes(chunk);
        let resp = self.execute(req).await?;
        let resp = check(resp, &format!("PATCH upload {} at {start}", session.repo)).await?;
        session.location = self.location(&resp)?;
        session.offset += len;
        Ok(())
    }

    /// Finish an upload with a final `PUT ?digest=` carrying `size` bytes
    /// streamed from `body` (all of the blob for a monolithic upload, the
    /// rest after chunks). The body is never buffered.
    pub async fn upload_put<S, E>(
        &self,
        session: UploadSession,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<(), UpstreamError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + 'static,
    {
        let mut req = self.write_req(
            Method::PUT,
            session.with_digest(digest),
            self.push_scopes(&session.repo),
        );
        req.timeout = None;
        req.headers.insert(header::CONTENT_TYPE, octet_stream());
        req.headers
            .insert(header::CONTENT_LENGTH, header_value(&size.to_string())?);
        req.body = if size == 0 {
            ReqBody::Empty
        } else {
            ReqBody::Stream(reqwest::Body::wrap_stream(body))
        };
        let resp = self.execute(req).await?;
        check(resp, &format!("PUT blob {}@{digest}", session.repo)).await?;
        Ok(())
    }

    /// Finish an upload whose bytes were all sent as chunks.
    pub async fn upload_complete(
        &self,
        session: UploadSession,
        digest: &Digest,
    ) -> Result<(), UpstreamError> {
        self.upload_put(
            session,
            digest,
            0,
            futures::stream::empty::<Result<Bytes, std::io::Error>>(),
        )
        .await
    }

    /// Ask how much of an upload the upstream holds (`GET` on its
    /// location, whose `Range: 0-END` says so), and move the session there:
    /// how an interrupted upload resumes. Returns the new offset.
    pub async fn upload_status(&self, session: &mut UploadSession) -> Result<u64, UpstreamError> {
        let req = self.write_req(
            Method::GET,
            session.location.clone(),
            self.push_scopes(&session.repo),
        );
        let resp = self.execute(req).await?;
        let resp = check(resp, &format!("GET upload status {}", session.repo)).await?;
        let offset = match resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
        {
            None => 0,
            Some(r) => {
                let r = r.trim().trim_start_matches("bytes=");
                let end = r
                    .split_once('-')
                    .and_then(|(_, e)| e.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        UpstreamError::Protocol(format!("upload status: bad Range {r:?}"))
                    })?;
                // Distribution sends `0-0` for an empty upload (and for
                // one byte): take it as nothing held.
                if r.trim() == "0-0" {
                    0
                } else {
                    end + 1
                }
            }
        };
        if resp.headers().get(header::LOCATION).is_some() {
            session.location = self.location(&resp)?;
        }
        session.offset = offset;
        Ok(offset)
    }

    /// Abandon an upload.
    pub async fn upload_cancel(&self, session: UploadSession) -> Result<(), UpstreamError> {
        let req = self.write_req(
            Method::DELETE,
            session.location.clone(),
            self.push_scopes(&session.repo),
        );
        let resp = self.execute(req).await?;
        check(resp, &format!("DELETE upload {}", session.repo)).await?;
        Ok(())
    }

    /// Upload a blob of known size in one streamed `PUT` (POST, then PUT).
    pub async fn blob_upload<S, E>(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<(), UpstreamError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + 'static,
    {
        let session = self.upload_start(repo).await?;
        self.upload_put(session, digest, size, body).await
    }

    /// Upload a blob in chunks of `chunk_size` bytes (raised to the
    /// upstream's minimum if it has one): POST, PATCH…, PUT. Memory use is
    /// one chunk. For registries or proxies that limit request sizes.
    pub async fn blob_upload_chunked<S, E>(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: S,
        chunk_size: usize,
    ) -> Result<(), UpstreamError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let mut session = self.upload_start(repo).await?;
        let min = session
            .min_chunk
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(0);
        let chunk_size = chunk_size.max(min).max(1);
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::with_capacity(chunk_size);
        let mut chunks = 0u64;
        loop {
            let next = body.next().await;
            let ended = next.is_none();
            if let Some(item) = next {
                let bytes = item.map_err(|e| UpstreamError::BodyStream(e.into().to_string()))?;
                buf.extend_from_slice(&bytes);
            }
            while buf.len() >= chunk_size || (ended && !buf.is_empty()) {
                let take = buf.len().min(chunk_size);
                let chunk = buf.split_to(take).freeze();
                chunks += 1;
                if chunks > MAX_CHUNKS {
                    return Err(UpstreamError::BodyStream(format!(
                        "more than {MAX_CHUNKS} chunks"
                    )));
                }
                self.upload_chunk(&mut session, chunk).await?;
            }
            if ended {
                break;
            }
        }
        self.upload_complete(session, digest).await
    }

    /// Upload a small blob held in memory (configs, test content).
    pub async fn blob_upload_bytes(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), UpstreamError> {
        let size = bytes.len() as u64;
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        self.blob_upload(repo, digest, size, body).await
    }

    /// Put a manifest under a tag or its digest; returns its digest.
    pub async fn manifest_put(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, UpstreamError> {
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
            ManifestRef::Tag(_) => Digest::sha256_of(&bytes),
        };
        let mut req = self.write_req(
            Method::PUT,
            self.repo_url(repo, &format!("manifests/{reference}"))?,
            self.push_scopes(repo),
        );
        req.headers
            .insert(header::CONTENT_TYPE, header_value(media_type)?);
        req.body = ReqBody::Bytes(bytes);
        let resp = self.execute(req).await?;
        let resp = check(resp, &format!("PUT manifest {repo}:{reference}")).await?;
        if let Some(h) = resp
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok())
        {
            if h.algorithm() == digest.algorithm() && h != digest {
                return Err(UpstreamError::DigestMismatch {
                    expected: digest,
                    actual: h,
                });
            }
        }
        Ok(digest)
    }

    /// Delete a manifest (by digest; registries that allow it, by tag).
    pub async fn manifest_delete(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<(), UpstreamError> {
        let name = self.remote_name(repo);
        let req = self.write_req(
            Method::DELETE,
            self.repo_url(repo, &format!("manifests/{reference}"))?,
            vec![Scope::repository(&name, &["delete"])],
        );
        let resp = self.execute(req).await?;
        check(resp, &format!("DELETE manifest {repo}:{reference}")).await?;
        Ok(())
    }

    /// Delete a blob.
    pub async fn blob_delete(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), UpstreamError> {
        let name = self.remote_name(repo);
        let req = self.write_req(
            Method::DELETE,
            self.repo_url(repo, &format!("blobs/{digest}"))?,
            vec![Scope::repository(&name, &["delete"])],
        );
        let resp = self.execute(req).await?;
        check(resp, &format!("DELETE blob {repo}@{digest}")).await?;
        Ok(())
    }
}
