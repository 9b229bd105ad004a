//! HTTP/1.1 for the cache benchmark, one connection per request (as a
//! fresh client pulls), and the image it pulls: generated layers and a
//! config pushed to the upstream with a manifest.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

use crate::{OCI_MANIFEST, REPO, TAG};

const REQUEST_LIMIT: Duration = Duration::from_secs(300);

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Result<Resp> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body.unwrap_or_default()))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        task.abort();
        Ok::<_, anyhow::Error>(Resp {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_LIMIT, work)
        .await
        .map_err(|_| anyhow!("{path}: no answer within {REQUEST_LIMIT:?}"))?
}

/// One blob GET: time to the first body byte, and the bytes' digest.
pub struct BlobGet {
    pub ttfb: Duration,
    pub len: u64,
}

/// With `verify`, the body must hash to `digest`; without, only its length
/// must match the response's Content-Length (see `VERIFY_EVERY`).
pub async fn get_blob(addr: SocketAddr, path: &str, digest: &str, verify: bool) -> Result<BlobGet> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let sent = Instant::now();
        let resp = sender.send_request(req).await?;
        if resp.status() != 200 {
            bail!("GET {path}: {}", resp.status());
        }
        let announced = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = resp.into_body();
        let mut hasher = Sha256::new();
        let (mut len, mut ttfb) = (0u64, None);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if ttfb.is_none() && !data.is_empty() {
                    ttfb = Some(sent.elapsed());
                }
                if verify {
                    hasher.update(&data);
                }
                len += data.len() as u64;
            }
        }
        task.abort();
        if announced != Some(len) {
            bail!("GET {path}: {len} bytes, Content-Length {announced:?}");
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if verify && got != digest {
            bail!("GET {path}: the body hashes to {got}");
        }
        Ok(BlobGet {
            ttfb: ttfb.unwrap_or_else(|| sent.elapsed()),
            len,
        })
    };
    tokio::time::timeout(REQUEST_LIMIT, work)
        .await
        .map_err(|_| anyhow!("GET {path}: not complete within {REQUEST_LIMIT:?}"))?
}

/// Deterministic pseudo-random bytes (xorshift64), different per seed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Push one blob (POST, then a monolithic PUT).
async fn push_blob(addr: SocketAddr, bytes: Bytes) -> Result<String> {
    let digest = sha256_digest(&bytes);
    let start = send(
        addr,
        Method::POST,
        &format!("/v2/{REPO}/blobs/uploads/"),
        &[],
        None,
    )
    .await?;
    if start.status != 202 {
        bail!("starting an upload: {}", start.status);
    }
    let location = start
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("upload without a Location")?;
    let path = match location.find("/v2/") {
        Some(i) => &location[i..],
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = send(
        addr,
        Method::PUT,
        &format!("{path}{sep}digest={digest}"),
        &[("content-type", "application/octet-stream")],
        Some(bytes),
    )
    .await?;
    if put.status != 201 {
        bail!("finishing an upload: {}", put.status);
    }
    Ok(digest)
}

/// Generate `layers` layers adding up to `total` bytes (the first largest)
/// and a config, push them and a manifest tagged [`TAG`]. Returns the blob
/// digests (config first) and their total size.
pub async fn push_image(addr: SocketAddr, layers: usize, total: u64) -> Result<(Vec<String>, u64)> {
    let weights: u64 = (1..=layers as u64).sum();
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    let mut size = 0u64;
    for i in 0..layers {
        let len = (total * (layers - i) as u64 / weights) as usize;
        let bytes = Bytes::from(pseudo_random(len, 1000 + i as u64));
        size += len as u64;
        let digest = push_blob(addr, bytes).await?;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest, "size": len,
        }));
        digests.push(digest);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": digests},
    }))?;
    let config_len = config.len();
    size += config_len as u64;
    let config_digest = push_blob(addr, Bytes::from(config)).await?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_len},
        "layers": descs,
    }))?;
    let put = send(
        addr,
        Method::PUT,
        &format!("/v2/{REPO}/manifests/{TAG}"),
        &[("content-type", OCI_MANIFEST)],
        Some(Bytes::from(manifest)),
    )
    .await?;
    if put.status != 201 {
        bail!(
            "pushing the manifest: {} {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        );
    }
    digests.insert(0, config_digest);
    Ok((digests, size))
}
