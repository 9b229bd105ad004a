//! The registry operations the workloads are made of, spoken over
//! [`Conn`] exactly as the OCI Distribution Spec describes them, so that
//! berth and Distribution are driven identically: two-step monolithic push
//! (`POST` then `PUT ?digest=` with the whole body: Distribution 2.8 has no
//! single-`POST` push), chunked push (`PATCH` with `Content-Range`), blob and
//! manifest reads, cross-repository mounts, and paginated listings.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http::{Method, StatusCode};

use crate::blob::Blob;
use crate::client::{empty, full, with_param, Conn, LARGE, SMALL};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ACCEPT_MANIFESTS: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// `POST /v2/<repo>/blobs/uploads/` → the session's `Location`.
async fn start_upload(c: &mut Conn, repo: &str) -> Result<String> {
    let r = c
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[("content-length", "0")],
            empty(),
            SMALL,
        )
        .await?
        .expect(StatusCode::ACCEPTED, "starting an upload")
        .await?;
    let location = r
        .header("location")
        .context("upload session without Location")?
        .to_string();
    r.drain(SMALL).await?;
    Ok(location)
}

/// The `201 Created` that ends a push must name the digest pushed.
async fn check_created(r: crate::client::Resp, blob: &Blob, what: &str) -> Result<()> {
    let r = r.expect(StatusCode::CREATED, what).await?;
    match r.header("docker-content-digest") {
        Some(d) if d == blob.digest => {}
        other => bail!(
            "{what}: server reported digest {other:?}, pushed {}",
            blob.digest
        ),
    }
    r.drain(SMALL).await?;
    Ok(())
}

/// Monolithic push: open a session, then `PUT` the whole blob with its
/// digest. The server hashes every byte and must accept the digest.
pub async fn push_monolithic(c: &mut Conn, repo: &str, blob: &Blob) -> Result<Duration> {
    let t = Instant::now();
    let location = start_upload(c, repo).await?;
    let len = blob.size.to_string();
    let r = c
        .send(
            Method::PUT,
            &with_param(&location, "digest", &blob.digest),
            &[
                ("content-type", "application/octet-stream"),
                ("content-length", &len),
            ],
            blob.body(0, blob.size),
            LARGE,
        )
        .await?;
    check_created(r, blob, "monolithic push").await?;
    Ok(t.elapsed())
}

/// Chunked push: `PATCH` chunks of `chunk` bytes with `Content-Range`,
/// following each response's `Location`, then `PUT ?digest=` with no body.
pub async fn push_chunked(c: &mut Conn, repo: &str, blob: &Blob, chunk: u64) -> Result<Duration> {
    let t = Instant::now();
    let mut location = start_upload(c, repo).await?;
    let mut offset = 0;
    while offset < blob.size {
        let n = chunk.min(blob.size - offset);
        let range = format!("{offset}-{}", offset + n - 1);
        let len = n.to_string();
        let r = c
            .send(
                Method::PATCH,
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                    ("content-length", &len),
                ],
                blob.body(offset, n),
                LARGE,
            )
            .await?
            .expect(StatusCode::ACCEPTED, "uploading a chunk")
            .await?;
        location = r
            .header("location")
            .context("chunk accepted without Location")?
            .to_string();
        r.drain(SMALL).await?;
        offset += n;
    }
    let r = c
        .send(
            Method::PUT,
            &with_param(&location, "digest", &blob.digest),
            &[("content-length", "0")],
            empty(),
            LARGE,
        )
        .await?;
    check_created(r, blob, "completing a chunked push").await?;
    Ok(t.elapsed())
}

/// `GET` a path that must answer 200 with exactly `size` bytes.
pub async fn get_sized(c: &mut Conn, path: &str, size: u64) -> Result<Duration> {
    let t = Instant::now();
    let r = c
        .send(Method::GET, path, &[], empty(), LARGE)
        .await?
        .expect(StatusCode::OK, "downloading a blob")
        .await?;
    let n = r.drain(LARGE).await?;
    if n != size {
        bail!("GET {path}: got {n} bytes, expected {size}");
    }
    Ok(t.elapsed())
}

pub fn blob_path(repo: &str, blob: &Blob) -> String {
    format!("/v2/{repo}/blobs/{}", blob.digest)
}

