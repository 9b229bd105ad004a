//! Upload sessions in the bucket: segments written by multipart uploads,
//! read back by ranged GETs, published by server-side copies.
//!
//! A writer holds at most two parts in memory: one filling, one on its way.
//! A writer dropped before it finished aborts its multipart upload, so
//! nothing of it is ever visible; a replica killed mid-write leaves parts
//! that [`super::S3Storage::abort_stale_multipart`] reclaims.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tokio::task::JoinHandle;

use super::client::{MAX_COPY, MIN_PART_SIZE};
use super::list::Listed;
use super::{io_error, sdk_failure, Inner};
use crate::{ByteRange, ByteStream, Result, StorageError, UploadId, UploadInfo, UploadWriter};

const INFO: &str = "info";

/// A session as the bucket holds it: its segments in offset order.
pub(crate) struct Session {
    segments: Vec<Segment>,
    modified: SystemTime,
}

#[derive(Debug, Clone)]
struct Segment {
    key: String,
    offset: u64,
    size: u64,
}

impl Session {
    pub(crate) fn size(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.offset + s.size)
    }

    /// The session from a listing of its prefix; `None` without its `info`.
    /// Segments chain from offset 0; one that does not continue the chain
    /// (left by a writer that raced another) is not part of the session.
    fn from_listing(prefix: &str, objects: &[Listed]) -> Option<Session> {
        let mut has_info = false;
        let mut modified = std::time::UNIX_EPOCH;
        let mut found = Vec::new();
        for o in objects {
            let Some(name) = o.key.strip_prefix(prefix) else {
                continue;
            };
            modified = modified.max(o.modified);
            if name == INFO {
                has_info = true;
            } else if name.len() == 20 {
                if let Ok(offset) = name.parse::<u64>() {
                    found.push(Segment {
                        key: o.key.clone(),
                        offset,
                        size: o.size,
                    });
                }
            }
        }
        if !has_info {
            return None;
        }
        found.sort_by_key(|s| s.offset);
        let mut segments: Vec<Segment> = Vec::new();
        let mut next = 0u64;
        for s in found {
            if s.offset == next && s.size > 0 {
                next += s.size;
                segments.push(s);
            } else if s.offset > next {
                break;
            }
        }
        Some(Session { segments, modified })
    }
}

impl Inner {
    fn upload_prefix(&self, id: &UploadId) -> String {
        self.key(&format!("uploads/{id}/"))
    }

    pub(crate) async fn upload_create(&self) -> Result<UploadId> {
        let id = UploadId::new_random();
        let info = format!("{}{INFO}", self.upload_prefix(&id));
        self.put(&info, Bytes::new()).await?;
        Ok(id)
    }

    pub(crate) async fn session(&self, id: &UploadId) -> Result<Option<Session>> {
        let prefix = self.upload_prefix(id);
        let listed = self.list_all(&prefix).await?;
        Ok(Session::from_listing(&prefix, &listed))
    }

    pub(crate) async fn upload_delete(&self, id: &UploadId) -> Result<bool> {
        let listed = self.list_all(&self.upload_prefix(id)).await?;
        if listed.is_empty() {
            return Ok(false);
        }
        self.delete_many(listed.into_iter().map(|o| o.key).collect())
            .await?;
        Ok(true)
    }

    pub(crate) async fn upload_list(&self) -> Result<Vec<UploadInfo>> {
        let base = self.key("uploads/");
        let listed = self.list_all(&base).await?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < listed.len() {
            let id_part = listed[start].key[base.len()..]
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let end = start
                + listed[start..]
                    .iter()
                    .take_while(|o| o.key[base.len()..].starts_with(&format!("{id_part}/")))
                    .count()
                    .max(1);
            if let Ok(id) = id_part.parse::<UploadId>() {
                let prefix = format!("{base}{id_part}/");
                let group = &listed[start..end];
                // A session without its info (half deleted) is still listed,
                // so that expiry finishes deleting it.
                let (size, modified) = match Session::from_listing(&prefix, group) {
                    Some(s) => (s.size(), s.modified),
                    None => (
                        0,
                        group
                            .iter()
                            .map(|o| o.modified)
                            .max()
                            .unwrap_or(std::time::UNIX_EPOCH),
                    ),
                };
                out.push(UploadInfo { id, size, modified });
            }
            start = end;
        }
        Ok(out)
    }
}

pub(crate) async fn writer(
    inner: &Arc<Inner>,
    id: &UploadId,
    offset: u64,
) -> Result<Box<dyn UploadWriter>> {
    let size = inner
        .session(id)
        .await?
        .ok_or(StorageError::UploadNotFound)?
        .size();
    if size != offset {
        return Err(StorageError::UploadOffsetMismatch {
            expected: offset,
            actual: size,
        });
    }
    Ok(Box::new(S3Writer::new(
        inner.clone(),
        Target::Session(inner.upload_prefix(id)),
        offset,
    )))
}

