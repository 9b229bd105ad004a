//! The pull-through cache. For a repository named after an upstream host
//! (`docker.io/library/alpine`), berth serves what it holds and fetches what
//! it lacks, once, however many clients ask at the same moment:
//!
//! - `manifests`: tags are trusted for a TTL, then revalidated with a HEAD;
//!   when the upstream cannot answer, what is held is served (a stale serve);
//!   manifests by digest never need the upstream again once held;
//! - `fill`: a missing blob is downloaded by one task that writes it to
//!   storage while every requesting client streams from the bytes already
//!   written; it is published only after its digest verified;
//! - `ttl`: per-upstream, per-tag-pattern TTLs;
//! - `allow`: which upstream hosts may be contacted at all (the closed
//!   proxy): any other host in a name is NAME_UNKNOWN without a connection;
//! - `metrics`: hits, misses, upstream traffic, coalescing, stale serves.
//!
//! A blob is served from a mirrored repository only if that repository
//! holds it: pushed or mounted there, or fetched from (or confirmed with a
//! HEAD by) that repository's upstream. Bytes held for another repository
//! are never handed out on the strength of their digest alone.
#![forbid(unsafe_code)]

pub mod allow;
mod fill;
mod follow_file;
mod hash_job;
mod manifests;
pub mod metrics;
pub mod outcome;
pub mod peers;
pub mod prefetch;
mod referrers;
pub mod ttl;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_reference::{Digest, RepositoryName};
use berth_registry::{Registry, RegistryError};
use berth_upstream::{UpstreamClient, UpstreamConfig, UpstreamError, UpstreamTimeouts};

pub use allow::{HostGlob, UpstreamAllowList, DEFAULT_KNOWN_UPSTREAMS};
pub use fill::BlobLocation;
pub use follow_file::FileFollow;
pub use metrics::CacheMetrics;
pub use ttl::TtlPolicy;

/// Settings of one upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub client: UpstreamConfig,
    pub ttl: TtlPolicy,
}

#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// Upstreams with settings, by host as it appears in repository names.
    /// Hosts not listed are reached at their default URL, anonymously.
    pub upstreams: HashMap<String, UpstreamSettings>,
    /// TTL for upstreams without their own.
    pub default_ttl: TtlPolicy,
    /// Never contact an upstream.
    pub offline: bool,
    /// Hosts that may be contacted besides those in `upstreams`.
    pub allow: UpstreamAllowList,
    /// Connect, first-byte and stall timeouts of hosts not in `upstreams`
    /// (each of those carries its own in its client settings).
    pub timeouts: UpstreamTimeouts,
    /// A request whose `Host` names a known or configured upstream
    /// (`registry-1.docker.io`, as DNS pointed at berth sends it) is for
    /// that upstream's mirror.
    pub host_routing: bool,
}

/// Whether an upstream may be contacted for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    Online,
    /// `--offline`: serve what is held, answer as if the upstream lacked the rest.
    Offline,
    /// Not a known, configured or allowed upstream: never contacted.
    Refused,
}

/// Why a fetch from upstream failed, in a form that can be shared with
/// every request that was waiting on it.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    NotFound,
    TooManyRequests,
    Unavailable(String),
    /// The upstream did not connect, answer or keep sending within its
    /// timeouts (a stalled fill ends this way).
    TimedOut(String),
    Internal(String),
    /// Storage has no room for the content: it is served uncached.
    NoSpace,
}

impl Failure {
    fn from_upstream(e: &UpstreamError) -> Failure {
        if e.is_not_found() {
            Failure::NotFound
        } else if matches!(e, UpstreamError::TooManyRequests { .. }) {
            Failure::TooManyRequests
        } else if e.timed_out().is_some() {
            Failure::TimedOut(e.to_string())
        } else {
            Failure::Unavailable(e.to_string())
        }
    }

    /// Whether serving stale content is the right answer to this failure.
    fn upstream_down(&self) -> bool {
        matches!(
            self,
            Failure::TooManyRequests | Failure::Unavailable(_) | Failure::TimedOut(_)
        )
    }

