//! Blob uploads: `POST` (session, monolithic with `?digest=`, or
//! cross-repository mount), `PATCH` chunks, `PUT` to finish, `GET` status
//! and `DELETE` to cancel.

use axum::body::Body;
use axum::response::Response;
use berth_reference::Digest;
use berth_registry::UploadStatus;
use http::{header, StatusCode};

use crate::auth::{Access, Action};
use crate::error::ApiError;
use crate::range::parse_content_range;
use crate::{body_stream, set_header, Ctx};

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    set_header(resp.headers_mut(), header::CONTENT_LENGTH, "0");
    resp
}

/// 202 with where the session is and how far it got.
fn session_response(ctx: &Ctx, status: StatusCode, upload: &UploadStatus) -> Response {
    let mut resp = empty(status);
    let h = resp.headers_mut();
    set_header(
        h,
        header::LOCATION,
        format!("/v2/{}/blobs/uploads/{}", ctx.repo, upload.id),
    );
    set_header(
        h,
        header::RANGE,
        format!("0-{}", upload.offset.saturating_sub(1)),
    );
    set_header(h, "Docker-Upload-UUID", &upload.id);
    resp
}

/// 201 for a blob that now exists in the repository.
fn created(ctx: &Ctx, digest: &Digest) -> Response {
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    set_header(
        h,
        header::LOCATION,
        format!("/v2/{}/blobs/{digest}", ctx.repo),
    );
    set_header(h, "Docker-Content-Digest", digest.to_string());
    resp
}

fn digest_param(ctx: &Ctx, name: &str) -> Result<Option<Digest>, ApiError> {
    ctx.query
        .get(name)
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| ApiError::DigestInvalid(e.to_string()))
        })
        .transpose()
}

pub async fn start(ctx: &Ctx, body: Body) -> Result<Response, ApiError> {
    // `?digest-algorithm=` announces the digest the session will close with:
    // one berth cannot verify is refused now rather than after the upload.
    if let Some(alg) = ctx.query.get("digest-algorithm") {
        if !matches!(alg.as_str(), "sha256" | "sha512") {
            return Err(ApiError::DigestInvalid(format!(
                "digest algorithm {alg:?} is not supported (use sha256 or sha512)"
            )));
        }
    }
    if let Some(digest) = digest_param(ctx, "mount")? {
        if let Some(from) = ctx.query.get("from").filter(|f| !f.is_empty()) {
            // `from` names a repository as a client pulls it, so it resolves
            // like one (`docker.io/alpine` is `docker.io/library/alpine`).
            let from = ctx.state.resolver.resolve(from, None, true).await?;
            // Mounting reads `from`: without pull access there, the client
            // uploads the bytes instead (as Distribution does).
            let may_pull = ctx
                .state
                .authorizer
                .check(
                    ctx.client,
                    &ctx.headers,
                    &Access {
                        repository: Some(&from),
                        action: Action::Pull,
                    },
                )
                .await
                .is_ok();
            if may_pull && ctx.registry().blob_mount(&ctx.repo, &from, &digest).await? {
                return Ok(created(ctx, &digest));
            }
        }
        // Not mountable: fall back to an ordinary session, as the spec says.
        let upload = ctx.registry().upload_start(&ctx.repo).await?;
        return Ok(session_response(ctx, StatusCode::ACCEPTED, &upload));
    }
    if let Some(digest) = digest_param(ctx, "digest")? {
        ctx.registry()
            .blob_put(&ctx.repo, &digest, body_stream(body))
            .await?;
        return Ok(created(ctx, &digest));
    }
    let upload = ctx.registry().upload_start(&ctx.repo).await?;
    Ok(session_response(ctx, StatusCode::ACCEPTED, &upload))
}

pub async fn status(ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    let upload = ctx.registry().upload_status(&ctx.repo, id).await?;
    Ok(session_response(ctx, StatusCode::NO_CONTENT, &upload))
}

fn content_length(ctx: &Ctx) -> Option<u64> {
    ctx.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Where a chunk says it starts, from `Content-Range` (checked against
/// `Content-Length` when both are given); `None` for a streamed chunk.
fn chunk_start(ctx: &Ctx) -> Result<Option<u64>, ApiError> {
    let Some(v) = ctx.headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = v
        .to_str()
        .ok()
        .and_then(parse_content_range)
        .ok_or_else(|| ApiError::BadRequest("malformed Content-Range".into()))?;
    if let Some(len) = content_length(ctx) {
        // `end - start + 1` overflows for 0-18446744073709551615: such a
        // range matches no Content-Length.
        if Some(len) != (end - start).checked_add(1) {
            return Err(ApiError::BadRequest(format!(
                "Content-Range {start}-{end} does not match Content-Length {len}"
            )));
        }
    }
    Ok(Some(start))
}

pub async fn patch(ctx: &Ctx, id: &str, body: Body) -> Result<Response, ApiError> {
    let start = chunk_start(ctx)?;
    let upload = ctx
        .registry()
        .upload_append(&ctx.repo, id, start, body_stream(body))
        .await?;
    Ok(session_response(ctx, StatusCode::ACCEPTED, &upload))
}

pub async fn put(ctx: &Ctx, id: &str, body: Body) -> Result<Response, ApiError> {
    let digest = digest_param(ctx, "digest")?
        .ok_or_else(|| ApiError::DigestInvalid("the digest query parameter is required".into()))?;
    let body = match chunk_start(ctx)? {
        // A final chunk with a Content-Range must start where the upload
        // ends (416 otherwise, as for PATCH), before the session closes.
        Some(start) => {
            ctx.registry()
                .upload_append(&ctx.repo, id, Some(start), body_stream(body))
                .await?;
            None
        }
        None => Some(body_stream(body)),
    };
    ctx.registry()
        .upload_complete(&ctx.repo, id, &digest, body)
        .await?;
    Ok(created(ctx, &digest))
}

pub async fn cancel(ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    ctx.registry().upload_cancel(&ctx.repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