pub(crate) async fn read(
    inner: &Arc<Inner>,
    id: &UploadId,
    range: Option<ByteRange>,
) -> Result<ByteStream> {
    let session = inner
        .session(id)
        .await?
        .ok_or(StorageError::UploadNotFound)?;
    let size = session.size();
    let want = range.unwrap_or(ByteRange {
        start: 0,
        end: size,
    });
    let (start, end) = (want.start.min(size), want.end.min(size));
    let mut pieces: Vec<(String, ByteRange)> = session
        .segments
        .iter()
        .filter(|s| s.offset < end && s.offset + s.size > start)
        .map(|s| {
            let from = start.max(s.offset) - s.offset;
            let to = end.min(s.offset + s.size) - s.offset;
            (
                s.key.clone(),
                ByteRange {
                    start: from,
                    end: to,
                },
            )
        })
        .collect();
    if pieces.is_empty() {
        return Ok(Box::pin(futures::stream::empty()));
    }
    // The first piece is asked for now, so that a session published or
    // deleted since the listing is UploadNotFound, as on local disk, rather
    // than a stream that fails.
    let (key, r) = pieces.remove(0);
    let (first, _) = inner
        .get(&key, Some(r))
        .await?
        .ok_or(StorageError::UploadNotFound)?;
    let inner = inner.clone();
    let rest = futures::stream::iter(pieces)
        .then(move |(key, r)| {
            let inner = inner.clone();
            async move {
                match inner.get(&key, Some(r)).await {
                    Ok(Some((s, _))) => s,
                    Ok(None) => failed("an upload segment vanished while being read".into()),
                    Err(e) => failed(e.to_string()),
                }
            }
        })
        .flatten();
    Ok(Box::pin(first.chain(rest)))
}

fn failed(message: String) -> ByteStream {
    Box::pin(futures::stream::once(async move {
        Err(std::io::Error::other(message))
    }))
}

/// Make the session's bytes the object `dest`, then end the session.
pub(crate) async fn publish(inner: &Arc<Inner>, id: &UploadId, dest: &str) -> Result<u64> {
    let session = inner
        .session(id)
        .await?
        .ok_or(StorageError::UploadNotFound)?;
    let size = session.size();
    let segs = &session.segments;
    match segs.as_slice() {
        [] => inner.put(dest, Bytes::new()).await?,
        [one] if one.size <= MAX_COPY => inner.copy(&one.key, dest).await?,
        _ => match copy_plan(segs) {
            Some(plan) => copy_parts(inner, dest, plan).await?,
            None => {
                let mut w = S3Writer::new(inner.clone(), Target::Object(dest.to_string()), 0);
                let mut s = read(inner, id, None).await?;
                while let Some(chunk) = s.try_next().await? {
                    w.write(chunk).await?;
                }
                Box::new(w).finish().await?;
            }
        },
    }
    inner.upload_delete(id).await?;
    Ok(size)
}

/// The parts of a server-side concatenation: each at most 5 GiB, all but
/// the last at least 5 MiB; `None` when the segments cannot be cut so.
fn copy_plan(segs: &[Segment]) -> Option<Vec<(String, ByteRange)>> {
    const STEP: u64 = 4 * 1024 * 1024 * 1024;
    let mut plan = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if i + 1 < segs.len() && s.size < MIN_PART_SIZE as u64 {
            return None;
        }
        let mut at = 0;
        while at < s.size {
            let mut end = (at + STEP).min(s.size);
            // Never leave a short piece in the middle.
            if s.size - end < MIN_PART_SIZE as u64 {
                end = s.size;
            }
            plan.push((s.key.clone(), ByteRange { start: at, end }));
            at = end;
        }
    }
    (plan.len() <= 10_000).then_some(plan)
}

