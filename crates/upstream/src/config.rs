//! Per-upstream settings ([`UpstreamConfig`]) and the rules that fill them in
//! when nothing is configured: where a registry host's API answers (Docker
//! Hub's `registry-1.docker.io`), and the `--upstream HOST=URL` syntax.
//!
//! Parsing of berth's own config file is the server's business; this module
//! only defines what one upstream needs, so that the CLI and the cache build
//! clients the same way.

use std::path::PathBuf;
use std::time::Duration;

use berth_reference::{normalise_registry, DOCKER_HUB, DOCKER_HUB_ENDPOINT};
use url::Url;

use crate::auth_file::Credentials;
use crate::error::UpstreamError;

/// Longest wait for a TCP (and TLS) connection to an upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait from sending a request without a body (every read: a
/// manifest, a blob, a token, a listing) to its response headers,
/// connecting included.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// A response body that delivers fewer than [`STALL_MIN_BYTES`] within this
/// window, while unfinished, is stalled and abandoned. Only time spent
/// waiting on the upstream counts, not time the reader spends elsewhere.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The progress a body must make within each stall window: a trickle (a
/// byte every few seconds) is as useless as silence and holds clients as long.
pub const STALL_MIN_BYTES: u64 = 1024;
/// Longest silence tolerated by the HTTP client on any read (per read, not
/// total), a safety net for requests the timeouts above do not cover
/// (upload bodies); the client never uses less than the first-byte and
/// stall timeouts.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Total time for small requests (manifests, tokens, listings). Blob bodies
/// never get a total timeout: a large layer on a slow link is not an error
/// as long as it keeps moving (see [`DEFAULT_STALL_TIMEOUT`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The three timeouts an operator sets for upstreams (`upstream_connect_timeout`,
/// `upstream_first_byte_timeout`, `upstream_stall_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub stall: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            first_byte: DEFAULT_FIRST_BYTE_TIMEOUT,
            stall: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// How to reach one upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The registry as users name it (`docker.io`, `quay.io`, `localhost:5000`).
    pub registry: String,
    /// Where its API answers; `/v2/` is appended. May carry a path prefix.
    pub base_url: Url,
    /// Whether `base_url` was given (`--upstream`, config) rather than
    /// derived from the host; only a derived URL turns `http` when insecure.
    pub base_url_explicit: bool,
    pub credentials: Option<Credentials>,
    /// PEM file of CA certificates trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (and, when no URL was given, use plain HTTP).
    pub insecure: bool,
    /// Other hosts of this registry (a separate token service, its blob
    /// storage) that its redirects and token realm may point at even on a
    /// private address, as its own host may. Lowercase; IPv6 in brackets.
    pub trusted_hosts: Vec<String>,
    pub connect_timeout: Duration,
    /// See [`DEFAULT_FIRST_BYTE_TIMEOUT`].
    pub first_byte_timeout: Duration,
    /// See [`DEFAULT_STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// See [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Duration,
    pub request_timeout: Duration,
    pub user_agent: String,
    /// Headers sent with every request to this host (a berth replica's
    /// peer secret); sent as sensitive, so never logged.
    pub extra_headers: Vec<(String, String)>,
}

impl UpstreamConfig {
    /// Settings for a registry host with nothing configured: its default URL,
    /// anonymous, verified TLS, default timeouts.
    pub fn for_registry(registry: &str) -> Result<UpstreamConfig, UpstreamError> {
        let registry = normalise_registry(registry);
        let base_url = default_base_url(&registry, false)?;
        Ok(UpstreamConfig {
            registry,
            base_url,
            base_url_explicit: false,
            credentials: None,
            ca_file: None,
            insecure: false,
            trusted_hosts: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_string(),
            extra_headers: Vec::new(),
        })
    }

    /// Point this upstream at another URL (`--upstream HOST=URL`).
    pub fn with_base_url(mut self, url: Url) -> Self {
        self.base_url = url;
        self.base_url_explicit = true;
        self
    }

    /// Send `name: value` with every request (see `extra_headers`).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Set the connect, first-byte and stall timeouts.
    pub fn with_timeouts(mut self, t: UpstreamTimeouts) -> Self {
        self.connect_timeout = t.connect;
        self.first_byte_timeout = t.first_byte;
        self.stall_timeout = t.stall;
        self
    }

