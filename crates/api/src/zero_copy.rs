//! Zero-copy blob sends: over a plain HTTP/1.x connection a blob's bytes
//! go from its file to the socket with `sendfile(2)`, never through user
//! space, the way nginx serves files.
//!
//! hyper owns the connection and writes every byte of a response, so the
//! bytes cannot be handed to the kernel behind its back. Instead the blob
//! handler answers with a [`ZeroCopy::body`]: a body of the right length
//! whose frames are *placeholders*, slices of one never-written static
//! region, and which files a [`Job`] (which file, from where, how much)
//! with the connection's outbox when hyper first polls it. The socket under
//! the connection, a [`SendFileSocket`], writes whatever hyper gives it as
//! usual until a slice lies inside the placeholder region: those bytes it
//! takes from the oldest job's file instead, with `sendfile`. hyper writes
//! a response's bytes in order and one response at a time, so the n-th
//! placeholder byte written is the n-th byte of the oldest job.
//!
//! What keeps this safe:
//! - Placeholders are recognised by address, so they must reach the socket
//!   as the very slices the body yielded: the listener sets hyper's vectored
//!   ("queue") write strategy on these connections, which never copies body
//!   frames; TLS and HTTP/2 connections, which do copy, get no [`ZeroCopy`]
//!   handle and so the handler streams as before.
//! - A placeholder with no job behind it, or a file that ends early, fails
//!   the write: the connection closes and the client sees a short body (its
//!   Content-Length says so), never placeholder bytes passed off as a blob.
//! - Blob files are content-addressed and never rewritten; one deleted while
//!   it is sent (GC) stays readable through the open descriptor.
//!
//! A blob still being filled by the cache goes the same way
//! ([`ZeroCopy::following_body`]): one job per frame, each for bytes the
//! fill has announced as written, so its followers share the page cache
//! instead of each reading the bytes back into memory.
//!
//! A `sendfile` of bytes not in the page cache waits for the disk on the
//! runtime's thread, as nginx's does without its thread pool; the
//! registry's blobs are read far more often than they are cold.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The placeholder region: how much one frame stands for, and so the most
/// one `sendfile` call is asked to move (the socket's buffer usually takes
/// less). It is allocated zeroed and never written, so its pages are never
/// backed by memory.
const PLACEHOLDER_LEN: usize = 4 << 20;

fn placeholder() -> &'static [u8] {
    static REGION: OnceLock<&'static [u8]> = OnceLock::new();
    REGION.get_or_init(|| Vec::leak(vec![0u8; PLACEHOLDER_LEN]))
}

