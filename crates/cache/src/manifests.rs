//! Manifests through the cache. Concurrent requests for the same tag or
//! digest share one upstream exchange (a "flight"); tags are revalidated
//! with a HEAD, which Docker Hub does not count against its rate limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_manifest::media_type;
use berth_reference::{Digest, ManifestRef, RepositoryName, Tag};
use berth_registry::{RegistryError, StoredManifest};
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::outcome;
use crate::{lock, Cache, Failure, Inner, Reach};

pub(crate) type Flight = Shared<BoxFuture<'static, Result<StoredManifest, Failure>>>;

/// How long a request for a cached tag waits for its revalidation before
/// serving what is held. An upstream that accepts connections and never
/// answers (or a blackholed address) would otherwise hold every pull of a
/// cached tag for the upstream client's read or connect timeout.
const REVALIDATE_PATIENCE: Duration = Duration::from_secs(5);

impl Cache {
    /// A manifest of a mirrored repository, from the cache or its upstream.
    /// A pull renews the image's place in the eviction order.
    pub async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<StoredManifest, RegistryError> {
        let m = self.lookup_manifest(repo, reference).await?;
        if Cache::upstream_of(repo).is_some() {
            if let Err(e) = self.inner.registry.note_pulled(repo, &m.digest).await {
                tracing::debug!(repository = %repo, digest = %m.digest, "recording a pull failed: {e}");
            }
        }
        Ok(m)
    }

