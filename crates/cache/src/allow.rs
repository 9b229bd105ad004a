//! Which upstream hosts the cache may contact at all: the closed proxy.
//!
//! A repository name or `?ns=` is chosen by whoever sends the request, so
//! without this list anyone reaching berth could make it connect to any
//! host and port (an open proxy, and a port scanner of berth's network).
//! Only three kinds of host are contacted: the well-known public
//! registries ([`DEFAULT_KNOWN_UPSTREAMS`], replaceable by the config key
//! `known_upstreams`), upstreams configured by the operator (`--upstream`,
//! `[upstreams."HOST"]`), and hosts matching the operator's
//! `allow_upstreams` globs. The check is made on the name alone, before any
//! connection or DNS lookup.

/// The public registries contacted without configuration. `*` matches
/// within one DNS label, so `*.gcr.io` is `eu.gcr.io` but not `a.b.gcr.io`.
pub const DEFAULT_KNOWN_UPSTREAMS: &[&str] = &[
    "docker.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "quay.io",
    "ghcr.io",
    "gcr.io",
    "*.gcr.io",
    "*-docker.pkg.dev",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "nvcr.io",
    "registry.gitlab.com",
    "docker.elastic.co",
    "registry.access.redhat.com",
    "registry.redhat.io",
    "registry.opensuse.org",
    "registry.suse.com",
    "container-registry.oracle.com",
    "cgr.dev",
];

/// A host glob: `*` matches any run of characters other than `.` and `:`
/// (one DNS label, never the port separator), `**` any run except `:`.
/// Matching is case-insensitive and covers the whole `host[:port]`: a glob
/// without a port matches only names without one (`registry.local:*`
/// allows every port of that host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob(String);

impl HostGlob {
    pub fn new(pattern: &str) -> HostGlob {
        HostGlob(pattern.trim().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, host: &str) -> bool {
        glob_match(self.0.as_bytes(), host.to_ascii_lowercase().as_bytes())
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => {
            (0..=s.len()).any(|i| !s[..i].contains(&b':') && glob_match(rest, &s[i..]))
        }
        [b'*', rest @ ..] => (0..=s.len())
            .any(|i| !s[..i].iter().any(|c| *c == b'.' || *c == b':') && glob_match(rest, &s[i..])),
        [c, rest @ ..] => s.first() == Some(c) && glob_match(rest, &s[1..]),
    }
}

/// The hosts the cache may contact, besides the configured upstreams
/// (which [`crate::CacheConfig::upstreams`] lists and the cache checks
/// itself).
#[derive(Debug, Clone)]
pub struct UpstreamAllowList {
    known: Vec<HostGlob>,
    allowed: Vec<HostGlob>,
}

impl Default for UpstreamAllowList {
    fn default() -> Self {
        UpstreamAllowList::new(None, &[])
    }
}

impl UpstreamAllowList {
    /// `known`: the config's `known_upstreams`, or `None` for the built-in
    /// list; `allowed`: `allow_upstreams` and `--allow-upstream` globs.
    pub fn new(known: Option<&[String]>, allowed: &[String]) -> UpstreamAllowList {
        let known = match known {
            Some(list) => list.iter().map(|p| HostGlob::new(p)).collect(),
            None => DEFAULT_KNOWN_UPSTREAMS
                .iter()
                .map(|p| HostGlob::new(p))
                .collect(),
        };
        UpstreamAllowList {
            known,
            allowed: allowed.iter().map(|p| HostGlob::new(p)).collect(),
        }
    }

    /// Whether `host` is one of the known public registries (not merely
    /// allowed by a glob of the operator's, which may cover berth's own
    /// name too).
    pub fn is_known(&self, host: &str) -> bool {
        self.known.iter().any(|g| g.matches(host))
    }

    /// Whether `host` (normalised, as in repository names) may be contacted.
    pub fn permits(&self, host: &str) -> bool {
        self.known
            .iter()
            .chain(self.allowed.iter())
            .any(|g| g.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = HostGlob::new("*.corp.example");
        assert!(g.matches("registry.corp.example"));
        assert!(g.matches("REGISTRY.Corp.Example"));
        assert!(!g.matches("a.b.corp.example"));
        assert!(!g.matches("corp.example"));
        assert!(!g.matches("registry.corp.example:5000"));
        assert!(!g.matches("evil.example/registry.corp.example"));
        assert!(HostGlob::new("**.corp.example").matches("a.b.corp.example"));
        assert!(!HostGlob::new("**.corp.example").matches("a.corp.example:1"));
        assert!(HostGlob::new("registry.local:*").matches("registry.local:5000"));
        assert!(!HostGlob::new("registry.local:*").matches("registry.local.evil:5000"));
        assert!(HostGlob::new("*-docker.pkg.dev").matches("europe-west1-docker.pkg.dev"));
        assert!(!HostGlob::new("*-docker.pkg.dev").matches("x.y-docker.pkg.dev"));
        assert!(HostGlob::new("").matches(""));
        assert!(!HostGlob::new("").matches("x"));
    }

    #[test]
    fn default_list_and_replacement() {
        let l = UpstreamAllowList::default();
        for ok in [
            "docker.io",
            "quay.io",
            "eu.gcr.io",
            "us-docker.pkg.dev",
            "ghcr.io",
        ] {
            assert!(l.permits(ok), "{ok}");
        }
        for no in [
            "127.0.0.1:15100",
            "localhost",
            "10.0.0.1",
            "docker.io:22",
            "quay.io.evil.example",
            "metadata.google.internal",
        ] {
            assert!(!l.permits(no), "{no}");
        }
        let l = UpstreamAllowList::new(Some(&["quay.io".to_string()]), &["*.corp".to_string()]);
        assert!(l.permits("quay.io") && l.permits("r.corp"));
        assert!(!l.permits("docker.io"));
    }
}
