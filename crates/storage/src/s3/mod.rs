//! The S3 backend: blobs, upload sessions and documents as objects in one
//! bucket, under one prefix, so that several berth replicas on the same
//! bucket see one store.
//!
//! Key layout (after the configured prefix):
//! - `blobs/<alg>/<hex>`: a published blob, written only by a completed
//!   multipart upload, a copy or a single PUT, so never partial.
//! - `uploads/<id>/info`: the session exists (its creation time).
//! - `uploads/<id>/<offset, 20 digits>`: one segment per writer (a PATCH, a
//!   monolithic PUT, or a cache fill between flushes), each a complete
//!   object once its writer finished. The session is the segments in offset
//!   order, so any replica can append to it, read it back or publish it:
//!   nothing about a session lives in one process's memory.
//! - `docs/<key>`: documents, one small object each.
//! - `quarantine/<alg>/<hex>.<time>`: blobs that failed verification.
//!
//! Publishing concatenates the segments server-side (CopyObject for one,
//! UploadPartCopy for several of at least 5 MiB) and streams them through
//! berth only when a small segment sits before the last.

pub mod client;
mod list;
mod upload;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use berth_reference::Digest;
use bytes::Bytes;
use futures::StreamExt;

pub use client::{S3Config, Secret};

use crate::{
    BlobStat, ByteRange, ByteStream, DocKey, Result, Storage, StorageError, UploadId, UploadInfo,
    UploadWriter,
};

/// What can go wrong setting up the backend (requests fail as [`StorageError`]).
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 storage settings: {0}")]
    Config(String),
    #[error("S3 bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
}

/// Blobs, uploads and documents in an S3 bucket.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) part_size: usize,
    presign: Option<std::time::Duration>,
}

impl S3Storage {
    /// Connect to the bucket and check that it answers with these
    /// credentials, so a wrong setting fails at start-up, not on a pull.
    pub async fn open(mut cfg: S3Config) -> std::result::Result<S3Storage, S3Error> {
        cfg.validate()?;
        let client = client::build(&cfg).await?;
        let inner = Inner {
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            part_size: cfg.part_size,
            presign: cfg.presign_blob_gets,
        };
        inner
            .client
            .head_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
            .map_err(|e| S3Error::Bucket {
                bucket: cfg.bucket.clone(),
                message: describe(&e),
            })?;
        Ok(S3Storage {
            inner: Arc::new(inner),
        })
    }

    /// The bucket's name (for logs and metrics).
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// A presigned GET of the blob, when redirects are enabled.
    pub async fn blob_presigned_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some(ttl) = self.inner.presign else {
            return Ok(None);
        };
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| io_error(format!("presigning: {e}")))?;
        let req = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(self.inner.blob_key(digest))
            .presigned(cfg)
            .await
            .map_err(|e| sdk_failure("presign GET", e))?;
        Ok(Some(req.uri().to_string()))
    }

    /// Abort multipart uploads under the prefix started more than `older_than`
    /// ago: the parts of writers that died (a killed replica) which S3 would
    /// otherwise keep, and bill, forever. Returns how many were aborted.
    pub async fn abort_stale_multipart(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.abort_stale_multipart(older_than).await
    }
}

impl Inner {
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn blob_key(&self, d: &Digest) -> String {
        self.key(&format!("blobs/{}/{}", d.algorithm().as_str(), d.hex()))
    }

    fn doc_key(&self, k: &DocKey) -> String {
        self.key(&format!("docs/{}", k.as_str()))
    }

    /// Size and time of an object, `None` when absent.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<BlobStat>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(BlobStat {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                modified: o
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(sdk_failure("HEAD", e)),
        }
    }

    pub(crate) async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(SdkStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_failure("PUT", e))?;
        Ok(())
    }

    /// An object's bytes, or a range of them; `None` when absent. With a
    /// range, also the object's whole size.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ByteStream, Option<u64>)>> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = range {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        match req.send().await {
            Ok(o) => {
                let total = o
                    .content_range()
                    .and_then(|c| c.rsplit('/').next())
                    .and_then(|t| t.parse().ok());
                Ok(Some((body_stream(o.body), total)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) if status(&e) == Some(416) => Err(StorageError::RangeNotSatisfiable),
            Err(e) => Err(sdk_failure("GET", e)),
        }
    }

    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>> {
        let Some((mut s, _)) = self.get(key, None).await? else {
            return Ok(None);
        };
        let mut out = bytes::BytesMut::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(Some(out.freeze()))
    }

    pub(crate) async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{from}", self.bucket))
            .key(to)
            .send()
            .await
            .map_err(|e| sdk_failure("COPY", e))?;
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_failure("DELETE", e))?;
        Ok(())
    }
}

/// The SDK's body as berth's byte stream; a failure mid-body is an error,
/// never a short blob.
fn body_stream(body: SdkStream) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), |state| async move {
        let mut body = state?;
        match body.try_next().await {
            Ok(Some(b)) => Some((Ok(b), Some(body))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(format!("S3 body: {e}"))), None)),
        }
    }))
}

fn status<E, R: HasStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HasStatus::status_code)
}

pub(crate) trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn is_not_found<E: ProvideErrorMetadata, R: HasStatus>(e: &SdkError<E, R>) -> bool {
    status(e) == Some(404)
        || e.as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| c == "NoSuchKey" || c == "NotFound")
}

pub(crate) fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DisplayErrorContext(e).to_string()
}

