//! Where the client may connect besides the registry it was built for, and
//! where credentials may go.
//!
//! An upstream decides where its redirects (blob GETs go to CDNs) and token
//! realms point, so a hostile or compromised one could otherwise make berth
//! reach into its own network (cloud metadata, loopback services, the LAN).
//! The rules:
//!
//! - the registry's own host (as configured: name or address, any port) is
//!   allowed over https whatever its address: an operator who points an
//!   upstream at a private address has said that address is fine; so are
//!   the upstream's `trusted_hosts` (a token service on its own host, as
//!   GitLab's). Over plain http only when the upstream is itself
//!   configured at an `http://` URL or `insecure`: otherwise an upstream
//!   configured `https://` could downgrade berth to plain HTTP (a redirect
//!   to `http://its-host:8080/`), where anyone on the path reads and
//!   rewrites what berth fetches;
//! - any other URL must be `https` and its host must be public: an address
//!   literal is checked here, a name is checked on the addresses it
//!   resolves to, in the client's DNS resolver ([`GuardedResolver`]), so a
//!   public-looking name that resolves to 127.0.0.1 is refused too, and the
//!   address checked is the one connected to.
//!
//! Credentials are sent up front only to the registry's origin (`client`);
//! a realm gets them only over https, or plain http for an upstream
//! configured `insecure` ([`NetPolicy::may_send_credentials`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// The rules for one upstream client.
#[derive(Debug, Clone)]
pub(crate) struct NetPolicy {
    /// The registry's host as configured, then its `trusted_hosts`;
    /// lowercase (`[::1]` for IPv6).
    trusted_hosts: Vec<String>,
    insecure: bool,
    /// Whether the own and trusted hosts may be reached over plain http:
    /// the upstream's base URL is http, or it is configured `insecure`.
    own_plain_http: bool,
}

impl NetPolicy {
    pub(crate) fn new(base: &Url, insecure: bool, also_trusted: &[String]) -> NetPolicy {
        let mut trusted_hosts = vec![base.host_str().unwrap_or_default().to_ascii_lowercase()];
        trusted_hosts.extend(also_trusted.iter().cloned());
        NetPolicy {
            trusted_hosts,
            insecure,
            own_plain_http: base.scheme() == "http" || insecure,
        }
    }

    fn is_registry_host(&self, url: &Url) -> bool {
        url.host_str()
            .is_some_and(|h| self.trusted_hosts.iter().any(|t| h.eq_ignore_ascii_case(t)))
    }

    /// Whether a URL the upstream pointed us at (a redirect, a token realm,
    /// an upload location) may be contacted; `Err` says why not.
    pub(crate) fn check(&self, url: &Url) -> Result<(), String> {
        if self.is_registry_host(url) {
            return match url.scheme() {
                "https" => Ok(()),
                "http" if self.own_plain_http => Ok(()),
                "http" => Err(format!(
                    "{} is plain http, and the upstream is configured https (not insecure)",
                    redacted(url)
                )),
                _ => Err(format!("{} is neither https nor http", redacted(url))),
            };
        }
        if url.scheme() != "https" {
            return Err(format!(
                "{} is not https and not the registry's own host",
                redacted(url)
            ));
        }
        match url.host() {
            Some(Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => {
                Err(format!("{} is not a public address", redacted(url)))
            }
            Some(Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => {
                Err(format!("{} is not a public address", redacted(url)))
            }
            // Names are checked on what they resolve to (GuardedResolver).
            Some(_) => Ok(()),
            None => Err(format!("{} has no host", redacted(url))),
        }
    }

    /// Whether the configured credentials may go to this token realm.
    pub(crate) fn may_send_credentials(&self, realm: &Url) -> bool {
        realm.scheme() == "https" || self.insecure
    }

    /// The redirect policy for the client's requests: at most
    /// [`MAX_REDIRECTS`] hops, each target passing [`NetPolicy::check`].
    /// (reqwest drops `Authorization` when a hop changes scheme, host or port.)
    pub(crate) fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match policy.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => {
                    tracing::warn!(reason = %why, "refused an upstream redirect");
                    attempt.error(format!("redirect refused: {why}"))
                }
            }
        })
    }

    /// The DNS resolver enforcing the address rule for names.
    pub(crate) fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            trusted: self.trusted_hosts.clone(),
        }
    }
}

