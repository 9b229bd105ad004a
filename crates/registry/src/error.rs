//! Registry errors, one variant per distinct client-visible failure, each
//! carrying the distribution spec's error code. The HTTP layer maps codes to
//! status lines; nothing here knows about HTTP.

use berth_reference::Digest;
use berth_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown(Digest),
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// A chunk that does not start where the upload ends (HTTP 416).
    #[error("requested range not satisfiable: the upload is at offset {offset}")]
    RangeInvalid { offset: u64 },
    #[error("provided digest did not match uploaded content")]
    DigestInvalid {
        expected: String,
        actual: Option<String>,
    },
    #[error("manifest references a manifest or blob unknown to the registry")]
    ManifestBlobUnknown(Digest),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown(String),
    /// A mirrored repository of a host berth may not contact, holding
    /// nothing for the request. Carries no detail: the answer is the same
    /// text whatever host and port the name gave.
    #[error("repository name not known to registry")]
    UpstreamNotAllowed,
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    #[error("the registry's storage is full")]
    StorageFull,
    /// The pull-through cache needed an upstream that could not answer.
    #[error("upstream registry unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream is rate limiting us and the cache holds nothing to serve.
    #[error("upstream registry is rate limiting requests; try again later")]
    TooManyRequests,
    #[error("internal storage error: {0}")]
    Storage(StorageError),
}

impl RegistryError {
    /// The spec's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::BlobUploadInvalid(_) | RegistryError::RangeInvalid { .. } => {
                "BLOB_UPLOAD_INVALID"
            }
            RegistryError::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            RegistryError::DigestInvalid { .. } => "DIGEST_INVALID",
            RegistryError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            RegistryError::ManifestInvalid(_) => "MANIFEST_INVALID",
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) | RegistryError::UpstreamNotAllowed => "NAME_UNKNOWN",
            RegistryError::SizeInvalid(_) => "SIZE_INVALID",
            RegistryError::Unsupported(_) => "UNSUPPORTED",
            // Not spec codes, but the spec allows others; clients show the message.
            RegistryError::StorageFull => "STORAGE_FULL",
            RegistryError::UpstreamUnavailable(_) => "UNAVAILABLE",
            RegistryError::TooManyRequests => "TOOMANYREQUESTS",
            RegistryError::Storage(_) => "UNKNOWN",
        }
    }

    /// Structured detail for the error body, where there is something useful.
    pub fn detail(&self) -> Option<serde_json::Value> {
        match self {
            RegistryError::BlobUnknown(d) | RegistryError::ManifestBlobUnknown(d) => {
                Some(serde_json::json!({ "digest": d.to_string() }))
            }
            RegistryError::DigestInvalid { expected, actual } => {
                Some(serde_json::json!({ "expected": expected, "actual": actual }))
            }
            RegistryError::ManifestUnknown(r) => Some(serde_json::json!({ "reference": r })),
            RegistryError::NameUnknown(n) | RegistryError::NameInvalid(n) => {
                Some(serde_json::json!({ "name": n }))
            }
            RegistryError::RangeInvalid { offset } => Some(serde_json::json!({ "offset": offset })),
            _ => None,
        }
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::StorageFull => RegistryError::StorageFull,
            StorageError::UploadNotFound => RegistryError::BlobUploadUnknown,
            StorageError::UploadOffsetMismatch { actual, .. } => {
                RegistryError::RangeInvalid { offset: actual }
            }
            other => RegistryError::Storage(other),
        }
    }
}

impl From<berth_storage::KeyError> for RegistryError {
    fn from(e: berth_storage::KeyError) -> Self {
        RegistryError::NameInvalid(e.0)
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
