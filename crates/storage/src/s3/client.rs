//! The S3 backend's settings and the SDK client made from them: endpoint,
//! region, addressing style, trusted CA, credentials and timeouts. Nothing
//! here talks to the bucket; `super` does.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::config::{
    timeout::TimeoutConfig, BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_smithy_http_client::tls;

use super::S3Error;

/// S3 multipart parts must be at least 5 MiB, all but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// What one request may copy server-side (CopyObject, UploadPartCopy).
pub const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// A secret that never reaches a log line through `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Every key berth writes starts with this (`""`, or `path/` ending in `/`).
    pub prefix: String,
    /// `https://s3.example:9000`; `None` for AWS's own endpoint of `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`
    /// (MinIO, Garage, Ceph RGW usually want this).
    pub path_style: bool,
    /// PEM file of the CA that signed the endpoint's certificate, trusted
    /// besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Static credentials; when absent, the usual AWS chain (environment,
    /// shared profile, web identity, container and instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Bytes per multipart part (and so the most one upload holds in memory,
    /// twice: one part filling while the previous one is sent).
    pub part_size: usize,
    /// Redirect blob GETs to presigned URLs valid this long (off: `None`).
    pub presign_blob_gets: Option<Duration>,
}

impl S3Config {
    pub fn new(bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.to_string(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            ca_file: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: 8 * 1024 * 1024,
            presign_blob_gets: None,
        }
    }

    /// Refuse what would make keys or requests ambiguous, before any request.
    pub fn validate(&mut self) -> Result<(), S3Error> {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(S3Error::Config(format!(
                "bucket {:?} is not a valid S3 bucket name",
                self.bucket
            )));
        }
        let prefix = self.prefix.trim_matches('/');
        let prefix_ok = prefix.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
        if !prefix.is_empty() && !prefix_ok {
            return Err(S3Error::Config(format!(
                "prefix {:?}: use letters, digits, '.', '_', '-' and '/'",
                self.prefix
            )));
        }
        self.prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        if self.part_size < MIN_PART_SIZE || self.part_size as u64 > MAX_COPY {
            return Err(S3Error::Config(format!(
                "part size {} is outside S3's 5 MiB to 5 GiB",
                self.part_size
            )));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(S3Error::Config(format!(
                    "endpoint {e:?} must start with http:// or https://"
                )));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(S3Error::Config(
                "give both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        Ok(())
    }
}

/// The SDK client for `cfg` (already validated).
pub async fn build(cfg: &S3Config) -> Result<aws_sdk_s3::Client, S3Error> {
    let mut trust = tls::TrustStore::empty().with_native_roots(true);
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| S3Error::Config(format!("reading CA file {}: {e}", path.display())))?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| S3Error::Config(format!("TLS settings: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(tls_context)
        .build_https();
    // A stalled store fails the request instead of holding it forever; the
    // SDK retries what is safe to retry.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .http_client(http)
        .timeout_config(timeouts)
        .stalled_stream_protection(StalledStreamProtectionConfig::enabled().build());
    if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            &secret.0,
            cfg.session_token.as_ref().map(|t| t.0.clone()),
            None,
            "berth-config",
        ));
    }
    let shared = loader.load().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.path_style)
        // Checksums only where an operation requires one: stores other than
        // AWS (older MinIO, Ceph, Garage) differ on the newer ones, and
        // every blob is verified by its digest anyway.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(e) = &cfg.endpoint {
        s3 = s3.endpoint_url(e.trim_end_matches('/'));
    }
    Ok(aws_sdk_s3::Client::from_conf(s3.build()))
}
