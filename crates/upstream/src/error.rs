//! The one error type of this crate, [`UpstreamError`], and the translation of
//! HTTP answers into it.
//!
//! It lives apart from the client because its callers (the pull-through cache,
//! the CLI) branch on it: the cache must tell "the upstream could not answer"
//! (serve what it holds) from "the upstream answered: it does not exist"
//! (a spec `MANIFEST_UNKNOWN`/`BLOB_UNKNOWN`, not a 500). That decision is
//! [`UpstreamError::is_unavailable`] and [`UpstreamError::is_not_found`].

use std::time::Duration;

use berth_reference::Digest;
use reqwest::StatusCode;
use serde::Deserialize;

/// One entry of the distribution spec's error body
/// `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SpecError {
    /// `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NAME_UNKNOWN`, `DENIED`, …
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// Free-form; kept as JSON text.
    #[serde(default, deserialize_with = "detail_as_text")]
    pub detail: Option<String>,
}

fn detail_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[derive(Deserialize)]
struct SpecErrorBody {
    #[serde(default)]
    errors: Vec<SpecError>,
}

/// Parse a spec error body; anything else (HTML from a proxy, empty) gives none.
pub fn parse_spec_errors(body: &[u8]) -> Vec<SpecError> {
    serde_json::from_slice::<SpecErrorBody>(body)
        .map(|b| b.errors)
        .unwrap_or_default()
}

/// Everything that can go wrong talking to an upstream registry.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered 404: the repository, manifest or blob does not
    /// exist there. A definitive answer.
    #[error("not found upstream: {message}")]
    NotFound {
        /// The spec code the upstream gave (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, …), if any.
        code: Option<String>,
        message: String,
    },
    /// 401/403 after the auth flow ran: missing or wrong credentials, or the
    /// token server refused, or the credentials lack the needed access.
    #[error("unauthorized by upstream (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// 429: rate limited (Docker Hub's pull limits). `retry_after` from the
    /// `Retry-After` header when it gave seconds.
    #[error("rate limited by upstream{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    TooManyRequests { retry_after: Option<Duration> },
    /// The upstream failed with a 5xx.
    #[error("upstream server error (HTTP {status}): {message}")]
    Upstream5xx { status: u16, message: String },
    /// Another 4xx: the upstream rejected the request (bad digest, unsupported
    /// operation, range not satisfiable, …). A definitive answer.
    #[error("upstream rejected the request (HTTP {status}): {message}")]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Could not connect, TLS failed, a timeout fired (connect, first byte,
    /// stalled body: see [`UpstreamError::timed_out`]), or the connection
    /// broke mid-body.
    #[error("cannot reach upstream: {message}")]
    Transport {
        message: String,
        #[source]
        source: Option<TransportCause>,
    },
    /// Content did not hash to the digest it was asked for (or claimed).
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// The upstream spoke something that is not the distribution protocol
    /// (missing headers, unparsable JSON, oversized manifest, bad challenge).
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// The content stream handed to an upload failed (a local read error).
    #[error("reading the content to upload failed: {0}")]
    BodyStream(String),
    /// The client configuration is unusable (bad URL, unreadable CA file).
    #[error("upstream configuration error: {0}")]
    Config(String),
}

/// What lies under an [`UpstreamError::Transport`].
#[derive(Debug, thiserror::Error)]
pub enum TransportCause {
    /// The HTTP client's own error (refused, reset, TLS, its timeouts).
    #[error(transparent)]
    Http(reqwest::Error),
    /// One of berth's upstream timeouts fired.
    #[error("{0}")]
    TimedOut(Timeout),
}

/// Which upstream timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// No connection within the connect timeout.
    Connect,
    /// Connected (or not), but no response headers within the first-byte timeout.
    FirstByte,
    /// A body stopped moving: too few bytes within a stall window.
    Stall,
    /// Another limit of the HTTP client (a small request's total time, an
    /// idle read).
    Other,
}

/// A timeout that fired, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} after {}s", match phase {
    TimeoutPhase::Connect => "connect timeout",
    TimeoutPhase::FirstByte => "no response headers (first-byte timeout)",
    TimeoutPhase::Stall => "body stalled (stall timeout)",
    TimeoutPhase::Other => "timed out",
}, limit.as_secs_f64())]
pub struct Timeout {
    pub phase: TimeoutPhase,
    /// The limit that was exceeded (zero when the HTTP client did not say).
    pub limit: Duration,
}

impl UpstreamError {
    /// A [`UpstreamError::Transport`] for one of berth's timeouts.
    pub(crate) fn timeout(context: &str, phase: TimeoutPhase, limit: Duration) -> Self {
        let t = Timeout { phase, limit };
        UpstreamError::Transport {
            message: format!("{context}: {t}"),
            source: Some(TransportCause::TimedOut(t)),
        }
    }