/// Push a manifest under a tag (or digest).
pub async fn put_manifest(c: &mut Conn, repo: &str, reference: &str, body: &[u8]) -> Result<()> {
    let len = body.len().to_string();
    c.send(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("content-type", OCI_MANIFEST), ("content-length", &len)],
        full(body.to_vec()),
        SMALL,
    )
    .await?
    .expect(StatusCode::CREATED, "pushing a manifest")
    .await?
    .drain(SMALL)
    .await?;
    Ok(())
}

/// A minimal OCI image manifest over a config and one layer.
pub fn image_manifest(config: &Blob, layer: &Blob) -> Vec<u8> {
    image_manifest_of(config, std::slice::from_ref(layer))
}

/// A minimal OCI image manifest over a config and its layers.
pub fn image_manifest_of(config: &Blob, layers: &[Blob]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": l.digest,
                "size": l.size,
            })
        })
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.size,
        },
        "layers": layers,
    })
    .to_string()
    .into_bytes()
}

/// `DELETE` a manifest by digest: must answer 202 Accepted.
pub async fn delete_manifest(c: &mut Conn, repo: &str, digest: &str) -> Result<()> {
    c.send(
        Method::DELETE,
        &format!("/v2/{repo}/manifests/{digest}"),
        &[("content-length", "0")],
        empty(),
        SMALL,
    )
    .await?
    .expect(StatusCode::ACCEPTED, "deleting a manifest")
    .await?
    .drain(SMALL)
    .await?;
    Ok(())
}

/// `GET` a manifest or blob and return its status and (small) body.
pub async fn get_small(c: &mut Conn, path: &str, accept: &str) -> Result<(StatusCode, Vec<u8>)> {
    let r = c.get(path, &[("accept", accept)]).await?;
    let status = r.status;
    let body = r.bytes(SMALL).await?;
    Ok((status, body.to_vec()))
}

/// Cross-repository mount; must succeed (201), since a repository only
/// appears in Distribution's catalog once it holds a layer link.
pub async fn mount(c: &mut Conn, repo: &str, from: &str, blob: &Blob) -> Result<()> {
    c.send(
        Method::POST,
        &format!(
            "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
            blob.digest
        ),
        &[("content-length", "0")],
        empty(),
        SMALL,
    )
    .await?
    .expect(StatusCode::CREATED, "mounting a blob")
    .await?
    .drain(SMALL)
    .await?;
    Ok(())
}

/// The next page's URL from an RFC 8288 `Link: <url>; rel="next"`.
fn next_link(link: Option<&str>) -> Option<String> {
    let link = link?;
    if !link.contains("rel=\"next\"") {
        return None;
    }
    let start = link.find('<')? + 1;
    let end = link[start..].find('>')? + start;
    Some(link[start..end].to_string())
}

/// Every repository in the catalog, in pages of `n` following `Link`.
/// Returns the time spent in the HTTP exchanges (request sent to last body
/// byte received; the client parsing the JSON is not counted) and the count.
pub async fn catalog_all(c: &mut Conn, n: usize) -> Result<(Duration, usize)> {
    let mut url = format!("/v2/_catalog?n={n}");
    let mut total = 0;
    let mut spent = Duration::ZERO;
    for _ in 0..100_000 {
        let t = Instant::now();
        let r = c
            .get(&url, &[])
            .await?
            .expect(StatusCode::OK, "listing the catalog")
            .await?;
        let next = next_link(r.header("link"));
        let body = r.bytes(SMALL).await?;
        spent += t.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&body).context("catalog JSON")?;
        total += v["repositories"]
            .as_array()
            .context("catalog without repositories")?
            .len();
        match next {
            Some(next) => url = next,
            None => return Ok((spent, total)),
        }
    }
    bail!("the catalog never ended")
}

/// The tags `tags/list` returns for `repo` (one request): the time of the
/// HTTP exchange (not the client's JSON parsing) and the count.
pub async fn tags_list(c: &mut Conn, repo: &str) -> Result<(Duration, usize)> {
    let t = Instant::now();
    let r = c
        .get(&format!("/v2/{repo}/tags/list"), &[])
        .await?
        .expect(StatusCode::OK, "listing tags")
        .await?;
    let body = r.bytes(SMALL).await?;
    let spent = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&body).context("tag list JSON")?;
    let count = v["tags"].as_array().context("tag list without tags")?.len();
    Ok((spent, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(Some("</v2/_catalog?last=a&n=2>; rel=\"next\"")),
            Some("/v2/_catalog?last=a&n=2".into())
        );
        assert_eq!(next_link(Some("</x>; rel=\"prev\"")), None);
        assert_eq!(next_link(None), None);
    }
}
