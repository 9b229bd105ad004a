//! Runtime configuration for nodes that pull through a berth mirror.
//!
//! This crate owns everything `berth runtime-config`, `berth secret` and
//! `berth doctor` produce or read: the mirror URL and registry list a user
//! types, one generator per runtime file format (containerd `hosts.toml`,
//! k3s/RKE2/k3d `registries.yaml`, CRI-O/Podman `registries.conf`, Docker
//! `daemon.json`), Kubernetes pull Secrets, the node doctor, and the atomic
//! write-with-backup every generator's output goes through.
//!
//! Generators are pure: they take [`Settings`] (and, for formats that are
//! merged rather than replaced, the file's current text) and return a
//! [`Plan`]; the caller decides whether to print it or write it.
#![forbid(unsafe_code)]

pub mod containerd;
pub mod containerd_config;
pub mod crio;
pub mod docker;
pub mod doctor;
pub mod k3s;
pub mod override_path;
pub mod secret;
pub mod write;

pub use override_path::OverridePath;

use std::fmt;
use std::path::PathBuf;

use berth_reference::{mirror_component, normalise_registry, DOCKER_HUB, DOCKER_HUB_ENDPOINT};

/// The registries mirrored when `--registries` is not given.
pub const DEFAULT_REGISTRIES: &str = "docker.io,registry.k8s.io,quay.io,ghcr.io";

/// Errors in what the user asked for (as opposed to I/O while writing).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid mirror URL {url:?}: {reason}")]
    Mirror { url: String, reason: String },
    #[error(
        "{0:?} is not a registry host (a registry host contains a '.' or ':', or is 'localhost', e.g. docker.io, registry.k8s.io, myregistry:5000)"
    )]
    Registry(String),
    #[error("the registry list is empty")]
    NoRegistries,
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot merge into existing {path}: {reason}")]
    Existing { path: String, reason: String },
    #[error("cannot generate {what}: {reason}")]
    Generate { what: String, reason: String },
}

/// How the mirror is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A berth mirror as nodes reach it: scheme plus `host[:port]`.
///
/// `http://host:port` is a plain-HTTP mirror (runtimes that need it are told
/// it is insecure); `https://host[:port]` is TLS; a bare `host[:port]` means
/// HTTPS, as it does for Docker and containerd. A path is rejected: berth
/// serves `/v2/` at its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    scheme: Scheme,
    authority: String,
}

impl Mirror {
    pub fn parse(input: &str) -> Result<Mirror, ConfigError> {
        let bad = |reason: &str| ConfigError::Mirror {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(bad("empty"));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("https://{trimmed}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(bad(&format!("scheme {other:?} is not http or https"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in the mirror URL"));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad(
                "a mirror URL has no path: berth serves /v2/ at its root",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a mirror URL has no query or fragment"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Mirror { scheme, authority })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host[:port]`, as runtimes that take no scheme want it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether the mirror speaks plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.scheme == Scheme::Http
    }

    /// `scheme://host[:port]`, with no trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority)
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Which registries to route through the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registries {
    /// Named registry hosts, normalised (`index.docker.io` → `docker.io`),
    /// deduplicated, in the order given.
    pub hosts: Vec<String>,
    /// `*` was given: every registry.
    pub all: bool,
}

impl Registries {
    /// Parse a comma-separated list; `*` means every registry.
    pub fn parse(list: &str) -> Result<Registries, ConfigError> {
        let mut out = Registries {
            hosts: Vec::new(),
            all: false,
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                out.all = true;
                continue;
            }
            let host = normalise_registry(item);
            if !is_registry_host_name(&host) {
                return Err(ConfigError::Registry(item.to_string()));
            }
            if !out.hosts.contains(&host) {
                out.hosts.push(host);
            }
        }
        if out.hosts.is_empty() && !out.all {
            return Err(ConfigError::NoRegistries);
        }
        Ok(out)
    }

    /// Whether Docker Hub is among the routed registries.
    pub fn includes_docker_hub(&self) -> bool {
        self.all || self.hosts.iter().any(|h| h == DOCKER_HUB)
    }
}

impl Default for Registries {
    fn default() -> Self {
        Registries {
            hosts: DEFAULT_REGISTRIES.split(',').map(str::to_string).collect(),
            all: false,
        }
    }
}

/// Whether `host` is a registry host with an optional port that berth can
/// name a mirror of (see `berth_reference::mirror_component`).
pub fn is_registry_host_name(host: &str) -> bool {
    mirror_component(host).is_some()
}

/// Where a registry's API really answers: `https://registry-1.docker.io`
/// for Docker Hub, `https://HOST` for every other registry.
pub fn upstream_url(host: &str) -> String {
    if host == DOCKER_HUB {
        format!("https://{DOCKER_HUB_ENDPOINT}")
    } else {
        format!("https://{host}")
    }
}

/// What every generator needs: the mirror, the registries, and TLS options.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mirror: Mirror,
    pub registries: Registries,
    /// A CA bundle the nodes trust the mirror's certificate with, as a path
    /// on the node.
    pub ca: Option<PathBuf>,
    /// Do not verify the mirror's TLS certificate.
    pub skip_verify: bool,
    /// The CA certificate itself (PEM), when it is to be installed with the
    /// configuration (`--ca-file`, `--tls-auto-root`): each generator writes
    /// it where its runtime reads CAs and points the configuration at it.
    pub ca_pem: Option<String>,
    /// Where CRI-O/Podman and Docker look for `<host>/ca.crt`
    /// (default `/etc/containers/certs.d`, `/etc/docker/certs.d`).
    pub certs_dir: Option<PathBuf>,
    /// Credentials for the mirror, where the runtime's own file carries
    /// them (k3s's `configs.<mirror>.auth`); others take a pull Secret.
    pub creds: Option<secret::Credentials>,
    /// The mirror is a plain registry holding images under this prefix,
    /// not berth (`--override-path`).
    pub override_path: Option<OverridePath>,
}

