//! Cross-replica single flight (see docs/design/replicas.md): replicas on
//! one bucket agree, by rendezvous hashing of a blob's digest over the
//! replica set, which one of them downloads a cold blob. Any other replica
//! asked for it forwards the GET to that owner and streams the owner's
//! answer, so however many clients ask however many replicas, the upstream
//! sees one GET, and every client streams while the owner downloads.
//!
//! An owner that cannot be reached (down, restarting, not yet in the set)
//! is no outage: the replica then fetches the blob itself, as a single
//! replica would. Forwarded requests carry the replicas' shared secret as
//! `Authorization: BerthPeer <secret>`, which lets them past access control
//! for blob reads only and is never forwarded again (so inconsistent peer
//! lists cannot loop); HTTP clients drop `Authorization` on a redirect to
//! another host, so it cannot leak that way either.

use std::sync::Arc;

use berth_reference::{Digest, RepositoryName};
use berth_upstream::{BlobBody, UpstreamClient, UpstreamConfig, UpstreamError};
use sha2::{Digest as _, Sha256};
use url::Url;

/// The `Authorization` scheme of a forwarded request.
pub const PEER_SCHEME: &str = "BerthPeer";

/// How a replica finds the others.
#[derive(Clone)]
pub struct PeerConfig {
    /// This replica's own URL, exactly as it appears in `peers`.
    pub me: Url,
    /// Every replica's URL (this one included), e.g. from the config or a
    /// headless Service's DNS names.
    pub peers: Vec<Url>,
    /// Shared by all replicas; at least 32 characters.
    pub secret: String,
    /// A DNS name whose addresses are the replicas (a headless Service),
    /// re-read every few seconds: `(name, port)`; each address `A` is the
    /// replica `SCHEME://A:PORT`, the scheme that of `me`.
    pub dns: Option<(String, u16)>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("me", &self.me.as_str())
            .field(
                "peers",
                &self.peers.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("replicas: {0}")]
    Config(String),
}

struct Peer {
    url: Url,
    client: Option<UpstreamClient>,
}

/// One version of the replica set.
struct Ring {
    me: usize,
    peers: Vec<Peer>,
}

/// The replica set and a client for each other replica.
pub struct Peers {
    ring: std::sync::RwLock<Arc<Ring>>,
    me: Url,
    fixed: Vec<Url>,
    dns: Option<(String, u16)>,
    secret: String,
}