    /// The client's error. What went wrong upstream is logged here and not
    /// told to the client: its text (refused, reset, timed out, TLS) would
    /// describe the state of a host and port on berth's network.
    fn into_error(self, not_found: RegistryError) -> RegistryError {
        match self {
            Failure::NotFound => not_found,
            Failure::TooManyRequests => RegistryError::TooManyRequests,
            Failure::Unavailable(m) => {
                tracing::warn!(reason = %m, "upstream unavailable");
                RegistryError::UpstreamUnavailable(UPSTREAM_UNAVAILABLE.to_string())
            }
            Failure::TimedOut(m) => {
                tracing::warn!(reason = %m, "upstream timed out");
                RegistryError::UpstreamUnavailable(UPSTREAM_TIMED_OUT.to_string())
            }
            Failure::Internal(m) => {
                tracing::warn!(reason = %m, "caching from the upstream failed");
                RegistryError::UpstreamUnavailable(UPSTREAM_UNAVAILABLE.to_string())
            }
            Failure::NoSpace => RegistryError::StorageFull,
        }
    }
}

/// The one text a client sees for any upstream failure.
const UPSTREAM_UNAVAILABLE: &str = "the upstream registry could not be used; try again later";
/// The text for an upstream that did not connect, answer or keep sending in
/// time (which timeout, and after how long, is logged).
const UPSTREAM_TIMED_OUT: &str = "the upstream registry did not answer in time; try again later";

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::StorageFull => Failure::NoSpace,
            e => Failure::Internal(e.to_string()),
        }
    }
}

/// Room kept free on the device beyond what a fill needs: a hundredth of it,
/// so that a cache fill never takes the last bytes pushes and metadata need.
fn reserve(space: &berth_storage::Space) -> u64 {
    space.total / 100 + (1 << 20)
}

/// Whether storage lacks room for `size` more bytes (an unknown size counts
/// as none beyond the reserve). Backends that cannot tell have room.
pub(crate) async fn storage_short(registry: &Registry, size: Option<u64>) -> bool {
    match registry.storage().space().await {
        Ok(Some(space)) => space.available < size.unwrap_or(0).saturating_add(reserve(&space)),
        _ => false,
    }
}

pub(crate) struct Inner {
    registry: Arc<Registry>,
    /// Replaced whole by [`Cache::reload`]; each use reads one version.
    config: std::sync::RwLock<Arc<CacheConfig>>,
    clients: Mutex<HashMap<String, UpstreamClient>>,
    /// When each cached tag was last confirmed with its upstream.
    validated: Mutex<HashMap<(RepositoryName, String), Instant>>,
    manifest_flights: Mutex<HashMap<String, manifests::Flight>>,
    /// Downloads in progress, by repository and digest (see `fill`).
    fills: Mutex<HashMap<(RepositoryName, Digest), Arc<fill::Fill>>>,
    metrics: CacheMetrics,
    /// The other replicas on the same bucket, when there are any.
    peers: Option<Arc<peers::Peers>>,
}

