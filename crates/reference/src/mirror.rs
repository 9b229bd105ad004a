//! How berth names the mirror of an upstream registry inside its own
//! namespace: a repository whose first component is the registry host
//! (`docker.io/library/alpine` mirrors Docker Hub's `library/alpine`).
//!
//! A host with a port cannot be written as it is: `:` is not valid in a path
//! component of a reference, so `berth:5000/registry.local:5000/app` is
//! refused by every client. berth spells the port after a double underscore:
//! `registry.local:5000` is `registry.local__5000`, `kind-registry:5000` is
//! `kind-registry__5000`. The spelling is a valid path component, and it is
//! unambiguous and reversible: a host name never contains `_` (its labels are
//! letters, digits and `-`), so a trailing `__<port>` after a host is always
//! a port. A double underscore rather than one, because a local repository
//! such as `python_3/app` must stay local; `__` followed by a port number is
//! not a name anyone picks for a namespace.

use std::borrow::Cow;

/// What separates a mirrored host from its port in a repository name.
pub const PORT_SEPARATOR: &str = "__";

/// DNS labels (lowercase), which also covers IPv4 addresses.
pub(crate) fn is_dns_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A TCP port as written once: 1-65535, no leading zero (so that one
/// upstream has one spelling).
pub(crate) fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && !p.starts_with('0')
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u32>().is_ok_and(|n| n <= 65535)
}

/// Docker's rule for a host without a port: it has a `.` or is `localhost`.
/// (A bare single label is a namespace: `team/app` is Docker Hub's.)
fn is_registry_name(h: &str) -> bool {
    h == "localhost" || h.contains('.')
}

/// The first component of the repositories mirroring `host`, a registry
/// host as clients write it (normalised, lowercase): `docker.io` →
/// `docker.io`, `registry.local:5000` → `registry.local__5000`.
///
/// `None` when `host` cannot name a mirror: it is not DNS labels or an IPv4
/// address with an optional port (an IPv6 literal has no path-safe
/// spelling), or it is a single label without a port other than
/// `localhost`, which a repository name cannot tell from a namespace.
pub fn mirror_component(host: &str) -> Option<String> {
    match host.rsplit_once(':') {
        Some((h, p)) if is_dns_host(h) && is_port(p) => Some(format!("{h}{PORT_SEPARATOR}{p}")),
        Some(_) => None,
        None if is_dns_host(host) && is_registry_name(host) => Some(host.to_string()),
        None => None,
    }
}

/// The upstream host a repository's first component mirrors, as a host to
/// connect to (`registry.local__5000` → `registry.local:5000`), or `None`
/// when it is a namespace of local repositories (`team`, `library`).
///
/// A component with a `.` that is not a valid host (`my.app_x`) still names
/// a mirror, as Docker's rule reads it; such a host is never reachable, as
/// no configuration can allow it.
pub fn mirror_host(component: &str) -> Option<Cow<'_, str>> {
    if let Some((h, p)) = component.rsplit_once(PORT_SEPARATOR) {
        if is_dns_host(h) && is_port(p) {
            return Some(Cow::Owned(format!("{h}:{p}")));
        }
    }
    is_registry_name(component).then_some(Cow::Borrowed(component))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_ports_round_trip() {
        for (host, component) in [
            ("docker.io", "docker.io"),
            ("localhost", "localhost"),
            ("registry.local:5000", "registry.local__5000"),
            ("10.0.0.100:5000", "10.0.0.100__5000"),
            (
                "internal-registry.corp:5000",
                "internal-registry.corp__5000",
            ),
            ("my.company.registry:5000", "my.company.registry__5000"),
            ("localhost:5000", "localhost__5000"),
            ("kind-registry:5000", "kind-registry__5000"),
            ("127.0.0.1:65535", "127.0.0.1__65535"),
        ] {
            assert_eq!(mirror_component(host).as_deref(), Some(component), "{host}");
            assert_eq!(mirror_host(component).as_deref(), Some(host), "{component}");
        }
    }

    #[test]
    fn what_cannot_name_a_mirror() {
        for host in [
            "team",
            "[::1]:5000",
            "::1",
            "a_b.io",
            "Registry.local",
            "registry.local:",
            "registry.local:0",
            "registry.local:05000",
            "registry.local:65536",
            "registry.local:50a",
            "a..b",
            "-a.io",
            "",
        ] {
            assert_eq!(mirror_component(host), None, "{host:?}");
        }
        for component in ["team", "library", "python_3", "app__2x", "a__0", "a__05"] {
            assert_eq!(mirror_host(component), None, "{component:?}");
        }
        // Docker's rule: a `.` makes a host, valid or not.
        assert_eq!(mirror_host("my.app").as_deref(), Some("my.app"));
    }
}
