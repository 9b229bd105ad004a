//! `GET /v2/<name>/referrers/<digest>[?artifactType=…]`.

use axum::body::Body;
use axum::response::Response;
use berth_manifest::media_type;
use berth_reference::Digest;
use http::header;

use crate::error::ApiError;
use crate::{set_header, Ctx};

pub async fn get(ctx: &Ctx, subject: &Digest) -> Result<Response, ApiError> {
    let filter = ctx
        .query
        .get("artifactType")
        .map(String::as_str)
        .filter(|a| !a.is_empty());
    // A mirror's list includes what its upstream attaches.
    let index = match ctx.mirror() {
        Some(cache) => cache.referrers(&ctx.repo, subject, filter).await?,
        None => ctx.registry().referrers(&ctx.repo, subject, filter).await?,
    };
    let len = index.len();
    let mut resp = Response::new(Body::from(index));
    let h = resp.headers_mut();
    set_header(h, header::CONTENT_TYPE, media_type::OCI_INDEX);
    set_header(h, header::CONTENT_LENGTH, len.to_string());
    if filter.is_some() {
        set_header(h, "OCI-Filters-Applied", "artifactType");
    }
    Ok(resp)
}