/// The file name of an installed CA beside containerd's and k3s's files.
pub const CA_FILE_NAME: &str = "berth-ca.crt";

impl Settings {
    /// These settings with `ca` pointing at `path` (where `ca_pem` is
    /// written), unless a node path was given already.
    pub(crate) fn with_installed_ca(&self, path: &std::path::Path) -> Settings {
        let mut s = self.clone();
        if s.ca.is_none() {
            s.ca = Some(path.to_path_buf());
        }
        s
    }

    /// `certs.d/<mirror>/ca.crt` under `default_dir` (or `certs_dir`).
    pub(crate) fn certs_d_file(&self, default_dir: &str) -> PathBuf {
        self.certs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_dir))
            .join(self.mirror.authority())
            .join("ca.crt")
    }

    /// Whether the runtime must be told the mirror is "insecure": plain HTTP
    /// or unverified TLS.
    pub fn insecure(&self) -> bool {
        self.mirror.is_plain_http() || self.skip_verify
    }
}

/// One file a generator wants on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: String,
}

/// A generator's result: files to write, what the user must do next, and
/// warnings.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    /// Next steps printed on stdout (e.g. the containerd `config.toml` stanza).
    pub instructions: Vec<String>,
    /// Caveats printed on stderr.
    pub warnings: Vec<String>,
}

/// The first line of every generated file.
pub(crate) fn generated_header(comment: &str, what: &str) -> String {
    format!("{comment} Generated by `berth runtime-config {what}`.\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_urls() {
        let m = Mirror::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(m.url(), "http://127.0.0.1:5000");
        assert_eq!(m.authority(), "127.0.0.1:5000");
        assert!(m.is_plain_http());
        let m = Mirror::parse("mirror.example:5000").unwrap();
        assert_eq!(m.url(), "https://mirror.example:5000");
        let m = Mirror::parse("https://Mirror.Example/").unwrap();
        assert_eq!(m.url(), "https://mirror.example");
        let m = Mirror::parse("https://mirror.example:443").unwrap();
        assert_eq!(m.authority(), "mirror.example");
        let m = Mirror::parse("http://[::1]:5000").unwrap();
        assert_eq!(m.authority(), "[::1]:5000");
        for bad in [
            "",
            "ftp://x",
            "http://u:p@x",
            "http://x/v2",
            "http://x?a=b",
            "http://",
        ] {
            assert!(Mirror::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_lists() {
        let r = Registries::parse("docker.io, index.docker.io,quay.io,localhost:5000").unwrap();
        assert_eq!(r.hosts, ["docker.io", "quay.io", "localhost:5000"]);
        assert!(!r.all);
        let r = Registries::parse("*").unwrap();
        assert!(r.all && r.hosts.is_empty() && r.includes_docker_hub());
        assert!(Registries::parse("library").is_err());
        assert!(Registries::parse("Quay.IO").is_ok());
        assert!(Registries::parse("quay.io/org").is_err());
        assert!(Registries::parse(" , ").is_err());
        assert_eq!(Registries::default().hosts.len(), 4);
    }

    #[test]
    fn upstreams() {
        assert_eq!(upstream_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(upstream_url("quay.io"), "https://quay.io");
    }
}
