//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`. Manifests
//! are served byte for byte as pushed, with the media type they were pushed as.

use axum::body::Body;
use axum::response::Response;
use berth_manifest::MAX_MANIFEST_SIZE;
use berth_reference::ManifestRef;
use http::{header, StatusCode};
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::{set_header, Ctx};

pub async fn get(ctx: &Ctx, reference: &ManifestRef, head: bool) -> Result<Response, ApiError> {
    let m = match ctx.mirror() {
        Some(cache) => cache.manifest(&ctx.repo, reference).await?,
        None => ctx.registry().manifest_get(&ctx.repo, reference).await?,
    };
    let len = m.bytes.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(m.bytes)
    });
    let h = resp.headers_mut();
    set_header(h, header::CONTENT_TYPE, &m.media_type);
    set_header(h, header::CONTENT_LENGTH, len.to_string());
    set_header(h, "Docker-Content-Digest", m.digest.to_string());
    set_header(h, header::ETAG, format!("\"{}\"", m.digest));
    Ok(resp)
}

/// Read a body of at most `limit` bytes, refusing larger ones early when
/// `Content-Length` announces them.
async fn read_limited(ctx: &Ctx, body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let announced = ctx
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!(
            "reading the request body: {e}"
        ))),
    }
}

pub async fn put(ctx: &Ctx, reference: &ManifestRef, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(ctx, body, MAX_MANIFEST_SIZE).await?;
    let content_type = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let put = ctx
        .registry()
        .manifest_put(&ctx.repo, reference, content_type, bytes)
        .await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::CREATED;
    let h = resp.headers_mut();
    set_header(
        h,
        header::LOCATION,
        format!("/v2/{}/manifests/{}", ctx.repo, put.digest),
    );
    set_header(h, header::CONTENT_LENGTH, "0");
    set_header(h, "Docker-Content-Digest", put.digest.to_string());
    if let Some(subject) = put.subject {
        set_header(h, "OCI-Subject", subject.to_string());
    }
    Ok(resp)
}

pub async fn delete(ctx: &Ctx, reference: &ManifestRef) -> Result<Response, ApiError> {
    ctx.registry().manifest_delete(&ctx.repo, reference).await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    set_header(resp.headers_mut(), header::CONTENT_LENGTH, "0");
    Ok(resp)
}