    /// The connect, first-byte and stall timeouts in force.
    pub fn timeouts(&self) -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: self.connect_timeout,
            first_byte: self.first_byte_timeout,
            stall: self.stall_timeout,
        }
    }

    /// See [`UpstreamConfig::trusted_hosts`]; `hosts` as users write them
    /// (`auth.corp.example`, `10.0.0.7`, `::1` or `[::1]`).
    pub fn with_trusted_hosts(mut self, hosts: &[String]) -> Self {
        self.trusted_hosts = hosts
            .iter()
            .map(|h| {
                let h = h.trim().to_ascii_lowercase();
                match h.parse::<std::net::Ipv6Addr>() {
                    Ok(ip) => format!("[{ip}]"),
                    Err(_) => h,
                }
            })
            .filter(|h| !h.is_empty())
            .collect();
        self
    }

    pub fn with_ca_file(mut self, path: Option<PathBuf>) -> Self {
        self.ca_file = path;
        self
    }

    /// Mark insecure. A URL derived from the host becomes `http://HOST`
    /// (Docker's insecure-registry behaviour for hosts with no TLS); an
    /// explicit `https://` URL keeps TLS, unverified.
    pub fn with_insecure(mut self, insecure: bool) -> Result<Self, UpstreamError> {
        if !self.base_url_explicit {
            self.base_url = default_base_url(&self.registry, insecure)?;
        }
        self.insecure = insecure;
        Ok(self)
    }
}

/// Where a registry host's API answers when nothing says otherwise:
/// `docker.io` → `https://registry-1.docker.io`, anything else `https://HOST`
/// (`http://HOST` when insecure).
pub fn default_base_url(registry: &str, insecure: bool) -> Result<Url, UpstreamError> {
    let host = normalise_registry(registry);
    let host = if host == DOCKER_HUB {
        DOCKER_HUB_ENDPOINT
    } else {
        host.as_str()
    };
    let scheme = if insecure { "http" } else { "https" };
    Url::parse(&format!("{scheme}://{host}/")).map_err(|e| {
        UpstreamError::Config(format!(
            "registry host {registry:?} does not make a URL: {e}"
        ))
    })
}

/// Parse `HOST=URL` as given to `--upstream`. The URL must be http(s) with a
/// host; a URL without a scheme is taken as `https://`.
pub fn parse_upstream_override(s: &str) -> Result<(String, Url), UpstreamError> {
    let (host, url) = s
        .split_once('=')
        .ok_or_else(|| UpstreamError::Config(format!("--upstream {s:?}: expected HOST=URL")))?;
    let host = host.trim();
    let url = url.trim();
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(UpstreamError::Config(format!(
            "--upstream {s:?}: {host:?} is not a registry host"
        )));
    }
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let parsed = Url::parse(&with_scheme)
        .map_err(|e| UpstreamError::Config(format!("--upstream {s:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(UpstreamError::Config(format!(
            "--upstream {s:?}: the URL must be http:// or https:// with a host"
        )));
    }
    Ok((normalise_registry(host), parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_need_no_config() {
        assert_eq!(
            default_base_url("docker.io", false).unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            default_base_url("index.docker.io", false).unwrap().as_str(),
            "https://registry-1.docker.io/"
        );
        assert_eq!(
            default_base_url("quay.io", false).unwrap().as_str(),
            "https://quay.io/"
        );
        assert_eq!(
            default_base_url("localhost:5000", true).unwrap().as_str(),
            "http://localhost:5000/"
        );
        let c = UpstreamConfig::for_registry("docker.io").unwrap();
        assert_eq!(c.registry, "docker.io");
        assert!(c.credentials.is_none() && !c.insecure);
    }

    #[test]
    fn insecure_switches_default_url_only() {
        let c = UpstreamConfig::for_registry("r.local:5000")
            .unwrap()
            .with_insecure(true)
            .unwrap();
        assert_eq!(c.base_url.as_str(), "http://r.local:5000/");
        let c = UpstreamConfig::for_registry("r.local")
            .unwrap()
            .with_base_url(Url::parse("https://10.0.0.1:8443/").unwrap())
            .with_insecure(true)
            .unwrap();
        assert_eq!(c.base_url.as_str(), "https://10.0.0.1:8443/");
        assert!(c.insecure);
        // Even when the explicit URL is what the default would have been.
        let c = UpstreamConfig::for_registry("127.0.0.1:5000")
            .unwrap()
            .with_base_url(Url::parse("https://127.0.0.1:5000/").unwrap())
            .with_insecure(true)
            .unwrap();
        assert_eq!(c.base_url.scheme(), "https");
    }

    #[test]
    fn upstream_overrides() {
        let (h, u) = parse_upstream_override("docker.io=https://mirror.corp.example/hub/").unwrap();
        assert_eq!(h, "docker.io");
        assert_eq!(u.as_str(), "https://mirror.corp.example/hub/");
        let (h, u) = parse_upstream_override("localhost:5001=http://127.0.0.1:5001").unwrap();
        assert_eq!(h, "localhost:5001");
        assert_eq!(u.as_str(), "http://127.0.0.1:5001/");
        let (_, u) = parse_upstream_override("quay.io=quay-mirror.example").unwrap();
        assert_eq!(u.scheme(), "https");
        for bad in [
            "quay.io",
            "=http://x",
            "a/b=http://x",
            "q.io=ftp://x",
            "q.io=http://",
        ] {
            assert!(parse_upstream_override(bad).is_err(), "{bad}");
        }
    }
}