    async fn lookup_manifest(
        &self,
        repo: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<StoredManifest, RegistryError> {
        let inner = &self.inner;
        let Some((host, remote)) = Cache::upstream_of(repo) else {
            return inner.registry.manifest_get(repo, reference).await;
        };
        let local = match inner.registry.manifest_get(repo, reference).await {
            Ok(m) => Some(m),
            Err(RegistryError::ManifestUnknown(_)) => None,
            Err(e) => return Err(e),
        };
        let reach = inner.reach(&host);
        let refused = reach == Reach::Refused && inner.refused_and_unknown(repo).await?;
        let unknown = || {
            if refused {
                RegistryError::UpstreamNotAllowed
            } else {
                RegistryError::ManifestUnknown(reference.to_string())
            }
        };
        match reference {
            ManifestRef::Digest(digest) => {
                if let Some(m) = local {
                    inner.metrics.hits.inc();
                    outcome::record("hit", &host);
                    return Ok(m);
                }
                if reach != Reach::Online {
                    return Err(unknown());
                }
                inner.metrics.misses.inc();
                outcome::record("fill", &host);
                let key = format!("{repo}@{digest}");
                let (inner2, repo2, digest2) = (self.inner.clone(), repo.clone(), digest.clone());
                let flight = move || fetch_by_digest(inner2, host, remote, repo2, digest2).boxed();
                self.fly(key, flight)
                    .await
                    .map_err(|f| f.into_error(unknown()))
            }
            ManifestRef::Tag(tag) => {
                if reach != Reach::Online {
                    if local.is_some() {
                        outcome::record("hit", &host);
                    }
                    return local.ok_or_else(unknown);
                }
                if let Some(m) = &local {
                    if self.is_fresh(&host, repo, tag) {
                        inner.metrics.hits.inc();
                        outcome::record("hit", &host);
                        return Ok(m.clone());
                    }
                } else {
                    inner.metrics.misses.inc();
                }
                let upstream = host.clone();
                let key = format!("{repo}:{tag}");
                let held = local.as_ref().map(|m| m.digest.clone());
                let (inner2, repo2, tag2) = (self.inner.clone(), repo.clone(), tag.clone());
                let flight = move || revalidate(inner2, host, remote, repo2, tag2, held).boxed();
                let outcome = match &local {
                    // The flight goes on without us and refreshes the tag if
                    // the upstream answers late.
                    Some(_) => {
                        match tokio::time::timeout(REVALIDATE_PATIENCE, self.fly(key, flight)).await
                        {
                            Ok(outcome) => outcome,
                            Err(_) => {
                                // Trusted for another TTL, rather than every
                                // pull waiting out the patience again.
                                mark_validated(inner, repo, tag);
                                Err(Failure::Unavailable(format!(
                                    "no answer within {REVALIDATE_PATIENCE:?}"
                                )))
                            }
                        }
                    }
                    None => self.fly(key, flight).await,
                };
                match (outcome, local) {
                    (Ok(m), held) => {
                        let same = held.is_some_and(|h| h.digest == m.digest);
                        outcome::record(if same { "revalidated" } else { "fill" }, &upstream);
                        Ok(m)
                    }
                    (Err(f), Some(m)) if f.upstream_down() => {
                        inner.metrics.stale_serves.inc();
                        outcome::record("stale", &upstream);
                        tracing::warn!(repository = %repo, %tag, reason = ?f, "upstream unavailable; serving the cached tag");
                        Ok(m)
                    }
                    // The upstream has no such tag, but one was pushed here
                    // (an air-gap preload): it is served like a cached one,
                    // and like one it is not asked about again within its TTL.
                    (Err(Failure::NotFound), Some(m)) => {
                        mark_validated(inner, repo, tag);
                        outcome::record("hit", &upstream);
                        Ok(m)
                    }
                    (Err(f), _) => Err(f.into_error(unknown())),
                }
            }
        }
    }

    fn is_fresh(&self, host: &str, repo: &RepositoryName, tag: &Tag) -> bool {
        is_fresh(&self.inner, host, repo, tag)
    }

    /// Run `start` unless a flight with the same key is already in the air,
    /// in which case wait for that one's result instead.
    async fn fly(
        &self,
        key: String,
        start: impl FnOnce() -> BoxFuture<'static, Result<StoredManifest, Failure>>,
    ) -> Result<StoredManifest, Failure> {
        let flight = {
            let mut flights = lock(&self.inner.manifest_flights);
            match flights.get(&key) {
                Some(f) => {
                    self.inner.metrics.coalesced.inc();
                    f.clone()
                }
                None => {
                    let f = start().shared();
                    flights.insert(key.clone(), f.clone());
                    // Driven to its end even when every requester stops
                    // waiting (a client gone, a stale serve), then forgotten,
                    // so that a finished flight is never joined later.
                    let (inner, driver, key) = (self.inner.clone(), f.clone(), key.clone());
                    tokio::spawn(async move {
                        let _ = driver.clone().await;
                        let mut flights = lock(&inner.manifest_flights);
                        if flights.get(&key).is_some_and(|f| f.ptr_eq(&driver)) {
                            flights.remove(&key);
                        }
                    });
                    f
                }
            }
        };
        flight.await
    }
}

async fn fetch_by_digest(
    inner: Arc<Inner>,
    host: String,
    remote: RepositoryName,
    repo: RepositoryName,
    digest: Digest,
) -> Result<StoredManifest, Failure> {
    let client = inner.client(&host)?;
    let m = inner
        .metrics
        .upstream_call(
            &host,
            "manifest",
            client.manifest_get(
                &remote,
                &ManifestRef::Digest(digest.clone()),
                &media_type::ALL,
            ),
        )
        .await
        .map_err(|e| Failure::from_upstream(&e))?;
    store_or_pass(&inner, &repo, m, None).await
}

/// Store a manifest fetched from upstream; when storage is full, hand it to
/// the waiting clients all the same (it was verified against its digest).
async fn store_or_pass(
    inner: &Inner,
    repo: &RepositoryName,
    m: berth_upstream::Manifest,
    tag: Option<&Tag>,
) -> Result<StoredManifest, Failure> {
    match inner
        .registry
        .manifest_store_cached(repo, &m.digest, Some(&m.media_type), m.bytes.clone(), tag)
        .await
    {
        Ok(stored) => Ok(stored),
        Err(RegistryError::StorageFull) => {
            inner.metrics.uncached_serves.inc();
            tracing::warn!(repository = %repo, digest = %m.digest,
                "storage full: serving a manifest from upstream without caching it");
            Ok(StoredManifest {
                digest: m.digest,
                media_type: m.media_type,
                bytes: m.bytes,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Confirm (HEAD) or refresh (GET) a tag with its upstream.
async fn revalidate(
    inner: Arc<Inner>,
    host: String,
    remote: RepositoryName,
    repo: RepositoryName,
    tag: Tag,
    held: Option<Digest>,
) -> Result<StoredManifest, Failure> {
    let reference = ManifestRef::Tag(tag.clone());
    // A flight that ended between this request's look at the cache and its
    // start of a new flight has already fetched (or checked) the tag: no
    // second upstream request for it.
    if is_fresh(&inner, &host, &repo, &tag) {
        if let Ok(m) = inner.registry.manifest_get(&repo, &reference).await {
            return Ok(m);
        }
    }
    let client = inner.client(&host)?;
    let fresh_digest = match &held {
        Some(held) => {
            let meta = inner
                .metrics
                .upstream_call(
                    &host,
                    "manifest_head",
                    client.manifest_head(&remote, &reference, &media_type::ALL),
                )
                .await
                .map_err(|e| Failure::from_upstream(&e))?;
            if &meta.digest == held {
                mark_validated(&inner, &repo, &tag);
                return Ok(inner.registry.manifest_get(&repo, &reference).await?);
            }
            Some(meta.digest)
        }
        None => None,
    };
    // Fetch by digest when the HEAD told us which, so the bytes are verified.
    let fetch_ref = fresh_digest.map_or(reference, ManifestRef::Digest);
    let m = inner
        .metrics
        .upstream_call(
            &host,
            "manifest",
            client.manifest_get(&remote, &fetch_ref, &media_type::ALL),
        )
        .await
        .map_err(|e| Failure::from_upstream(&e))?;
    let stored = store_or_pass(&inner, &repo, m, Some(&tag)).await?;
    mark_validated(&inner, &repo, &tag);
    Ok(stored)
}

/// Whether the tag was checked with its upstream within its TTL.
fn is_fresh(inner: &Inner, host: &str, repo: &RepositoryName, tag: &Tag) -> bool {
    let ttl = inner.ttl(host).ttl_for(tag.as_str());
    lock(&inner.validated)
        .get(&(repo.clone(), tag.to_string()))
        .is_some_and(|at| at.elapsed() < ttl)
}

fn mark_validated(inner: &Inner, repo: &RepositoryName, tag: &Tag) {
    lock(&inner.validated).insert((repo.clone(), tag.to_string()), Instant::now());
}