fn norm(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

impl Peers {
    pub fn new(cfg: PeerConfig) -> Result<Peers, PeerError> {
        if cfg.secret.len() < 32 {
            return Err(PeerError::Config(
                "the peer secret must be at least 32 characters".into(),
            ));
        }
        if cfg.dns.is_none() && !cfg.peers.iter().any(|u| norm(u) == norm(&cfg.me)) {
            return Err(PeerError::Config(format!(
                "this replica's URL {} is not among the peers",
                cfg.me
            )));
        }
        let ring = build_ring(&cfg.me, &cfg.peers, &cfg.secret, None)?;
        Ok(Peers {
            ring: std::sync::RwLock::new(Arc::new(ring)),
            me: cfg.me,
            fixed: cfg.peers,
            dns: cfg.dns,
            secret: cfg.secret,
        })
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the set comes (also) from a DNS name.
    pub fn discovers(&self) -> bool {
        self.dns.is_some()
    }

    /// Every replica's URL now, this one's included.
    pub fn members(&self) -> Vec<Url> {
        self.ring().peers.iter().map(|p| p.url.clone()).collect()
    }

    /// Read the DNS name again (with `dns` set): the replica set becomes
    /// the fixed peers, this replica and every address the name has now.
    /// Returns whether the set changed. A failed lookup keeps the set.
    pub async fn refresh(&self) -> Result<bool, PeerError> {
        let Some((name, port)) = &self.dns else {
            return Ok(false);
        };
        let found = tokio::net::lookup_host((name.as_str(), *port))
            .await
            .map_err(|e| PeerError::Config(format!("looking up {name}: {e}")))?;
        let mut urls = self.fixed.clone();
        for addr in found {
            let host = match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            };
            let text = format!("{}://{host}:{}", self.me.scheme(), addr.port());
            if let Ok(u) = Url::parse(&text) {
                urls.push(u);
            }
        }
        let old = self.ring();
        let mut now: Vec<String> = urls.iter().map(norm).collect();
        now.push(norm(&self.me));
        now.sort();
        now.dedup();
        let before: Vec<String> = old.peers.iter().map(|p| norm(&p.url)).collect();
        if now == before {
            return Ok(false);
        }
        let ring = build_ring(&self.me, &urls, &self.secret, Some(&old))?;
        tracing::info!(peers = ?now, "replica set changed");
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(true)
    }

    /// The index in `ring` of the replica that downloads `digest`: the
    /// highest score of SHA-256(url, digest), so that each replica leaving
    /// or joining moves only its own share of blobs. `None` when it is
    /// this one.
    fn owner(ring: &Ring, digest: &Digest) -> Option<usize> {
        let score = |p: &Peer| {
            let mut h = Sha256::new();
            h.update(norm(&p.url).as_bytes());
            h.update([0]);
            h.update(digest.to_string().as_bytes());
            let out = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&out[..8]);
            u64::from_be_bytes(first)
        };
        let (i, _) = ring
            .peers
            .iter()
            .enumerate()
            .max_by_key(|(_, p)| score(p))?;
        (i != ring.me).then_some(i)
    }

    /// The owner's URL for `digest`, `None` when this replica owns it.
    pub fn owner_url(&self, digest: &Digest) -> Option<Url> {
        let ring = self.ring();
        Peers::owner(&ring, digest).map(|i| ring.peers[i].url.clone())
    }

    /// Whether an `Authorization` value is another replica's (compared in
    /// constant time).
    pub fn is_peer_authorization(&self, value: &[u8]) -> bool {
        let Some(rest) = value
            .strip_prefix(PEER_SCHEME.as_bytes())
            .and_then(|r| r.strip_prefix(b" "))
        else {
            return false;
        };
        let want = self.secret.as_bytes();
        if rest.len() != want.len() {
            return false;
        }
        rest.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Ask the owner of `digest` for it, as the client asked us: `None`
    /// when this replica is the owner. The body is verified against the
    /// digest as it streams.
    pub(crate) async fn forward(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Option<(Arc<str>, Result<BlobBody, UpstreamError>)> {
        let ring = self.ring();
        let owner = &ring.peers[Peers::owner(&ring, digest)?];
        let client = owner.client.clone()?;
        let url: Arc<str> = owner.url.as_str().into();
        drop(ring);
        Some((url, client.blob_get(repo, digest, None).await))
    }
}

/// The ring of `me` and `urls` (sorted, without duplicates), reusing the
/// clients of `old` for peers it already had (their connection pools).
fn build_ring(me: &Url, urls: &[Url], secret: &str, old: Option<&Ring>) -> Result<Ring, PeerError> {
    let mut all: Vec<Url> = urls.to_vec();
    all.push(me.clone());
    all.sort_by_key(norm);
    all.dedup_by_key(|u| norm(u));
    let mut peers = Vec::new();
    let mut mine = 0;
    for url in all {
        if norm(&url) == norm(me) {
            mine = peers.len();
            peers.push(Peer { url, client: None });
            continue;
        }
        let reused = old.and_then(|r| {
            r.peers
                .iter()
                .find(|p| norm(&p.url) == norm(&url))
                .and_then(|p| p.client.clone())
        });
        let client = match reused {
            Some(c) => c,
            None => peer_client(&url, secret)?,
        };
        peers.push(Peer {
            url,
            client: Some(client),
        });
    }
    Ok(Ring { me: mine, peers })
}

fn peer_client(url: &Url, secret: &str) -> Result<UpstreamClient, PeerError> {
    let host = url.host_str().unwrap_or_default().to_string();
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let config = UpstreamConfig::for_registry(&host)
        .map_err(|e| PeerError::Config(format!("peer {url}: {e}")))?
        .with_base_url(url.clone())
        .with_trusted_hosts(std::slice::from_ref(&host))
        .with_header("authorization", &format!("{PEER_SCHEME} {secret}"));
    UpstreamClient::new(config).map_err(|e| PeerError::Config(format!("peer {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(me: usize, n: usize) -> Peers {
        let urls: Vec<Url> = (0..n)
            .map(|i| Url::parse(&format!("http://10.0.0.{i}:5000/")).unwrap())
            .collect();
        Peers::new(PeerConfig {
            me: urls[me].clone(),
            peers: urls,
            secret: "s".repeat(32),
            dns: None,
        })
        .unwrap()
    }

    #[test]
    fn every_replica_names_the_same_owner_and_shares_are_even() {
        let set: Vec<Peers> = (0..3).map(|i| peers(i, 3)).collect();
        let mut owned = [0usize; 3];
        for k in 0..3000u32 {
            let d = Digest::sha256_of(&k.to_be_bytes());
            let owners: Vec<usize> = set
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    p.owner_url(&d)
                        .map_or(i, |u| u.host_str().unwrap()[7..].parse().unwrap())
                })
                .collect();
            assert!(owners.iter().all(|o| *o == owners[0]), "{owners:?}");
            owned[owners[0]] += 1;
        }
        assert!(owned.iter().all(|n| (800..1200).contains(n)), "{owned:?}");
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_blobs() {
        let four = peers(0, 4);
        let three = peers(0, 3);
        for k in 0..1000u32 {
            let d = Digest::sha256_of(&k.to_be_bytes());
            let before = four.owner_url(&d).map(|u| u.to_string());
            if before.as_deref() != Some("http://10.0.0.3:5000/") {
                assert_eq!(before, three.owner_url(&d).map(|u| u.to_string()));
            }
        }
    }

    #[test]
    fn the_secret_is_checked_exactly() {
        let p = peers(0, 2);
        let good = format!("{PEER_SCHEME} {}", "s".repeat(32));
        assert!(p.is_peer_authorization(good.as_bytes()));
        for bad in [
            format!("{PEER_SCHEME} {}", "s".repeat(31)),
            format!("{PEER_SCHEME} {}t", "s".repeat(31)),
            format!("Bearer {}", "s".repeat(32)),
            format!("{PEER_SCHEME}{}", "s".repeat(32)),
        ] {
            assert!(!p.is_peer_authorization(bad.as_bytes()), "{bad}");
        }
        assert!(Peers::new(PeerConfig {
            me: Url::parse("http://a:1").unwrap(),
            peers: vec![Url::parse("http://b:1").unwrap()],
            secret: "s".repeat(32),
            dns: None,
        })
        .is_err());
    }

    /// With a DNS name, the set is this replica and the name's addresses,
    /// re-read on refresh.
    #[tokio::test]
    async fn the_replica_set_follows_a_dns_name() {
        let me = Url::parse("http://127.0.0.1:5999").unwrap();
        let p = Peers::new(PeerConfig {
            me: me.clone(),
            peers: Vec::new(),
            secret: "s".repeat(32),
            dns: Some(("localhost".into(), 6000)),
        })
        .unwrap();
        assert_eq!(p.members(), vec![me.clone()]);
        assert!(p.refresh().await.unwrap(), "the name added peers");
        let members: Vec<String> = p.members().iter().map(|u| u.to_string()).collect();
        assert!(
            members.contains(&"http://127.0.0.1:6000/".to_string()),
            "{members:?}"
        );
        assert!(members.contains(&me.to_string()));
        assert!(!p.refresh().await.unwrap(), "unchanged");
    }
}
