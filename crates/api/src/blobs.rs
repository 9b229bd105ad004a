//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: streamed, with single
//! byte ranges answered 206. A stored blob goes out by `sendfile` where the
//! connection allows it ([`crate::zero_copy`]), and so does one still being
//! fetched by the cache, as its bytes land; elsewhere both stream.

use axum::body::Body;
use axum::response::Response;
use berth_cache::{BlobLocation, Cache};
use berth_reference::Digest;
use berth_storage::ByteRange;
use http::{header, StatusCode};

use crate::error::ApiError;
use crate::range::{parse_range, RangeRequest};
use crate::{set_header, Ctx};

pub async fn get(ctx: &Ctx, digest: &Digest, head: bool) -> Result<Response, ApiError> {
    if let Some(cache) = ctx.mirror() {
        return get_mirrored(ctx, cache, digest, head).await;
    }
    if head {
        // A pushing client's "do you have it?": kept from GC (see blob_head).
        let size = ctx.registry().blob_head(&ctx.repo, digest).await?;
        return Ok(respond(Body::empty(), digest, Some(size), None));
    }
    let blob = ctx.registry().blob_open(&ctx.repo, digest).await?;
    let size = blob.size;
    if let Some(resp) = redirect(ctx, digest).await? {
        return Ok(resp);
    }
    let range = requested_range(ctx, Some(size))?;
    let body = match zero_copy_body(ctx, digest, size, range).await? {
        Some(body) => body,
        None => Body::from_stream(ctx.registry().blob_stream(&blob, range).await?),
    };
    Ok(respond(body, digest, Some(size), range))
}

/// A blob of a mirrored repository: from the cache, or streamed from the
/// download that fills it.
async fn get_mirrored(
    ctx: &Ctx,
    cache: &Cache,
    digest: &Digest,
    head: bool,
) -> Result<Response, ApiError> {
    if head {
        let size = cache.blob_head(&ctx.repo, digest).await?;
        return Ok(respond(Body::empty(), digest, Some(size), None));
    }
    let location = cache
        .blob_locate_as(&ctx.repo, digest, ctx.from_peer)
        .await?;
    let size = location.size();
    let range = requested_range(ctx, size)?;
    if let BlobLocation::Local { size } = location {
        if let Some(resp) = redirect(ctx, digest).await? {
            return Ok(resp);
        }
        let len = range.map_or(size, |r| r.len());
        cache.metrics().hit_bytes.inc_by(len);
        if let Some(body) = zero_copy_body(ctx, digest, size, range).await? {
            return Ok(respond(body, digest, Some(size), range));
        }
    }
    // A blob being filled: followed by `sendfile` as its bytes land.
    if let Some(zero_copy) = &ctx.zero_copy {
        let follow = match cache.follow_file(&location, digest, range) {
            Some(opening) => opening.await?,
            None => None,
        };
        if let Some(follow) = follow {
            let body =
                zero_copy.following_body(follow.file, follow.start, follow.end, follow.available);
            return Ok(respond(body, digest, size, range));
        }
    }
    let stream = cache.blob_stream(digest, location, range).await?;
    Ok(respond(Body::from_stream(stream), digest, size, range))
}

/// `307` to where the store serves the blob itself (presigned S3 URLs, when
/// enabled), as Distribution's redirecting storage does; never for another
/// replica's forwarded request, which wants the bytes.
async fn redirect(ctx: &Ctx, digest: &Digest) -> Result<Option<Response>, ApiError> {
    if ctx.from_peer {
        return Ok(None);
    }
    let url = ctx
        .registry()
        .storage()
        .blob_redirect_url(digest)
        .await
        .map_err(berth_registry::RegistryError::from)?;
    let Some(url) = url else { return Ok(None) };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let h = resp.headers_mut();
    set_header(h, header::LOCATION, url);
    set_header(h, "Docker-Content-Digest", digest.to_string());
    set_header(h, header::CONTENT_LENGTH, "0");
    Ok(Some(resp))
}

/// The blob's bytes (or `range` of them) sent from its file by `sendfile`,
/// when the connection can and storage keeps the blob as a local file of
/// the size the registry knows; `None` to stream instead (which also
/// reports whatever is wrong with the blob).
async fn zero_copy_body(
    ctx: &Ctx,
    digest: &Digest,
    size: u64,
    range: Option<ByteRange>,
) -> Result<Option<Body>, ApiError> {
    let Some(zero_copy) = &ctx.zero_copy else {
        return Ok(None);
    };
    let file = ctx
        .registry()
        .storage()
        .blob_file(digest)
        .await
        .map_err(berth_registry::RegistryError::from)?;
    let Some((file, on_disk)) = file else {
        return Ok(None);
    };
    if on_disk != size {
        return Ok(None);
    }
    let (start, len) = range.map_or((0, size), |r| (r.start, r.len()));
    Ok(Some(zero_copy.body(file, start, len)))
}

/// The single byte range asked for, if any and if the size is known.
fn requested_range(ctx: &Ctx, size: Option<u64>) -> Result<Option<ByteRange>, ApiError> {
    let Some(size) = size else { return Ok(None) };
    let range_header = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    match parse_range(range_header, size) {
        RangeRequest::Full => Ok(None),
        RangeRequest::Partial(r) => Ok(Some(r)),
        RangeRequest::Unsatisfiable => Err(ApiError::RangeNotSatisfiable(size)),
    }
}

fn respond(body: Body, digest: &Digest, size: Option<u64>, range: Option<ByteRange>) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    set_header(h, header::CONTENT_TYPE, "application/octet-stream");
    if let Some(len) = range.map(|r| r.len()).or(size) {
        set_header(h, header::CONTENT_LENGTH, len.to_string());
    }
    set_header(h, "Docker-Content-Digest", digest.to_string());
    set_header(h, header::ETAG, format!("\"{digest}\""));
    set_header(h, header::ACCEPT_RANGES, "bytes");
    // Content-addressed: it can never change.
    set_header(h, header::CACHE_CONTROL, "max-age=31536000");
    if let (Some(r), Some(size)) = (range, size) {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        set_header(
            resp.headers_mut(),
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end - 1),
        );
    }
    resp
}

pub async fn delete(ctx: &Ctx, digest: &Digest) -> Result<Response, ApiError> {
    ctx.registry().blob_delete(&ctx.repo, digest).await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    set_header(resp.headers_mut(), header::CONTENT_LENGTH, "0");
    Ok(resp)
}
