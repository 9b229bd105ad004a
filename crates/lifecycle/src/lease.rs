//! One lifecycle job at a time across replicas on one store. Within a
//! process `Lifecycle`'s mutex orders the jobs; replicas on one bucket
//! cannot see each other's mutex, and two evictors measuring the same
//! store would each remove what is needed (twice the eviction), two
//! scrubbers would read every blob twice.
//!
//! No locks or consensus, only documents and the store's read-after-write
//! consistency (the same ground as the GC fence in `berth_registry`): a
//! replica writes its lease, `_lifecycle/jobs/<id>` holding the moment it
//! ends, then lists the leases. It goes on only when it sees no live lease
//! but its own; otherwise it withdraws and skips the run. Of two replicas,
//! the one that lists second always sees the other's lease, so they never
//! both go on; at worst both withdraw and the next run tries again. A live
//! lease is renewed while its job runs; a crashed holder's lease runs out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_registry::Registry;
use berth_storage::{DocKey, Storage, UploadId};
use bytes::Bytes;

use crate::Result;

/// How long a lease holds without renewal.
const LEASE: Duration = Duration::from_secs(10 * 60);
/// How often a held lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(2 * 60);

fn leases() -> Result<DocKey> {
    Ok(DocKey::new(["_lifecycle", "jobs"])?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a lease document says: when it ends, and which job holds it (for
/// whoever reads the bucket).
fn lease_body(job: &str) -> Bytes {
    Bytes::from(format!("{} {job}", now() + LEASE.as_secs()))
}

fn lease_end(body: &[u8]) -> u64 {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A held lease: renewed in the background until released or dropped (a
/// dropped lease stops renewing and runs out within `LEASE`).
pub(crate) struct Lease {
    held: Option<(DocKey, tokio::task::JoinHandle<()>)>,
    storage: std::sync::Arc<dyn Storage>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((_, renewer)) = &self.held {
            renewer.abort();
        }
    }
}

impl Lease {
    /// Take the replica set's lifecycle lease for `job`; `None` when another
    /// replica holds it. On storage no other process shares, always granted
    /// (and nothing is written).
    pub(crate) async fn acquire(registry: &Registry, job: &str) -> Result<Option<Lease>> {
        let storage = registry.storage().clone();
        if !registry.is_shared() {
            return Ok(Some(Lease {
                held: None,
                storage,
            }));
        }
        let dir = leases()?;
        if !live_leases(storage.as_ref(), &dir, None).await?.is_empty() {
            return Ok(None);
        }
        let name = UploadId::new_random().to_string();
        let key = dir.join(&name)?;
        storage.doc_put(&key, lease_body(job)).await?;
        let others = live_leases(storage.as_ref(), &dir, Some(&name)).await?;
        if !others.is_empty() {
            tracing::info!(target: "berth::lifecycle", job, others = ?others,
                "another replica took the lifecycle lease at the same moment; withdrawing");
            storage.doc_delete(&key).await?;
            return Ok(None);
        }
        let renewer = {
            let (storage, key, job) = (storage.clone(), key.clone(), job.to_string());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RENEW_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = storage.doc_put(&key, lease_body(&job)).await {
                        tracing::warn!(target: "berth::lifecycle", job, "renewing the lifecycle lease failed: {e}");
                    }
                }
            })
        };
        Ok(Some(Lease {
            held: Some((key, renewer)),
            storage,
        }))
    }

    /// The job is done: other replicas may run theirs.
    pub(crate) async fn release(mut self) -> Result<()> {
        if let Some((key, renewer)) = self.held.take() {
            renewer.abort();
            self.storage.doc_delete(&key).await?;
        }
        Ok(())
    }
}

/// Names of the live leases under `dir` other than `mine`; run-out ones (a
/// crashed holder's) are removed on the way.
async fn live_leases(
    storage: &dyn Storage,
    dir: &DocKey,
    mine: Option<&str>,
) -> Result<Vec<String>> {
    let mut alive = Vec::new();
    for name in storage.doc_list(dir).await? {
        if Some(name.as_str()) == mine {
            continue;
        }
        let key = dir.join(&name)?;
        let Some(body) = storage.doc_get(&key).await? else {
            continue;
        };
        if lease_end(&body) > now() {
            alive.push(name);
        } else {
            let _ = storage.doc_delete(&key).await;
        }
    }
    Ok(alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_body_says_when_it_ends() {
        let body = lease_body("evict");
        let end = lease_end(&body);
        assert!(end >= now() + LEASE.as_secs() - 1 && end <= now() + LEASE.as_secs());
        assert!(std::str::from_utf8(&body).unwrap().ends_with(" evict"));
        assert_eq!(lease_end(b"garbage"), 0);
        assert_eq!(lease_end(b""), 0);
    }
}