/// A URL for logs and errors: no user info, no query (tokens travel there).
fn redacted(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// Resolves names with the system resolver, keeping only public addresses
/// for every name but the registry's own and its trusted hosts'.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    trusted: Vec<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let trusted = self.trusted.contains(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = if trusted {
                found
            } else {
                found.into_iter().filter(|a| is_public(a.ip())).collect()
            };
            if kept.is_empty() {
                tracing::warn!(%host, "refused: the name resolves to no public address");
                return Err(format!("{host} resolves to no address berth may contact").into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local, shared (CGNAT), multicast, documentation, benchmarking,
/// reserved or unspecified, including such IPv4 addresses inside IPv6
/// (mapped, compatible, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96).
    if (s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses() {
        for p in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "151.101.0.223",
        ] {
            assert!(is_public(ip(p)), "{p}");
        }
        for n in [
            "127.0.0.1",
            "127.0.0.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ] {
            assert!(!is_public(ip(n)), "{n}");
        }
    }

    #[test]
    fn redirect_and_realm_targets() {
        let p = NetPolicy::new(
            &Url::parse("https://registry-1.docker.io/").unwrap(),
            false,
            &[],
        );
        let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://production.cloudflare.docker.com/x"));
        assert!(ok("https://8.8.8.8/x"));
        // The own host over https on any port, never downgraded to http.
        assert!(ok("https://registry-1.docker.io:8443/x"));
        assert!(!ok("http://registry-1.docker.io:8080/x"));
        assert!(!ok("http://registry-1.docker.io/x"));
        assert!(!ok("ftp://registry-1.docker.io/x"));
        assert!(!ok("http://production.cloudflare.docker.com/x"));
        assert!(!ok("https://127.0.0.1/x"));
        assert!(!ok("https://169.254.169.254/latest/meta-data"));
        assert!(!ok("https://[::1]:5000/x"));
        assert!(!ok("https://[::ffff:7f00:1]/x"));

        let p = NetPolicy::new(
            &Url::parse("http://10.0.0.5:5000/").unwrap(),
            false,
            &["auth.corp.test".to_string(), "10.0.0.9".to_string()],
        );
        let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://10.0.0.5:9000/bucket"));
        assert!(!ok("http://10.0.0.6:9000/bucket"));
        assert!(!ok("https://10.0.0.6/bucket"));
        // Its trusted hosts, as its own: private or not, and over plain
        // http since the upstream itself is plain http.
        assert!(ok("http://10.0.0.9:8080/token"));
        assert!(ok("https://AUTH.corp.test/jwt/auth"));
        assert!(!ok("http://auth2.corp.test/jwt/auth"));
        assert!(!p.may_send_credentials(&Url::parse("http://10.0.0.5:5001/token").unwrap()));
        assert!(p.may_send_credentials(&Url::parse("https://10.0.0.5:5001/token").unwrap()));
        let p = NetPolicy::new(&Url::parse("http://10.0.0.5:5000/").unwrap(), true, &[]);
        assert!(p.may_send_credentials(&Url::parse("http://10.0.0.5:5001/token").unwrap()));

        // An https upstream's trusted hosts: https only, unless it is
        // configured insecure.
        let trusted = ["auth.corp.test".to_string()];
        let p = NetPolicy::new(&Url::parse("https://10.0.0.5/").unwrap(), false, &trusted);
        let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://auth.corp.test/jwt/auth"));
        assert!(ok("https://10.0.0.5:9000/bucket"));
        assert!(!ok("http://auth.corp.test/jwt/auth"));
        assert!(!ok("http://10.0.0.5:9000/bucket"));
        let p = NetPolicy::new(&Url::parse("https://10.0.0.5/").unwrap(), true, &trusted);
        let ok = |u: &str| p.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://auth.corp.test/jwt/auth"));
        assert!(ok("http://10.0.0.5:9000/bucket"));
        assert!(!ok("http://10.0.0.6:9000/bucket"));
    }

    #[tokio::test]
    async fn resolver_keeps_only_public_addresses_of_other_names() {
        let r =
            NetPolicy::new(&Url::parse("http://localhost:5000/").unwrap(), false, &[]).resolver();
        let trusted = r.resolve("localhost".parse().unwrap()).await;
        assert!(trusted.is_ok_and(|mut a| a.next().is_some_and(|a| a.ip().is_loopback())));
        let r = NetPolicy::new(
            &Url::parse("https://registry.example/").unwrap(),
            false,
            &[],
        )
        .resolver();
        assert!(r.resolve("localhost".parse().unwrap()).await.is_err());
        // A trusted host of the upstream resolves to what it is.
        let r = NetPolicy::new(
            &Url::parse("https://registry.example/").unwrap(),
            false,
            &["localhost".to_string()],
        )
        .resolver();
        assert!(r.resolve("localhost".parse().unwrap()).await.is_ok());
    }
}
