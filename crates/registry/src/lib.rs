//! The registry: what pushing, pulling, tagging and deleting mean, expressed
//! over the [`Storage`] trait and independent of HTTP.
//!
//! - `layout`: where each kind of metadata lives in the document store;
//! - `blobs`: blob reads, deletes and cross-repository mounts;
//! - `uploads`: upload sessions, hashed as the bytes stream through;
//! - `hashing`: that hashing, on the blocking pool beside the network;
//! - `manifests`: manifest validation, storage and deletion;
//! - `references`: the push-time check that what a manifest references is
//!   present, once per distinct digest;
//! - `tags`: tag resolution and listing;
//! - `catalog`: the repository list;
//! - `migrate`: moving what older versions stored under names since changed;
//! - `referrers`: the referrers API's index;
//! - `memo`: in-memory copies of tags, manifests and tag lists for pulls;
//! - `inventory`: what is held, for the lifecycle jobs, and GC's fence.
//!
//! The pull-through cache wraps a [`Registry`]: it serves what the registry
//! holds and fills it from upstreams through the same methods.
#![forbid(unsafe_code)]

mod blobs;
mod catalog;
mod error;
mod hashing;
mod inventory;
mod layout;
mod manifests;
mod memo;
mod migrate;
mod references;
mod referrers;
mod shared_fence;
mod tags;
mod uploads;

pub use migrate::Renamed;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use berth_storage::{Storage, UploadId};

pub use berth_storage::{ByteRange, ByteStream};
pub use blobs::OpenBlob;
pub use error::{RegistryError, Result};
pub use inventory::{CachedImage, GcGuard, Link, References, TagActivity};
pub use manifests::{PutManifest, StoredManifest};
pub use uploads::UploadStatus;

/// One page of a sorted listing (tags or repositories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// Set when more items follow: the `last` to ask for the next page with.
    pub next_last: Option<String>,
}

/// Take the page after `last` (exclusive) of at most `n` items from a sorted list.
fn paginate<I: IntoIterator<Item = String>>(
    sorted: I,
    n: Option<usize>,
    last: Option<&str>,
) -> Page {
    let mut iter = sorted
        .into_iter()
        .filter(|s| last.is_none_or(|l| s.as_str() > l))
        .peekable();
    let mut items = Vec::new();
    match n {
        None => items.extend(iter),
        Some(n) => {
            while items.len() < n {
                match iter.next() {
                    Some(s) => items.push(s),
                    None => break,
                }
            }
            if iter.peek().is_some() {
                return Page {
                    next_last: items.last().cloned(),
                    items,
                };
            }
        }
    }
    Page {
        items,
        next_last: None,
    }
}

/// Per-session state kept in memory between requests: the running hash of
/// the bytes received so far. Lost on restart, in which case the upload is
/// re-hashed from storage when it completes. Every request's bytes are in
/// storage before it is answered, so nothing else carries over.
#[derive(Default)]
struct Session {
    /// The running hash of the bytes stored so far (`hashed` of them).
    hasher: Option<hashing::PendingHash>,
    hashed: u64,
}

pub struct Registry {
    storage: Arc<dyn Storage>,
    sessions: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Session>>>>,
    /// Repository names, loaded on first use and kept current by writes.
    catalog: tokio::sync::RwLock<Option<BTreeSet<String>>>,
    /// When the catalog was last walked (for shared storage, see `catalog`).
    catalog_walked: Mutex<Option<std::time::Instant>>,
    /// With storage other replicas write: the most a memo entry may age.
    memo_ttl: Option<std::time::Duration>,
    /// `<repository> <tag>` → the digest it points at.
    tag_memo: memo::Memo<berth_reference::Digest>,
    /// `<repository> <digest>` → the manifest as stored there.
    manifest_memo: memo::Memo<StoredManifest>,
    /// `<repository>` → its tag names, sorted.
    tag_list_memo: memo::Memo<Arc<BTreeSet<String>>>,
    /// Upload requests streaming right now (they share the batch budget).
    active_appends: berth_storage::active::ActiveCount,
    /// Keeps garbage collection from deleting what a push references.
    fence: inventory::Fence,
    /// A blob HEAD renews a link older than this (half of GC's grace).
    link_refresh: std::time::Duration,
    /// When each cached manifest's pull was last written down.
    pulled: Mutex<HashMap<String, std::time::Instant>>,
    /// Blob bytes stored since eviction last measured the store.
    stored_since_scan: std::sync::atomic::AtomicU64,
}

/// Memory the memos may use (approximately; see `memo`).
const TAG_MEMO_BUDGET: usize = 8 << 20;
const MANIFEST_MEMO_BUDGET: usize = 32 << 20;
const TAG_LIST_MEMO_BUDGET: usize = 32 << 20;

impl Registry {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Registry {
            storage,
            sessions: Mutex::new(HashMap::new()),
            catalog: tokio::sync::RwLock::new(None),
            catalog_walked: Mutex::new(None),
            memo_ttl: None,
            tag_memo: memo::Memo::new(TAG_MEMO_BUDGET, |k, _| k.len() + 120),
            manifest_memo: memo::Memo::new(MANIFEST_MEMO_BUDGET, |k, m| {
                k.len() + m.bytes.len() + m.media_type.len() + 200
            }),
            // Tag names are short: a flat estimate keeps weighing O(1).
            tag_list_memo: memo::Memo::new(TAG_LIST_MEMO_BUDGET, |k, set| {
                k.len() + 64 * set.len() + 64
            }),
            active_appends: Default::default(),
            fence: Default::default(),
            link_refresh: std::time::Duration::from_secs(30 * 60),
            pulled: Mutex::new(HashMap::new()),
            stored_since_scan: Default::default(),
        }
    }

    /// Tell the registry garbage collection's grace period, so that a blob
    /// HEAD keeps the blob for at least half of it (see `blob_head`).
    pub fn with_gc_grace(mut self, grace: std::time::Duration) -> Self {
        self.link_refresh = grace / 2;
        self
    }

    /// Storage is shared with other replicas: a tag moved or deleted, or a
    /// manifest deleted, through one of them is seen here within `ttl`
    /// (new tags and manifests at once: absence is never remembered).
    pub fn with_memo_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.memo_ttl = Some(ttl);
        self.tag_memo.set_max_age(ttl);
        self.manifest_memo.set_max_age(ttl);
        self.tag_list_memo.set_max_age(ttl);
        self
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Is the storage shared with other replicas (see `with_memo_ttl`)?
    pub fn is_shared(&self) -> bool {
        self.memo_ttl.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pagination() {
        let all = strings(&["a", "b", "c", "d"]);
        assert_eq!(paginate(all.clone(), None, None).items, all);
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!(
            (p.items, p.next_last),
            (strings(&["a", "b"]), Some("b".into()))
        );
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!((p.items, p.next_last), (strings(&["c", "d"]), None));
        assert!(paginate(all.clone(), Some(0), None).items.is_empty());
        assert_eq!(
            paginate(all.clone(), None, Some("bb")).items,
            strings(&["c", "d"])
        );
        assert_eq!(
            paginate(all, Some(10), Some("d")).items,
            Vec::<String>::new()
        );
    }
}
