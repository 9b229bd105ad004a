//! Errors as the distribution spec renders them: a status code and a body
//! `{"errors":[{"code","message","detail"}]}`.

use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;
use http::{header, HeaderValue, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("invalid reference: {0}")]
    ReferenceInvalid(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid page size n={0:?}: a non-negative integer is required")]
    PageSizeInvalid(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    RangeNotSatisfiable(u64),
    #[error("the operation is unsupported")]
    Unsupported,
    /// With the methods the route does answer to (the `Allow` header).
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("authentication required")]
    Unauthorized { challenge: Option<String> },
    #[error("requested access to the resource is denied")]
    Denied,
    /// Too many failed logins from the client's address: wait this many seconds.
    #[error("too many failed login attempts; retry in {0} s")]
    TooManyLogins(u64),
    #[error("not found")]
    NotFound,
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Registry(e) => {
                let status = match e {
                    RegistryError::BlobUnknown(_)
                    | RegistryError::BlobUploadUnknown
                    | RegistryError::ManifestUnknown(_)
                    | RegistryError::NameUnknown(_)
                    | RegistryError::UpstreamNotAllowed => StatusCode::NOT_FOUND,
                    RegistryError::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
                    RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
                    RegistryError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
                    RegistryError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
                    RegistryError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
                    RegistryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                (status, e.code())
            }
            ApiError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            ApiError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            // Not in the spec's list; Distribution's code for the same case.
            ApiError::ReferenceInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            ApiError::PageSizeInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN"),
            ApiError::Unsupported => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Denied => (StatusCode::FORBIDDEN, "DENIED"),
            ApiError::TooManyLogins(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::RangeNotSatisfiable(_) => "requested range not satisfiable".to_string(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let detail = match &self {
            ApiError::Registry(e) => e.detail(),
            _ => None,
        };
        let mut entry = serde_json::json!({ "code": code, "message": self.message() });
        if let Some(d) = detail {
            entry["detail"] = d;
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            ApiError::Unauthorized { challenge: Some(c) } => {
                if let Ok(v) = HeaderValue::from_str(c) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::TooManyLogins(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            ApiError::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RangeNotSatisfiable(size) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::Registry(RegistryError::RangeInvalid { offset }) => {
                let end = offset.saturating_sub(1);
                if let Ok(v) = HeaderValue::from_str(&format!("0-{end}")) {
                    h.insert(header::RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}
