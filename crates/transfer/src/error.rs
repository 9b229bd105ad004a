//! [`TransferError`], the one error type of this crate, and [`ErrorKind`]:
//! the coarse class a command line turns into an exit code and a hint
//! (which flag or action fixes it). Classification lives here, next to the
//! variants, so that every verb reports the same failure the same way.

use std::path::PathBuf;

use berth_reference::Digest;
use berth_upstream::UpstreamError;

pub type Result<T, E = TransferError> = std::result::Result<T, E>;

/// What kind of failure, for exit codes and advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Image, tag, repository, file or blob does not exist.
    NotFound,
    /// Credentials missing or refused.
    Auth,
    /// TLS verification failed.
    Tls,
    /// Could not connect, timed out, server failing.
    Network,
    /// Content does not match its digest; a corrupt archive.
    Integrity,
    /// The request itself is wrong (bad reference, unsupported combination).
    Usage,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{context}: {source}")]
    Registry {
        context: String,
        #[source]
        source: UpstreamError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
}

impl TransferError {
    pub fn registry(context: impl Into<String>, source: UpstreamError) -> TransferError {
        TransferError::Registry {
            context: context.into(),
            source,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TransferError {
        TransferError::Io {
            path: path.into(),
            source,
        }
    }

    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransferError::Registry { source, .. } => match source {
                UpstreamError::NotFound { .. } => ErrorKind::NotFound,
                UpstreamError::Unauthorized { .. } => ErrorKind::Auth,
                UpstreamError::DigestMismatch { .. } => ErrorKind::Integrity,
                UpstreamError::Transport { .. } if is_tls_error(source) => ErrorKind::Tls,
                UpstreamError::Transport { .. }
                | UpstreamError::Upstream5xx { .. }
                | UpstreamError::TooManyRequests { .. } => ErrorKind::Network,
                UpstreamError::Config(m) if m.contains("CA file") => ErrorKind::Tls,
                _ => ErrorKind::Other,
            },
            TransferError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            TransferError::Io { .. } => ErrorKind::Other,
            TransferError::NotFound(_) => ErrorKind::NotFound,
            TransferError::DigestMismatch { .. } | TransferError::Corrupt(_) => {
                ErrorKind::Integrity
            }
            TransferError::Invalid(_) | TransferError::Unsupported(_) => ErrorKind::Usage,
        }
    }

    /// Whether this came from talking to a registry (rather than files).
    pub fn is_registry(&self) -> bool {
        matches!(self, TransferError::Registry { .. })
    }

    /// A registry refused a manifest because a blob it references is unknown.
    pub fn is_blob_unknown(&self) -> bool {
        matches!(self, TransferError::Registry { source, .. }
            if matches!(source.spec_code(), Some("MANIFEST_BLOB_UNKNOWN" | "BLOB_UNKNOWN")))
    }

    /// Whether trying the same transfer again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TransferError::Registry { source, .. } => matches!(
                source,
                UpstreamError::Transport { .. }
                    | UpstreamError::Upstream5xx { .. }
                    | UpstreamError::TooManyRequests { .. }
            ),
            _ => false,
        }
    }
}

/// Whether a transport error was a failed TLS handshake or verification.
fn is_tls_error(e: &UpstreamError) -> bool {
    let mut text = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    for _ in 0..16 {
        let Some(s) = cur else { break };
        text.push_str(&s.to_string());
        cur = s.source();
    }
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "unknownissuer",
        "invalid peer",
        "corrupt message",
        "invalidcontenttype",
    ]
    .iter()
    .any(|w| t.contains(w))
}
