//! Stall detection for response bodies: a body that delivers fewer than
//! [`STALL_MIN_BYTES`] within a window of the stall timeout, while it is not
//! finished, is abandoned with a timeout error.
//!
//! A per-read idle timeout cannot catch a trickle (one byte every two
//! seconds keeps every read short and the body alive for hours), so the
//! measure is progress per window: each time the body has delivered
//! [`STALL_MIN_BYTES`] since the window opened, a new window opens.
//!
//! Only time spent waiting on the upstream counts. Between handing a chunk
//! to the reader and the reader's next poll the clock is paused, so a slow
//! reader (a disk, a client behind an uncached stream) never makes the
//! upstream look stalled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::config::STALL_MIN_BYTES;
use crate::error::{TimeoutPhase, UpstreamError};

/// The progress accounting of one body, shared by the stream wrapper and
/// the loop that reads small bodies whole.
#[derive(Debug, Clone)]
pub(crate) struct StallClock {
    window: Duration,
    opened: Instant,
    got: u64,
    /// When a chunk was last handed to the reader (the clock is paused
    /// until its next poll).
    paused_at: Option<Instant>,
}

impl StallClock {
    pub(crate) fn new(window: Duration) -> StallClock {
        StallClock {
            window,
            opened: Instant::now(),
            got: 0,
            paused_at: None,
        }
    }

    /// The instant the current window ends.
    pub(crate) fn deadline(&self) -> Instant {
        self.opened + self.window
    }

    /// The reader is waiting again: time since the last chunk went to it
    /// does not count against the upstream.
    pub(crate) fn resume(&mut self) {
        if let Some(at) = self.paused_at.take() {
            self.opened += at.elapsed();
        }
    }

    /// `n` bytes arrived (and go to the reader now). Opens a new window
    /// once the current one has seen enough.
    pub(crate) fn record(&mut self, n: usize) {
        self.got += n as u64;
        let now = Instant::now();
        if self.got >= STALL_MIN_BYTES {
            self.opened = now;
            self.got = 0;
        }
        self.paused_at = Some(now);
    }

    pub(crate) fn error(&self, context: &str) -> UpstreamError {
        UpstreamError::timeout(
            &format!("{context}: fewer than {STALL_MIN_BYTES} bytes within the stall window"),
            TimeoutPhase::Stall,
            self.window,
        )
    }
}

/// A body stream that ends in a stall error when it stops making progress.
pub(crate) struct Stalling<S> {
    inner: S,
    clock: StallClock,
    sleep: Pin<Box<Sleep>>,
    context: String,
    done: bool,
}

impl<S> Stalling<S> {
    pub(crate) fn new(inner: S, window: Duration, context: String) -> Self {
        let clock = StallClock::new(window);
        Stalling {
            sleep: Box::pin(tokio::time::sleep_until(clock.deadline())),
            inner,
            clock,
            context,
            done: false,
        }
    }
}

impl<S> Stream for Stalling<S>
where
    S: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
{
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        this.clock.resume();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.clock.record(chunk.len());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                this.done = true;
                Poll::Ready(other)
            }
            Poll::Pending => {
                let deadline = this.clock.deadline();
                if this.sleep.deadline() != deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.done = true;
                        Poll::Ready(Some(Err(this.clock.error(&this.context))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    type Item = Result<Bytes, UpstreamError>;

    /// `n` chunks of `size` bytes, `every` apart.
    fn paced(n: usize, size: usize, every: Duration) -> Pin<Box<dyn Stream<Item = Item> + Send>> {
        Box::pin(futures::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from(vec![b'x'; size]))
        }))
    }

    async fn drain(mut s: impl Stream<Item = Item> + Unpin) -> (u64, Option<UpstreamError>) {
        let mut n = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => n += b.len() as u64,
                Err(e) => return (n, Some(e)),
            }
        }
        (n, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_a_stall() {
        let window = Duration::from_secs(20);
        let started = Instant::now();
        let s = Stalling::new(
            paced(1000, 1, Duration::from_secs(2)),
            window,
            "GET blob".into(),
        );
        let (n, err) = drain(s).await;
        let err = err.expect("a trickle must fail");
        assert_eq!(err.timed_out(), Some(TimeoutPhase::Stall), "{err}");
        assert!(err.is_unavailable());
        assert!(n < 20, "{n} bytes passed before the stall was noticed");
        assert_eq!(started.elapsed(), window);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_stall_and_steady_progress_is_not() {
        let window = Duration::from_secs(5);
        let silent = Stalling::new(
            Box::pin(futures::stream::pending::<Item>()),
            window,
            "x".into(),
        );
        let started = Instant::now();
        let (_, err) = drain(silent).await;
        assert!(err.is_some());
        assert_eq!(started.elapsed(), window);

        // Slow but moving: 2 KiB every 4 s for a minute.
        let slow = Stalling::new(paced(15, 2048, Duration::from_secs(4)), window, "x".into());
        let (n, err) = drain(slow).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(n, 15 * 2048);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_the_upstreams_fault() {
        let window = Duration::from_secs(5);
        let mut s = Stalling::new(paced(3, 10, Duration::from_secs(1)), window, "x".into());
        let mut n = 0;
        while let Some(item) = s.next().await {
            n += item.expect("no stall").len();
            // The reader dawdles far beyond the window after each chunk.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        assert_eq!(n, 30);
    }
}
