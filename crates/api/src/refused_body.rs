//! Reading what is left of a refused request's body before answering.
//!
//! berth refuses many uploads before reading their bodies: a chunk out of
//! order (416), an unknown upload session (404), a manifest announced too
//! large (413), a denied push (401/403). If the answer goes out while the
//! client is still sending, HTTP/1.1 closes the connection with bytes
//! unread (the kernel resets it, and the client sees "Broken pipe" instead
//! of the answer), and HTTP/2 resets the stream after the response, which
//! clients such as curl 7.88 report as a framing error. So the body a
//! handler dropped unfinished is handed back here, and when the answer is
//! an error the rest of it is read and discarded first — up to
//! [`DRAIN_LIMIT`] bytes within [`DRAIN_TIME`]; past either the answer
//! goes out anyway, as before. A client that sent `Expect: 100-continue`
//! and whose body the handler never touched has sent nothing yet and is
//! answered at once (reading would ask it for the body); once the handler
//! has read some (the go-ahead went out), the rest is read like anyone's.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::header;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

/// At most this much of a refused body is read before answering.
pub const DRAIN_LIMIT: u64 = 16 << 20;
/// At most this long is spent reading it.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Where a body dropped before its end is handed back, and whether the
/// handler ever asked it for bytes.
#[derive(Default)]
struct Shared {
    rest: Mutex<Option<Body>>,
    polled: AtomicBool,
}

/// Middleware: requests with a body get it wrapped so that what a handler
/// leaves unread comes back; error answers wait until it is read.
pub async fn read_refused_bodies(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let waits_for_go_ahead = expects_continue(&req);
    let shared = Arc::new(Shared::default());
    let (parts, body) = req.into_parts();
    let body = Body::new(HandBack {
        inner: Some(body),
        shared: shared.clone(),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    let refused = resp.status().is_client_error() || resp.status().is_server_error();
    let sending = !waits_for_go_ahead || shared.polled.load(Ordering::Relaxed);
    if refused && sending {
        let rest = shared.rest.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rest) = rest {
            // Whatever happens while reading (a limit, a reset, a timeout),
            // the answer is the same; only the connection's fate differs.
            let _ = tokio::time::timeout(DRAIN_TIME, discard(rest, DRAIN_LIMIT)).await;
        }
    }
    resp
}

fn expects_continue(req: &Request) -> bool {
    req.headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and drops frames until the body ends, fails, or `limit` bytes.
async fn discard(mut body: Body, limit: u64) {
    let mut read = 0u64;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// A request body that, dropped before its end, gives itself back.
struct HandBack {
    inner: Option<Body>,
    shared: Arc<Shared>,
}

impl HttpBody for HandBack {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.shared.polled.store(true, Ordering::Relaxed);
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if !inner.is_end_stream() {
                *self.shared.rest.lock().unwrap_or_else(|e| e.into_inner()) = Some(inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::put;
    use axum::Router;
    use futures::StreamExt;
    use http::StatusCode;
    use tower::ServiceExt;

    /// A body of `chunks` frames of 64 KiB, counting how many were pulled.
    fn counted(chunks: usize, pulled: Arc<Mutex<usize>>) -> Body {
        let stream = futures::stream::iter(0..chunks).map(move |_| {
            *pulled.lock().unwrap() += 1;
            Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 64 << 10]))
        });
        Body::from_stream(stream)
    }

    async fn send(app: Router, chunks: usize, expect: bool) -> (StatusCode, usize) {
        let pulled = Arc::new(Mutex::new(0));
        let mut req = Request::put("/")
            .body(counted(chunks, pulled.clone()))
            .unwrap();
        if expect {
            req.headers_mut()
                .insert(header::EXPECT, "100-continue".parse().unwrap());
        }
        let resp = app.oneshot(req).await.unwrap();
        let n = *pulled.lock().unwrap();
        (resp.status(), n)
    }

    fn app(status: StatusCode, read_frames: usize) -> Router {
        Router::new()
            .route(
                "/",
                put(move |body: Body| async move {
                    let mut body = body;
                    for _ in 0..read_frames {
                        let _ = body.frame().await;
                    }
                    status
                }),
            )
            .layer(axum::middleware::from_fn(read_refused_bodies))
    }

    #[tokio::test]
    async fn an_error_answer_waits_for_the_rest_of_the_body() {
        let (status, pulled) = send(app(StatusCode::RANGE_NOT_SATISFIABLE, 1), 20, false).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(pulled, 20);
    }

    #[tokio::test]
    async fn a_success_does_not_read_what_the_handler_left() {
        let (status, pulled) = send(app(StatusCode::ACCEPTED, 2), 20, false).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(pulled, 2);
    }

    #[tokio::test]
    async fn reading_stops_at_the_limit() {
        let frames = (DRAIN_LIMIT as usize / (64 << 10)) * 4;
        let (_, pulled) = send(app(StatusCode::NOT_FOUND, 0), frames, false).await;
        assert!(pulled < frames / 2, "{pulled} of {frames} frames read");
        assert!(pulled as u64 * (64 << 10) > DRAIN_LIMIT);
    }

    #[tokio::test]
    async fn a_go_ahead_already_given_means_the_rest_is_read() {
        let (status, pulled) = send(app(StatusCode::BAD_REQUEST, 1), 20, true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(pulled, 20);
    }

    #[tokio::test]
    async fn a_client_waiting_for_100_continue_is_answered_at_once() {
        let (status, pulled) = send(app(StatusCode::UNAUTHORIZED, 0), 20, true).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(pulled, 0);
    }
}
