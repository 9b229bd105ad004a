//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: streamed, with single
//! byte ranges answered 206.

use axum::body::Body;
use axum::response::Response;
use berth_reference::Digest;
use http::{header, StatusCode};

use crate::error::ApiError;
use crate::range::{parse_range, RangeRequest};
use crate::{set_header, Ctx};

pub async fn get(ctx: &Ctx, digest: &Digest, head: bool) -> Result<Response, ApiError> {
    let size = ctx.registry().blob_size(&ctx.repo, digest).await?;
    let range_header = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, size) {
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(size)),
    };
    let length = range.map_or(size, |r| r.len());
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(ctx.registry().blob_read(&ctx.repo, digest, range).await?)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    set_header(h, header::CONTENT_TYPE, "application/octet-stream");
    set_header(h, header::CONTENT_LENGTH, length.to_string());
    set_header(h, "Docker-Content-Digest", digest.to_string());
    set_header(h, header::ETAG, format!("\"{digest}\""));
    set_header(h, header::ACCEPT_RANGES, "bytes");
    // Content-addressed: it can never change.
    set_header(h, header::CACHE_CONTROL, "max-age=31536000");
    if let Some(r) = range {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        set_header(
            resp.headers_mut(),
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end - 1),
        );
    }
    Ok(resp)
}

pub async fn delete(ctx: &Ctx, digest: &Digest) -> Result<Response, ApiError> {
    ctx.registry().blob_delete(&ctx.repo, digest).await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    set_header(resp.headers_mut(), header::CONTENT_LENGTH, "0");
    Ok(resp)
}
