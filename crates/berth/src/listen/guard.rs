//! Timeouts where the bytes move, so that they hold for plain HTTP, TLS,
//! HTTP/1.1 and HTTP/2 alike:
//!
//! - [`Watched`] wraps a connection's socket (or TLS stream): a read that
//!   waits between requests fails after the header or idle timeout, and a
//!   write the client has not taken for the send timeout fails, which ends
//!   the connection and frees what its response held;
//! - [`RequestBody`] fails a request body that delivers nothing for the
//!   body timeout, so the handler sees a broken body (an upload keeps what
//!   arrived) instead of waiting for ever;
//! - [`ResponseBody`] tells the connection when a response has been sent
//!   in full, which is when the connection is idle again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::conn::ConnState;
use super::limits::Limits;

/// A timer that wakes the task by a deadline. It is lazy, because the
/// connections of a busy server wait for bytes tens of thousands of times a
/// second: an armed timer is kept across waits and only moved when a wait
/// needs an earlier wake-up. Waking early is harmless, since the caller
/// re-checks its deadline whenever it is polled.
#[derive(Default)]
struct Timer {
    armed: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Timer {
    /// Whether `deadline` has passed; if not, the task is woken by then.
    fn expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= deadline {
            return true;
        }
        match &mut self.armed {
            None => {
                let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
                let _ = sleep.as_mut().poll(cx);
                self.armed = Some((deadline, sleep));
            }
            Some((at, sleep)) => {
                // Fired for an earlier wait, or set later than needed now.
                if sleep.as_mut().poll(cx).is_ready() || *at > deadline {
                    sleep.as_mut().reset(deadline);
                    *at = deadline;
                    let _ = sleep.as_mut().poll(cx);
                }
            }
        }
        false
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// A client connection's byte stream, with the header, idle and send
/// timeouts applied.
pub struct Watched<IO> {
    io: IO,
    conn: Arc<ConnState>,
    limits: Limits,
    read_timer: Timer,
    write_timer: Timer,
    /// Since when a write has been waiting for the client to read.
    write_waiting: Option<Instant>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, conn: Arc<ConnState>, limits: Limits) -> Self {
        Watched {
            io,
            conn,
            limits,
            read_timer: Timer::default(),
            write_timer: Timer::default(),
            write_waiting: None,
        }
    }

    /// A write made no progress: fail once the client has read nothing
    /// for the send timeout.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let since = *self.write_waiting.get_or_insert_with(Instant::now);
        if self
            .write_timer
            .expired(since + self.limits.send_timeout, cx)
        {
            return Poll::Ready(Err(timed_out(
                "the client read nothing for the send timeout",
            )));
        }
        Poll::Pending
    }

    /// A write made progress (its timer stays armed: see [`Timer`]).
    fn wrote(&mut self) {
        self.write_waiting = None;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.conn.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.conn.waiting_to_read(cx.waker());
                match this.conn.read_deadline(&this.limits) {
                    Some(deadline) if this.read_timer.expired(deadline, cx) => Poll::Ready(Err(
                        timed_out("no complete request within the header or idle timeout"),
                    )),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.write_stalled(cx),
            ready => {
                this.wrote();
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.write_stalled(cx),
            ready => {
                this.wrote();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.write_stalled(cx).map_ok(|_| ()),
            ready => {
                this.wrote();
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request body that fails when it delivers nothing for `timeout`.
pub struct RequestBody<B> {
    inner: B,
    timeout: Duration,
    waiting: Option<Instant>,
    timer: Timer,
}

impl<B> RequestBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        RequestBody {
            inner,
            timeout,
            waiting: None,
            timer: Timer::default(),
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let since = *this.waiting.get_or_insert_with(Instant::now);
                if this.timer.expired(since + this.timeout, cx) {
                    let secs = this.timeout.as_secs_f64();
                    return Poll::Ready(Some(Err(timed_out(&format!(
                        "the request body sent nothing for {secs}s"
                    ))
                    .into())));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells its connection when it is done with (sent
/// in full, or dropped because the connection ended).
pub struct ResponseBody<B> {
    inner: B,
    conn: Arc<ConnState>,
}

impl<B> ResponseBody<B> {
    /// `conn` has already counted this request as started.
    pub fn new(inner: B, conn: Arc<ConnState>) -> Self {
        ResponseBody { inner, conn }
    }
}

impl<B> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        self.conn.response_finished();
    }
}

impl<B: Body + Unpin> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request as in flight until its response (or the future that
/// would have made it) is dropped, whichever is last to hold it.
pub struct InFlight {
    conn: Arc<ConnState>,
    handed_over: bool,
}

impl InFlight {
    pub fn start(conn: Arc<ConnState>) -> InFlight {
        conn.request_started();
        InFlight {
            conn,
            handed_over: false,
        }
    }

    /// Hand the count over to the response body.
    pub fn into_body<B>(mut self, body: B) -> ResponseBody<B> {
        self.handed_over = true;
        ResponseBody::new(body, self.conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.handed_over {
            self.conn.response_finished();
        }
    }
}
