//! Repository names, tags and manifest references, validated against the
//! distribution spec's grammars. A value of these types is safe to join onto a
//! storage path: `..`, absolute paths, empty components and odd bytes can't
//! be constructed.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};
use crate::mirror::{is_dns_host, is_port, mirror_component, mirror_host};

/// Longest repository name accepted (Distribution's limit, which clients assume).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (the spec's grammar).
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid repository name {0:?}: components are lowercase letters and digits joined by '.', '_', '__' or '-', separated by '/'")]
    InvalidName(String),
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("invalid tag {0:?}: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    InvalidTag(String),
    #[error("{0:?} cannot name a mirror: a registry is DNS labels or an IPv4 address, with an optional port")]
    NoMirrorSpelling(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A path component in the spec's grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// Whether the first component of an image reference as users type it
/// names a registry host rather than a namespace (Docker's rule: it
/// contains a '.' or ':', or is `localhost`). Repository names spell a port
/// differently: see [`crate::mirror_host`].
pub fn is_registry_host(component: &str) -> bool {
    component == "localhost" || component.contains('.') || component.contains(':')
}

/// A registry host as users write it: DNS labels with an optional port.
/// Lowercase only, so that one upstream has one spelling on disk.
pub(crate) fn is_host_component(c: &str) -> bool {
    match c.split_once(':') {
        Some((host, port)) => is_dns_host(host) && is_port(port),
        None => is_dns_host(c),
    }
}

/// A validated repository name such as `library/alpine` or
/// `docker.io/library/alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The upstream host this repository mirrors, and the name there, when the
    /// first component names a registry host (`docker.io/library/alpine` →
    /// `("docker.io", "library/alpine")`, `registry.local__5000/app` →
    /// `("registry.local:5000", "app")`).
    pub fn mirror_parts(&self) -> Option<(Cow<'_, str>, &str)> {
        let (first, rest) = self.0.split_once('/')?;
        Some((mirror_host(first)?, rest))
    }

    /// The repository mirroring `path` of the registry `host` (as clients
    /// write it: `registry.local:5000`), under berth's spelling of the host.
    pub fn mirror_of(host: &str, path: &str) -> Result<RepositoryName, NameError> {
        let first =
            mirror_component(host).ok_or_else(|| NameError::NoMirrorSpelling(host.to_string()))?;
        format!("{first}/{path}").parse()
    }

    /// Parse a name as a request or an older berth may write it: a first
    /// component `host:port` (invalid in the spec's grammar) is read as the
    /// mirror of that host and spelled berth's way (`host__port`).
    pub fn parse_lenient(s: &str) -> Result<RepositoryName, NameError> {
        match s.split_once('/') {
            Some((first, rest)) if first.contains(':') && is_host_component(first) => {
                RepositoryName::mirror_of(first, rest)
            }
            _ => s.parse(),
        }
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        // Mirrored repositories need nothing more: berth spells their host
        // as a path component (see `mirror`).
        if !s.split('/').all(is_path_component) {
            return Err(NameError::InvalidName(s.to_string()));
        }
        Ok(RepositoryName(s.to_string()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::InvalidTag(s.to_string()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for ManifestRef {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(ManifestRef::Digest(s.parse()?))
        } else {
            Ok(ManifestRef::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => t.fmt(f),
            ManifestRef::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for good in [
            "alpine",
            "library/alpine",
            "a/b/c/d",
            "my-app",
            "my--app",
            "my__app",
            "my.app",
            "a0/b_1/c.2",
            "docker.io/library/alpine",
            "localhost__5000/team/app",
            "registry.k8s.io/pause",
        ] {
            assert!(good.parse::<RepositoryName>().is_ok(), "{good}");
        }
    }

    #[test]
    fn rejects_hostile_and_malformed_names() {
        for bad in [
            "",
            "..",
            "../etc",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "Upper",
            "a___b",
            "-a",
            "a-",
            "a.",
            ".a",
            "a/.hidden",
            "a b",
            "a%2fb",
            "localhost:5000",
            "host:port/x",
            "localhost:5000/team/app",
            "a\\b",
        ] {
            assert!(
                bad.parse::<RepositoryName>().is_err(),
                "{bad:?} should be rejected"
            );
        }
        let long = "a".repeat(256);
        assert_eq!(long.parse::<RepositoryName>(), Err(NameError::NameTooLong));
    }

    #[test]
    fn mirror_parts_split_on_host() {
        let n: RepositoryName = "docker.io/library/alpine".parse().unwrap();
        assert_eq!(
            n.mirror_parts(),
            Some(("docker.io".into(), "library/alpine"))
        );
        let n: RepositoryName = "library/alpine".parse().unwrap();
        assert_eq!(n.mirror_parts(), None);
        let n: RepositoryName = "localhost/x".parse().unwrap();
        assert_eq!(n.mirror_parts(), Some(("localhost".into(), "x")));
        let n: RepositoryName = "registry.local__5000/demo/app".parse().unwrap();
        assert_eq!(
            n.mirror_parts(),
            Some(("registry.local:5000".into(), "demo/app"))
        );
    }

    #[test]
    fn port_spellings() {
        let n = RepositoryName::mirror_of("10.0.0.100:5000", "demo/app").unwrap();
        assert_eq!(n.as_str(), "10.0.0.100__5000/demo/app");
        assert_eq!(
            RepositoryName::parse_lenient("registry.local:5000/app")
                .unwrap()
                .as_str(),
            "registry.local__5000/app"
        );
        assert_eq!(
            RepositoryName::parse_lenient("team/app").unwrap().as_str(),
            "team/app"
        );
        for bad in [
            "a:b/x",
            "registry.local:5000",
            "x/registry.local:5000/y",
            "[::1]:5000/x",
        ] {
            assert!(RepositoryName::parse_lenient(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            RepositoryName::mirror_of("team", "app"),
            Err(NameError::NoMirrorSpelling(_))
        ));
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129), ".."] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn manifest_refs() {
        assert!(matches!(
            "latest".parse::<ManifestRef>(),
            Ok(ManifestRef::Tag(_))
        ));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(
            d.parse::<ManifestRef>(),
            Ok(ManifestRef::Digest(_))
        ));
        assert!("sha256:short".parse::<ManifestRef>().is_err());
    }
}