/// The pull-through cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// A poisoned lock only means another request panicked mid-update of a map
/// of hints; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    pub fn new(registry: Arc<Registry>, config: CacheConfig) -> Cache {
        Cache {
            inner: Arc::new(Inner {
                registry,
                config: std::sync::RwLock::new(Arc::new(config)),
                clients: Mutex::new(HashMap::new()),
                validated: Mutex::new(HashMap::new()),
                manifest_flights: Mutex::new(HashMap::new()),
                fills: Mutex::new(HashMap::new()),
                metrics: CacheMetrics::default(),
                peers: None,
            }),
        }
    }

    /// Replicas sharing this cache's storage: cold blobs are fetched by
    /// their owner replica (see `peers`). Only before the cache is cloned.
    pub fn with_peers(mut self, peers: peers::Peers) -> Cache {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.peers = Some(Arc::new(peers));
        }
        self
    }

    pub fn peers(&self) -> Option<&peers::Peers> {
        self.inner.peers.as_deref()
    }

    /// Keep a DNS-discovered replica set current: read the name now and
    /// every `every`; `None` without replicas found by DNS. Abort the task to stop.
    pub fn spawn_peer_refresh(&self, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let peers = self.inner.peers.clone().filter(|p| p.discovers())?;
        Some(tokio::spawn(async move {
            loop {
                if let Err(e) = peers.refresh().await {
                    tracing::warn!(error = %e, "replica discovery failed; keeping the replica set");
                }
                tokio::time::sleep(every).await;
            }
        }))
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Take a new configuration (upstreams and their credentials, TTLs,
    /// the allow lists, offline, host routing): requests that start from
    /// now on see it whole; fills under way finish with the clients they
    /// have. Clients are rebuilt from the new settings on first use.
    pub fn reload(&self, config: CacheConfig) {
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        lock(&self.inner.clients).clear();
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The upstream a request's `Host` header names, when host routing is
    /// on and it is a known public registry or a configured upstream (with
    /// or without the port it was reached on): the spoofed-DNS setup where
    /// `/etc/hosts` points `docker.io` or `k8s.gcr.io` at berth. Hosts that
    /// `allow_upstreams` globs merely allow are not routed: such a glob may
    /// cover berth's own name.
    pub fn upstream_for_host(&self, host: &str) -> Option<String> {
        let config = self.inner.config();
        if !config.host_routing {
            return None;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host.as_str(),
        };
        let found = [host.as_str(), bare]
            .into_iter()
            .map(berth_reference::normalise_registry)
            .find(|h| config.upstreams.contains_key(h) || config.allow.is_known(h));
        found
    }

    /// The upstream host and the repository's name there, when `repo` is a
    /// mirrored repository.
    pub fn upstream_of(repo: &RepositoryName) -> Option<(String, RepositoryName)> {
        let (host, rest) = repo.mirror_parts()?;
        Some((host.into_owned(), rest.parse().ok()?))
    }
}

impl Inner {
    /// The configuration now.
    pub(crate) fn config(&self) -> Arc<CacheConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `host` may be contacted now.
    pub(crate) fn reach(&self, host: &str) -> Reach {
        let config = self.config();
        if config.offline {
            Reach::Offline
        } else if config.upstreams.contains_key(host) || config.allow.permits(host) {
            Reach::Online
        } else {
            Reach::Refused
        }
    }

    /// For a repository of a host that may not be contacted: true when it
    /// holds nothing at all (NAME_UNKNOWN, one text whatever the host),
    /// false when content was pushed there (then the spec's
    /// MANIFEST_UNKNOWN/BLOB_UNKNOWN for what it lacks).
    pub(crate) async fn refused_and_unknown(
        &self,
        repo: &RepositoryName,
    ) -> Result<bool, RegistryError> {
        Ok(!self.registry.repository_exists(repo).await?)
    }

    fn client(&self, host: &str) -> Result<UpstreamClient, Failure> {
        // Nothing may build a client for a host outside the list, whatever
        // path a request took to get here.
        if self.reach(host) != Reach::Online {
            return Err(Failure::NotFound);
        }
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let settings = self.config();
        let config = match settings.upstreams.get(host) {
            Some(s) => s.client.clone(),
            None => UpstreamConfig::for_registry(host)
                .map_err(|e| Failure::Unavailable(e.to_string()))?
                .with_timeouts(settings.timeouts),
        };
        let client =
            UpstreamClient::new(config).map_err(|e| Failure::Unavailable(e.to_string()))?;
        // Not kept if a reload came in between: the next request builds
        // one from the new settings.
        if Arc::ptr_eq(&settings, &self.config()) {
            clients.insert(host.to_string(), client.clone());
        }
        Ok(client)
    }

    fn ttl(&self, host: &str) -> TtlPolicy {
        let config = self.config();
        config
            .upstreams
            .get(host)
            .map_or_else(|| config.default_ttl.clone(), |u| u.ttl.clone())
    }
}