pub(crate) fn io_error(message: String) -> StorageError {
    StorageError::Io(std::io::Error::other(message))
}

/// A failed request as a storage error: a full store (507, or a bucket
/// quota) is [`StorageError::StorageFull`], anything else an I/O error
/// naming the operation. Messages carry no credentials: the SDK's errors
/// name the operation, the status and the store's own error text.
pub(crate) fn sdk_failure<E, R>(op: &str, e: SdkError<E, R>) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let quota = e
        .as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "QuotaExceeded" || c == "InsufficientStorage");
    if status(&e) == Some(507) || quota {
        return StorageError::StorageFull;
    }
    io_error(format!("S3 {op}: {}", describe(&e)))
}

fn parse_blob_key(rest: &str) -> Option<Digest> {
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

#[async_trait]
impl Storage for S3Storage {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self
            .inner
            .head(&self.inner.blob_key(digest))
            .await?
            .map(|s| s.size))
    }

    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let key = self.inner.blob_key(digest);
        let range = match range {
            // An empty range asks nothing of the store but that it is there
            // and long enough.
            Some(r) if r.is_empty() => {
                let size = self
                    .inner
                    .head(&key)
                    .await?
                    .ok_or(StorageError::BlobNotFound)?;
                if r.start > size.size {
                    return Err(StorageError::RangeNotSatisfiable);
                }
                return Ok(Box::pin(futures::stream::empty()));
            }
            r => r,
        };
        let (stream, total) = self
            .inner
            .get(&key, range)
            .await?
            .ok_or(StorageError::BlobNotFound)?;
        // S3 answers a range running past the end with what there is; the
        // contract refuses it, as the local disk does.
        if let (Some(r), Some(total)) = (range, total) {
            if r.end > total {
                return Err(StorageError::RangeNotSatisfiable);
            }
        }
        Ok(stream)
    }

    async fn abandoned_writes_sweep(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.abort_stale_multipart(older_than).await
    }

    async fn blob_redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        self.blob_presigned_url(digest).await
    }

    async fn blob_put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        self.inner.put(&self.inner.blob_key(digest), bytes).await
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool> {
        let key = self.inner.blob_key(digest);
        if self.inner.head(&key).await?.is_none() {
            return Ok(false);
        }
        self.inner.delete(&key).await?;
        Ok(true)
    }

    async fn blob_list(&self) -> Result<Vec<Digest>> {
        let base = self.inner.key("blobs/");
        let mut out: Vec<Digest> = self
            .inner
            .list_all(&base)
            .await?
            .into_iter()
            .filter_map(|o| parse_blob_key(&o.key[base.len()..]))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn blob_bytes_total(&self) -> Result<u64> {
        let base = self.inner.key("blobs/");
        Ok(self
            .inner
            .list_all(&base)
            .await?
            .into_iter()
            .filter(|o| parse_blob_key(&o.key[base.len()..]).is_some())
            .map(|o| o.size)
            .sum())
    }

    async fn blob_quarantine(&self, digest: &Digest) -> Result<bool> {
        let key = self.inner.blob_key(digest);
        if self.inner.head(&key).await?.is_none() {
            return Ok(false);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = self.inner.key(&format!(
            "quarantine/{}/{}.{stamp}",
            digest.algorithm().as_str(),
            digest.hex()
        ));
        self.inner.copy(&key, &to).await?;
        self.inner.delete(&key).await?;
        Ok(true)
    }

    async fn blob_stat(&self, digest: &Digest) -> Result<Option<BlobStat>> {
        self.inner.head(&self.inner.blob_key(digest)).await
    }

    async fn upload_create(&self) -> Result<UploadId> {
        self.inner.upload_create().await
    }

    async fn upload_size(&self, id: &UploadId) -> Result<Option<u64>> {
        Ok(self.inner.session(id).await?.map(|s| s.size()))
    }

    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        upload::writer(&self.inner, id, offset).await
    }

    async fn upload_read(&self, id: &UploadId, range: Option<ByteRange>) -> Result<ByteStream> {
        upload::read(&self.inner, id, range).await
    }

    async fn upload_publish(&self, id: &UploadId, digest: &Digest) -> Result<u64> {
        let dest = self.inner.blob_key(digest);
        upload::publish(&self.inner, id, &dest).await
    }

    async fn upload_delete(&self, id: &UploadId) -> Result<bool> {
        self.inner.upload_delete(id).await
    }

    async fn upload_list(&self) -> Result<Vec<UploadInfo>> {
        self.inner.upload_list().await
    }

    async fn doc_get(&self, key: &DocKey) -> Result<Option<Bytes>> {
        self.inner.get_bytes(&self.inner.doc_key(key)).await
    }

    async fn doc_put(&self, key: &DocKey, value: Bytes) -> Result<()> {
        self.inner.put(&self.inner.doc_key(key), value).await
    }

    async fn doc_delete(&self, key: &DocKey) -> Result<bool> {
        let own = self.inner.doc_key(key);
        let mut keys: Vec<String> = self
            .inner
            .list_all(&format!("{own}/"))
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        if self.inner.head(&own).await?.is_some() {
            keys.push(own);
        }
        let found = !keys.is_empty();
        self.inner.delete_many(keys).await?;
        Ok(found)
    }

    async fn doc_list(&self, prefix: &DocKey) -> Result<Vec<String>> {
        let base = format!("{}/", self.inner.doc_key(prefix));
        let mut names = self.inner.list_children(&base).await?;
        names.sort();
        names.dedup();
        Ok(names)
    }
}
