//! The measuring HTTP client: one plain HTTP/1.1 connection per [`Conn`],
//! requests sent one at a time on it, bodies streamed in and out.
//!
//! It is deliberately minimal (no pool, no redirects, no retries) so that
//! what a workload times is the server's work plus one loopback connection,
//! the same for every server measured. Every request has a time limit.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// A request body: empty, small, or a generated stream.
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Read buffer for responses: large, so that reading a big blob costs few
/// system calls on the client side (the same for every server).
const READ_BUFFER: usize = 1024 * 1024;

pub fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// One keep-alive connection to a server on loopback.
pub struct Conn {
    addr: SocketAddr,
    sender: http1::SendRequest<ReqBody>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response whose body has not been read yet.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Read the whole (small) body.
    pub async fn bytes(self, limit: Duration) -> Result<Bytes> {
        let collected = tokio::time::timeout(limit, self.body.collect())
            .await
            .context("timed out reading a response body")?
            .context("reading a response body")?;
        Ok(collected.to_bytes())
    }

    /// Read and discard the body, returning how many bytes it had.
    pub async fn drain(self, limit: Duration) -> Result<u64> {
        let mut body = self.body;
        let work = async move {
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame.context("reading a response body")?.data_ref() {
                    n += data.len() as u64;
                }
            }
            Ok::<_, anyhow::Error>(n)
        };
        tokio::time::timeout(limit, work)
            .await
            .context("timed out reading a response body")?
    }

    /// Fail unless the status is `want`; the error carries the body's start.
    pub async fn expect(self, want: StatusCode, what: &str) -> Result<Resp> {
        if self.status == want {
            return Ok(self);
        }
        let status = self.status;
        let body = self.bytes(Duration::from_secs(5)).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        bail!("{what}: expected {want}, got {status}: {text}")
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .with_context(|| format!("timed out connecting to {addr}"))?
                .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { addr, sender, task })
    }

    /// Send one request; `target` is a path with query, or an absolute URL
    /// on this server (as `Location` headers may be).
    pub async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
        limit: Duration,
    ) -> Result<Resp> {
        let path = path_of(target)?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).context("building a request")?;
        let work = async {
            self.sender
                .ready()
                .await
                .context("connection no longer usable")?;
            self.sender
                .send_request(req)
                .await
                .with_context(|| format!("{method} {path}"))
        };
        let resp = tokio::time::timeout(limit, work)
            .await
            .with_context(|| format!("{method} {path}: no response within {limit:?}"))??;
        let (parts, body) = resp.into_parts();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send(Method::GET, target, headers, empty(), SMALL)
            .await
    }
}

/// Time limit for a request that moves little data.
pub const SMALL: Duration = Duration::from_secs(30);
/// Time limit for a request that moves a large blob.
pub const LARGE: Duration = Duration::from_secs(300);

/// `http://host:port/path?q` → `/path?q`; a path is returned as is.
pub fn path_of(target: &str) -> Result<&str> {
    if target.starts_with('/') {
        return Ok(target);
    }
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("unexpected URL {target:?}"))?;
    Ok(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// Append a query parameter to a URL that may already have a query.
pub fn with_param(target: &str, key: &str, value: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_params() {
        assert_eq!(path_of("/v2/x?a=1").unwrap(), "/v2/x?a=1");
        assert_eq!(
            path_of("http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=s").unwrap(),
            "/v2/x/blobs/uploads/u?_state=s"
        );
        assert_eq!(path_of("http://127.0.0.1:5000").unwrap(), "/");
        assert!(path_of("ftp://x/").is_err());
        assert_eq!(with_param("/u", "digest", "d"), "/u?digest=d");
        assert_eq!(with_param("/u?s=1", "digest", "d"), "/u?s=1&digest=d");
    }
}