async fn copy_parts(inner: &Arc<Inner>, dest: &str, plan: Vec<(String, ByteRange)>) -> Result<()> {
    let upload_id = create_multipart(inner, dest).await?;
    let copies = futures::stream::iter(plan.into_iter().enumerate())
        .map(|(i, (key, r))| {
            let inner = inner.clone();
            let upload_id = upload_id.clone();
            let dest = dest.to_string();
            async move {
                let n = i as i32 + 1;
                let out = inner
                    .client
                    .upload_part_copy()
                    .bucket(&inner.bucket)
                    .key(&dest)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .copy_source(format!("{}/{key}", inner.bucket))
                    .copy_source_range(format!("bytes={}-{}", r.start, r.end - 1))
                    .send()
                    .await
                    .map_err(|e| sdk_failure("COPY part", e))?;
                let etag = out
                    .copy_part_result()
                    .and_then(|c| c.e_tag())
                    .map(str::to_string);
                Ok::<_, StorageError>(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(etag)
                        .build(),
                )
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await;
    match copies {
        Ok(mut parts) => {
            parts.sort_by_key(|p| p.part_number());
            complete_multipart(inner, dest, &upload_id, parts).await
        }
        Err(e) => {
            abort_multipart(inner, dest, &upload_id).await;
            Err(e)
        }
    }
}

async fn create_multipart(inner: &Inner, key: &str) -> Result<String> {
    let out = inner
        .client
        .create_multipart_upload()
        .bucket(&inner.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| sdk_failure("CREATE multipart", e))?;
    out.upload_id()
        .map(str::to_string)
        .ok_or_else(|| io_error("S3 CREATE multipart: no upload id in the answer".into()))
}

async fn complete_multipart(
    inner: &Inner,
    key: &str,
    upload_id: &str,
    parts: Vec<CompletedPart>,
) -> Result<()> {
    inner
        .client
        .complete_multipart_upload()
        .bucket(&inner.bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| sdk_failure("COMPLETE multipart", e))?;
    Ok(())
}

async fn abort_multipart(inner: &Inner, key: &str, upload_id: &str) {
    if let Err(e) = inner
        .client
        .abort_multipart_upload()
        .bucket(&inner.bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        tracing::warn!(key, error = %super::describe(&e), "could not abort a multipart upload; stale-upload cleanup will");
    }
}

/// Where a writer's bytes go.
enum Target {
    /// Segments of an upload session: `<prefix><offset>`.
    Session(String),
    /// One object, written once at finish (publication by streaming).
    Object(String),
}

struct Multipart {
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    sent: i32,
    inflight: Option<JoinHandle<Result<CompletedPart>>>,
}

struct S3Writer {
    inner: Arc<Inner>,
    target: Target,
    /// Where the current segment starts in the session.
    start: u64,
    /// Bytes the current segment has taken so far.
    taken: u64,
    buf: BytesMut,
    multipart: Option<Multipart>,
}

impl S3Writer {
    fn new(inner: Arc<Inner>, target: Target, start: u64) -> S3Writer {
        S3Writer {
            inner,
            target,
            start,
            taken: 0,
            buf: BytesMut::new(),
            multipart: None,
        }
    }

    fn segment_key(&self) -> String {
        match &self.target {
            Target::Session(prefix) => format!("{prefix}{:020}", self.start),
            Target::Object(key) => key.clone(),
        }
    }

    /// Send one part, after the previous one landed (so at most one is in
    /// flight while the next fills).
    async fn send_part(&mut self, part: Bytes) -> Result<()> {
        if self.multipart.is_none() {
            let key = self.segment_key();
            let upload_id = create_multipart(&self.inner, &key).await?;
            self.multipart = Some(Multipart {
                key,
                upload_id,
                parts: Vec::new(),
                sent: 0,
                inflight: None,
            });
        }
        let Some(mp) = self.multipart.as_mut() else {
            return Err(io_error("S3 multipart upload lost".into()));
        };
        if let Some(prev) = mp.inflight.take() {
            mp.parts.push(joined(prev).await?);
        }
        mp.sent += 1;
        let (inner, key, upload_id, n) = (
            self.inner.clone(),
            mp.key.clone(),
            mp.upload_id.clone(),
            mp.sent,
        );
        mp.inflight = Some(tokio::spawn(async move {
            let out = inner
                .client
                .upload_part()
                .bucket(&inner.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(n)
                .body(part.into())
                .send()
                .await
                .map_err(|e| sdk_failure("PUT part", e))?;
            Ok(CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        }));
        Ok(())
    }

    /// Make what was taken a complete object; the next write starts a new
    /// segment after it.
    async fn end_segment(&mut self) -> Result<()> {
        if self.taken == 0 {
            return Ok(());
        }
        if self.multipart.is_none() {
            let key = self.segment_key();
            self.inner.put(&key, self.buf.split().freeze()).await?;
        } else {
            if !self.buf.is_empty() {
                let last = self.buf.split().freeze();
                self.send_part(last).await?;
            }
            let Some(mut mp) = self.multipart.take() else {
                return Err(io_error("S3 multipart upload lost".into()));
            };
            if let Some(prev) = mp.inflight.take() {
                match joined(prev).await {
                    Ok(p) => mp.parts.push(p),
                    Err(e) => {
                        abort_multipart(&self.inner, &mp.key, &mp.upload_id).await;
                        return Err(e);
                    }
                }
            }
            if let Err(e) = complete_multipart(&self.inner, &mp.key, &mp.upload_id, mp.parts).await
            {
                abort_multipart(&self.inner, &mp.key, &mp.upload_id).await;
                return Err(e);
            }
        }
        self.start += self.taken;
        self.taken = 0;
        Ok(())
    }
}

async fn joined(h: JoinHandle<Result<CompletedPart>>) -> Result<CompletedPart> {
    h.await
        .map_err(|e| io_error(format!("S3 part upload task: {e}")))?
}

#[async_trait]
impl UploadWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.taken += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        let part = self.inner.part_size;
        while self.buf.len() >= part {
            let p = self.buf.split_to(part).freeze();
            self.send_part(p).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        match self.target {
            Target::Session(_) => self.end_segment().await,
            Target::Object(_) => Ok(()),
        }
    }

    fn flush_granularity(&self) -> u64 {
        self.inner.part_size as u64
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.end_segment().await?;
        Ok(self.start)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Unfinished: abort its multipart upload so no part lingers.
        let Some(mut mp) = self.multipart.take() else {
            return;
        };
        if let Some(h) = mp.inflight.take() {
            h.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            rt.spawn(async move { abort_multipart(&inner, &mp.key, &mp.upload_id).await });
        }
    }
}
