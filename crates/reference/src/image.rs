//! Image references as users type them, with Docker's normalisation: the
//! registry defaults to Docker Hub, Hub's single-component names live under
//! `library/`, and the tag defaults to `latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::name::{is_host_component, is_registry_host, NameError, RepositoryName, Tag};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageReferenceError {
    #[error("invalid image reference {0:?}")]
    Invalid(String),
    #[error("invalid image reference: {0}")]
    Name(#[from] NameError),
}

/// A fully normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// Registry host as named by users (`docker.io`, `quay.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path on that registry (`library/alpine`).
    pub repository: RepositoryName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageReference {
    /// The name berth stores a mirrored copy under: `registry/repository`,
    /// with a port spelled `__PORT` (`registry.local__5000/app`).
    pub fn mirror_repository(&self) -> Result<RepositoryName, NameError> {
        RepositoryName::mirror_of(&self.registry, self.repository.as_str())
    }

    /// The tag, or the digest when the reference is pinned by digest only.
    pub fn reference_str(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }
}

/// Whether `host` (lowercased) can name a registry to connect to: DNS
/// labels or a bracketed IPv6 address, with an optional port. Anything else
/// (`a#b.io`, `host:port`, `a_b.io`) would be read differently by the URL
/// parser than by the user, so such a reference is rejected.
fn is_registry_address(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = port.is_empty()
            || port.strip_prefix(':').is_some_and(|p| {
                !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
            });
        return port_ok && ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    is_host_component(host)
}

/// Normalise a registry host: Docker Hub has several historical spellings.
pub fn normalise_registry(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => h,
    }
}

impl FromStr for ImageReference {
    type Err = ImageReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ImageReferenceError::Invalid(s.to_string());
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(invalid());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(NameError::from)?)),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].parse::<Tag>()?))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_host(first) => {
                let registry = normalise_registry(first);
                if !is_registry_address(&registry) {
                    return Err(invalid());
                }
                (registry, path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() {
            return Err(invalid());
        }
        let repository: RepositoryName = path.parse()?;
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".parse()?),
            _ => tag,
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<ImageReference>().unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(norm("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            norm("index.docker.io/library/nginx:1"),
            "docker.io/library/nginx:1"
        );
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(norm("localhost/app:v1"), "localhost/app:v1");
        assert_eq!(norm("quay.io/org/sub/img:tag"), "quay.io/org/sub/img:tag");
    }

    #[test]
    fn digests_pin_without_default_tag() {
        let d = format!("sha256:{}", "b".repeat(64));
        let r: ImageReference = format!("alpine@{d}").parse().unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.reference_str(), d);
        let r: ImageReference = format!("alpine:3@{d}").parse().unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/alpine:3@{d}"));
    }

    #[test]
    fn mirror_repository_names() {
        let r: ImageReference = "alpine:3.20".parse().unwrap();
        assert_eq!(
            r.mirror_repository().unwrap().as_str(),
            "docker.io/library/alpine"
        );
        let r: ImageReference = "registry.local:5000/demo/app:v1".parse().unwrap();
        assert_eq!(
            r.mirror_repository().unwrap().as_str(),
            "registry.local__5000/demo/app"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "a b",
            "UPPER",
            "alpine:",
            "alpine@sha256:x",
            "a/../b",
            ":tag",
        ] {
            assert!(bad.parse::<ImageReference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_must_be_a_host_the_url_parser_agrees_on() {
        // A URL would connect to `evil.example` for the first one.
        for bad in [
            "evil.example#.docker.io/library/alpine",
            "host:port/app",
            "a_b.example/app",
            "-a.example/app",
            "[::1/app",
            "[::1]x/app",
            "[not-ip]:5000/app",
            "localhost:123456/app",
        ] {
            assert!(bad.parse::<ImageReference>().is_err(), "{bad}");
        }
        for good in [
            "[::1]:5000/app:v1",
            "[fe80::1]/team/app",
            "Registry.Example:5000/app",
            "10.0.0.5:5000/docker.io/library/alpine:3.20",
        ] {
            let r: ImageReference = good.parse().unwrap();
            assert_eq!(r.to_string().parse::<ImageReference>().unwrap(), r);
        }
    }
}