    /// Which timeout made this error, if one did.
    pub fn timed_out(&self) -> Option<TimeoutPhase> {
        match self {
            UpstreamError::Transport {
                source: Some(TransportCause::TimedOut(t)),
                ..
            } => Some(t.phase),
            UpstreamError::Transport {
                source: Some(TransportCause::Http(e)),
                ..
            } if e.is_timeout() => Some(if e.is_connect() {
                TimeoutPhase::Connect
            } else {
                TimeoutPhase::Other
            }),
            _ => None,
        }
    }

    /// True when the upstream could not give a trustworthy answer right now:
    /// it is unreachable, failing, rate limiting, refusing our credentials, or
    /// serving garbage. A cache serves what it already holds in that case.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Transport { .. }
                | UpstreamError::Upstream5xx { .. }
                | UpstreamError::TooManyRequests { .. }
                | UpstreamError::Unauthorized { .. }
                | UpstreamError::DigestMismatch { .. }
                | UpstreamError::Protocol(_)
        )
    }

    /// True for the upstream's definitive "does not exist" (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }

    /// The spec error code the upstream sent, when it sent one.
    pub fn spec_code(&self) -> Option<&str> {
        match self {
            UpstreamError::NotFound { code, .. } | UpstreamError::Rejected { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }

    pub(crate) fn transport(context: &str, e: reqwest::Error) -> Self {
        let mut message = format!("{context}: {e}");
        // reqwest's top-level message is terse ("error sending request");
        // the cause chain says what actually happened (refused, TLS, timeout).
        let mut src = std::error::Error::source(&e);
        let mut depth = 0;
        while let Some(s) = src {
            if depth >= 8 {
                break;
            }
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
            depth += 1;
        }
        UpstreamError::Transport {
            message,
            source: Some(TransportCause::Http(e)),
        }
    }

    /// Build the error for a non-success status, given the (bounded) body.
    pub(crate) fn from_status(
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        what: &str,
    ) -> Self {
        let errors = parse_spec_errors(body);
        let code = errors
            .first()
            .map(|e| e.code.clone())
            .filter(|c| !c.is_empty());
        let message = if errors.is_empty() {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() || text.len() > 512 {
                format!("{what}: {status}")
            } else {
                format!("{what}: {status}: {text}")
            }
        } else {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| match &e.detail {
                    Some(d) if !d.is_empty() => format!("{}: {} ({d})", e.code, e.message),
                    _ => format!("{}: {}", e.code, e.message),
                })
                .collect();
            format!("{what}: {}", parts.join("; "))
        };
        match status.as_u16() {
            404 => UpstreamError::NotFound { code, message },
            401 | 403 => UpstreamError::Unauthorized {
                status: status.as_u16(),
                message,
            },
            429 => UpstreamError::TooManyRequests { retry_after },
            s @ 500..=599 => UpstreamError::Upstream5xx { status: s, message },
            s => UpstreamError::Rejected {
                status: s,
                code,
                message,
            },
        }
    }
}

/// `Retry-After` in its delta-seconds form (the HTTP-date form is rare from
/// registries and is ignored).
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_body_becomes_message_and_code() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#;
        let e =
            UpstreamError::from_status(StatusCode::NOT_FOUND, None, body, "GET manifest x:nope");
        assert!(e.is_not_found());
        assert!(!e.is_unavailable());
        assert_eq!(e.spec_code(), Some("MANIFEST_UNKNOWN"));
        let text = e.to_string();
        assert!(text.contains("manifest unknown"), "{text}");
        assert!(text.contains(r#"{"Tag":"nope"}"#), "{text}");
    }

    #[test]
    fn statuses_classify() {
        let e = UpstreamError::from_status(StatusCode::SERVICE_UNAVAILABLE, None, b"<html>", "x");
        assert!(matches!(e, UpstreamError::Upstream5xx { status: 503, .. }));
        assert!(e.is_unavailable());
        let e = UpstreamError::from_status(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(7)),
            b"",
            "x",
        );
        assert!(
            matches!(e, UpstreamError::TooManyRequests { retry_after: Some(d) } if d.as_secs() == 7)
        );
        assert!(e.is_unavailable());
        let e = UpstreamError::from_status(StatusCode::FORBIDDEN, None, b"", "x");
        assert!(matches!(e, UpstreamError::Unauthorized { status: 403, .. }));
        let e = UpstreamError::from_status(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"errors":[{"code":"DIGEST_INVALID","message":"m"}]}"#,
            "x",
        );
        assert!(matches!(e, UpstreamError::Rejected { status: 400, .. }));
        assert_eq!(e.spec_code(), Some("DIGEST_INVALID"));
        assert!(!e.is_unavailable());
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after(Some(" 30 ")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
