//! Blob bodies as they come off the wire: a [`BlobBody`] is a stream that is
//! never buffered, with its length, and (for a whole blob) verified against
//! its digest as it streams.
//!
//! Verification lives here, in the stream, so that no caller can forget it:
//! a body whose bytes do not hash to the digest asked for ends with a
//! [`UpstreamError::DigestMismatch`] item instead of a clean end, which a
//! writer sees before it commits what it stored.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_reference::{Digest, DigestHasher};
use bytes::Bytes;
use futures::Stream;

use crate::error::UpstreamError;

/// A stream of body bytes.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static>>;

/// A byte range to request: `start..=end`, or `start..` when `end` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive, as in HTTP.
    pub end: Option<u64>,
}

impl ByteRange {
    pub(crate) fn header_value(&self) -> String {
        match self.end {
            Some(e) => format!("bytes={}-{e}", self.start),
            None => format!("bytes={}-", self.start),
        }
    }
}

/// What a `Content-Range: bytes START-END/TOTAL` header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    /// `None` when the server sent `*`.
    pub total: Option<u64>,
}

impl ContentRange {
    pub fn parse(s: &str) -> Option<ContentRange> {
        let rest = s.trim().strip_prefix("bytes")?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let (start, end) = range.split_once('-')?;
        let start = start.trim().parse().ok()?;
        let end = end.trim().parse().ok()?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        (start <= end).then_some(ContentRange { start, end, total })
    }
}

/// Size and digest of a blob as the upstream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub digest: Digest,
    pub size: u64,
}

/// A blob (or part of one) being received.
pub struct BlobBody {
    /// Bytes this response carries (`Content-Length`), when the upstream said.
    pub length: Option<u64>,
    /// True when the upstream answered a range request with 206; then
    /// `content_range` says which part this is and the body is not verified.
    /// False after a range request means the upstream ignored the range and
    /// sent (and this verifies) the whole blob.
    pub partial: bool,
    pub content_range: Option<ContentRange>,
    /// The bytes. For a whole blob, the stream ends with an error rather than
    /// cleanly when the content does not match the digest or the length.
    pub stream: BlobStream,
}

impl fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobBody")
            .field("length", &self.length)
            .field("partial", &self.partial)
            .field("content_range", &self.content_range)
            .finish_non_exhaustive()
    }
}

/// Wraps a body stream, hashing and counting it; ends with an error item if
/// the digest or length is wrong.
pub(crate) struct Verifying {
    inner: BlobStream,
    hasher: Option<DigestHasher>,
    expected: Digest,
    expected_len: Option<u64>,
    seen: u64,
}

impl Verifying {
    pub(crate) fn new(inner: BlobStream, expected: Digest, expected_len: Option<u64>) -> Self {
        Verifying {
            hasher: Some(expected.algorithm().hasher()),
            inner,
            expected,
            expected_len,
            seen: 0,
        }
    }
}

impl Stream for Verifying {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.hasher.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if let Some(n) = this.expected_len {
                    if this.seen > n {
                        this.hasher = None;
                        return Poll::Ready(Some(Err(UpstreamError::Protocol(format!(
                            "blob {} is longer than the {n} bytes announced",
                            this.expected
                        )))));
                    }
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let Some(hasher) = this.hasher.take() else {
                    return Poll::Ready(None);
                };
                if let Some(n) = this.expected_len {
                    if this.seen != n {
                        return Poll::Ready(Some(Err(UpstreamError::Transport {
                            message: format!(
                                "blob {} ended after {} of {n} bytes",
                                this.expected, this.seen
                            ),
                            source: None,
                        })));
                    }
                }
                let actual = hasher.finish();
                if actual != this.expected {
                    return Poll::Ready(Some(Err(UpstreamError::DigestMismatch {
                        expected: this.expected.clone(),
                        actual,
                    })));
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn body(chunks: &[&'static [u8]]) -> BlobStream {
        let items: Vec<Result<Bytes, UpstreamError>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn drain(mut s: Verifying) -> (Vec<u8>, Option<UpstreamError>) {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn verifies_digest_and_length() {
        let d = Digest::sha256_of(b"hello world");
        let (bytes, err) = drain(Verifying::new(
            body(&[b"hello ", b"world"]),
            d.clone(),
            Some(11),
        ))
        .await;
        assert_eq!(bytes, b"hello world");
        assert!(err.is_none());

        let (_, err) = drain(Verifying::new(
            body(&[b"hello ", b"WORLD"]),
            d.clone(),
            None,
        ))
        .await;
        assert!(matches!(err, Some(UpstreamError::DigestMismatch { .. })));

        let (_, err) = drain(Verifying::new(body(&[b"hello "]), d.clone(), Some(11))).await;
        assert!(matches!(err, Some(UpstreamError::Transport { .. })));

        let (_, err) = drain(Verifying::new(body(&[b"hello world!"]), d, Some(11))).await;
        assert!(matches!(err, Some(UpstreamError::Protocol(_))));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            ByteRange {
                start: 5,
                end: None
            }
            .header_value(),
            "bytes=5-"
        );
        assert_eq!(
            ByteRange {
                start: 0,
                end: Some(9)
            }
            .header_value(),
            "bytes=0-9"
        );
        assert_eq!(
            ContentRange::parse("bytes 0-9/100"),
            Some(ContentRange {
                start: 0,
                end: 9,
                total: Some(100)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-9/*").and_then(|c| c.total),
            None
        );
        assert!(ContentRange::parse("bytes 9-5/100").is_none());
        assert!(ContentRange::parse("items 0-1/2").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { failure_persistence: None, ..Default::default() })]

        /// `Content-Range` as registries send it parses back to its values.
        #[test]
        fn content_range_round_trips(
            start in proptest::prelude::any::<u64>(),
            end in proptest::prelude::any::<u64>(),
            total in proptest::option::of(proptest::prelude::any::<u64>()),
            pad in proptest::prelude::any::<bool>(),
        ) {
            let sp = if pad { " " } else { "" };
            let total_text = total.map_or("*".to_string(), |t| t.to_string());
            let h = format!("{sp}bytes {start}{sp}-{sp}{end}/{sp}{total_text}{sp}");
            let want = (start <= end).then_some(ContentRange { start, end, total });
            proptest::prop_assert_eq!(ContentRange::parse(&h), want);
        }

        /// The `Range` berth sends upstream says exactly the bytes asked for.
        #[test]
        fn range_header_values(start in proptest::prelude::any::<u64>(), end in proptest::option::of(proptest::prelude::any::<u64>())) {
            let v = ByteRange { start, end }.header_value();
            let (a, b) = v
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .ok_or_else(|| proptest::test_runner::TestCaseError::fail(v.clone()))?;
            proptest::prop_assert_eq!(a.parse::<u64>().ok(), Some(start));
            proptest::prop_assert_eq!(if b.is_empty() { None } else { b.parse::<u64>().ok() }, end);
        }
    }
}