/// Blob bytes sent by `sendfile` since the process started (exported as
/// `berth_blob_sendfile_bytes_total`): how much of the traffic skipped user
/// space, and the test's evidence that a GET took this path.
pub static SENT_BYTES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Whether `slice` lies inside the placeholder region (compared by
/// address: the bytes themselves mean nothing).
fn is_placeholder(slice: &[u8]) -> bool {
    let region = placeholder();
    let (start, end) = (
        region.as_ptr() as usize,
        region.as_ptr() as usize + region.len(),
    );
    let at = slice.as_ptr() as usize;
    !slice.is_empty() && at >= start && at + slice.len() <= end
}

/// Bytes of a file still to be sent in place of placeholders.
struct Job {
    file: Arc<std::fs::File>,
    offset: u64,
    remaining: u64,
}

/// The jobs of one connection, oldest first.
#[derive(Default)]
struct Outbox {
    jobs: Mutex<VecDeque<Job>>,
}

impl Outbox {
    fn jobs(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // A panic while holding this lock cannot leave a job half-updated
        // in a way that matters more than the connection it belongs to.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's handle for answering with zero-copy bodies; the listener
/// puts it into the extensions of requests it may be used for.
#[derive(Clone)]
pub struct ZeroCopy(Arc<Outbox>);

impl ZeroCopy {
    /// A body of `len` bytes of `file` from `offset`, sent by `sendfile`.
    /// The caller has checked that the file holds them.
    pub fn body(&self, file: std::fs::File, offset: u64, len: u64) -> axum::body::Body {
        if len == 0 {
            return axum::body::Body::empty();
        }
        axum::body::Body::new(PlaceholderBody {
            outbox: self.0.clone(),
            job: Some(Job {
                file: Arc::new(file),
                offset,
                remaining: len,
            }),
            remaining: len,
        })
    }
}

impl ZeroCopy {
    /// A body of bytes `start..end` of `file` that are still being written:
    /// each frame is a placeholder for bytes `available` has said are there,
    /// filed as its own job; the body waits for more as they land. An error
    /// from `available` ends the body early (the client sees a short body).
    pub fn following_body(
        &self,
        file: std::fs::File,
        start: u64,
        end: u64,
        available: futures::stream::BoxStream<'static, io::Result<u64>>,
    ) -> axum::body::Body {
        if start >= end {
            return axum::body::Body::empty();
        }
        axum::body::Body::new(FollowingBody {
            outbox: self.0.clone(),
            file: Arc::new(file),
            pos: start,
            end,
            ready: start,
            available,
        })
    }
}

/// The body of [`ZeroCopy::following_body`].
struct FollowingBody {
    outbox: Arc<Outbox>,
    file: Arc<std::fs::File>,
    /// Next byte to offer, end of the range, and how far the file holds it.
    pos: u64,
    end: u64,
    ready: u64,
    available: futures::stream::BoxStream<'static, io::Result<u64>>,
}

impl http_body::Body for FollowingBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        use futures::Stream;
        let this = self.get_mut();
        loop {
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            if this.ready > this.pos {
                let n = (this.ready.min(this.end) - this.pos).min(PLACEHOLDER_LEN as u64);
                // Filed as the frame is handed over: the socket takes the
                // frame's bytes from this job, in order.
                this.outbox.jobs().push_back(Job {
                    file: this.file.clone(),
                    offset: this.pos,
                    remaining: n,
                });
                this.pos += n;
                // `n` fits: it is at most PLACEHOLDER_LEN.
                let frame = Bytes::from_static(&placeholder()[..n as usize]);
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            match Pin::new(&mut this.available).poll_next(cx) {
                Poll::Ready(Some(Ok(ready))) => this.ready = this.ready.max(ready),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download ended before the blob's size",
                    ))))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

/// The response body a zero-copy send answers with (see the module docs).
struct PlaceholderBody {
    outbox: Arc<Outbox>,
    /// Filed with the outbox when hyper starts writing this body (not
    /// before: a response hyper never writes must not queue bytes).
    job: Option<Job>,
    remaining: u64,
}

impl http_body::Body for PlaceholderBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(job) = this.job.take() {
            this.outbox.jobs().push_back(job);
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(PLACEHOLDER_LEN as u64);
        this.remaining -= n;
        // `n` fits: it is at most PLACEHOLDER_LEN.
        let frame = Bytes::from_static(&placeholder()[..n as usize]);
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.job.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A plain TCP connection's socket that sends placeholder bytes from their
/// files (see the module docs); everything else passes through.
pub struct SendFileSocket {
    tcp: TcpStream,
    outbox: Arc<Outbox>,
}

impl SendFileSocket {
    pub fn new(tcp: TcpStream) -> Self {
        SendFileSocket {
            tcp,
            outbox: Arc::default(),
        }
    }

    /// The handle for this connection's requests.
    pub fn handle(&self) -> ZeroCopy {
        ZeroCopy(self.outbox.clone())
    }

    /// Send up to `want` bytes of the oldest job.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            if self.tcp.poll_write_ready(cx)?.is_pending() {
                return Poll::Pending;
            }
            let mut jobs = self.outbox.jobs();
            let Some(job) = jobs.front_mut() else {
                return Poll::Ready(Err(io::Error::other(
                    "zero-copy placeholder with no file to send",
                )));
            };
            let count = (want as u64).min(job.remaining) as usize;
            let file = job.file.clone();
            let mut offset = job.offset;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &*file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) if count > 0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file ended before its size",
                    )))
                }
                Ok(n) => {
                    SENT_BYTES.inc_by(n as u64);
                    job.offset += n as u64;
                    job.remaining -= n as u64;
                    if job.remaining == 0 {
                        jobs.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                // Readiness was stale: `try_io` cleared it; wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendFileSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendFileSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_placeholder(buf) {
            return this.poll_send_file(cx, buf.len());
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Write what precedes the first placeholder (headers, another
        // body's bytes); a placeholder at the front is sent from its file.
        match bufs.iter().position(|b| is_placeholder(b)) {
            None => Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs),
            Some(k) if bufs[..k].iter().all(|b| b.is_empty()) => {
                this.poll_send_file(cx, bufs[k].len())
            }
            Some(k) => Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..k]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
