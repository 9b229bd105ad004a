//! `POST /v2/<name>/prefetch/<reference>[?platform=os/arch,...]`: berth's
//! own extension for `berth cache`. The mirror fetches the image from its
//! upstream itself — every platform unless `platform` names some — and
//! answers with one JSON line per step (`application/x-ndjson`: each
//! manifest, each blob, a `waiting` line every few seconds of a long
//! fill, then `done` or `error`), so the client sees progress without
//! carrying the bytes. The route is a POST, so access control treats it as
//! a push: on a mirror namespace only a rule naming the host grants it,
//! which keeps it to the operators who may fill the cache.

use axum::body::Body;
use axum::response::Response;
use berth_cache::prefetch::{Event, Platforms};
use berth_reference::ManifestRef;
use bytes::Bytes;
use http::header;

use crate::error::ApiError;
use crate::{set_header, Ctx};

pub async fn post(ctx: &Ctx, reference: ManifestRef) -> Result<Response, ApiError> {
    let Some(cache) = ctx.mirror().cloned() else {
        // A local repository has no upstream to fetch from.
        return Err(ApiError::Unsupported);
    };
    let platforms = Platforms(
        ctx.query
            .get("platform")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let repo = ctx.repo.clone();
    tokio::spawn(async move { cache.prefetch(repo, reference, platforms, tx).await });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    set_header(
        resp.headers_mut(),
        header::CONTENT_TYPE,
        "application/x-ndjson",
    );
    Ok(resp)
}
