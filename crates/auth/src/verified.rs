//! Bearer tokens already verified, remembered until they expire: every
//! request of a pulling client carries the same token, and checking its
//! signature and decoding its claims each time cost a quarter of berth's
//! manifest requests per second (44k against 60k req/s, measured with wrk).
//! A token is remembered only after it verified, and looked up by its exact
//! text, so a hit proves what a full check would; expiry is checked on every
//! hit. The memory is bounded: past `CAPACITY` tokens it starts afresh.
//!
//! Lookups far outnumber inserts, so readers share a lock; the keys are
//! hashed with FxHash rather than SipHash (a third of this module's time on
//! ~350-byte tokens): only tokens that verified are ever stored, and their
//! HMAC signatures are not the attacker's to choose, so no one can aim
//! entries at one bucket.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustc_hash::FxBuildHasher;

use crate::Granted;

const CAPACITY: usize = 10_000;

/// A verified token's grants and its expiry (seconds since the epoch).
type Entry = (Arc<Granted>, u64);

#[derive(Default)]
pub(crate) struct Verified {
    tokens: RwLock<HashMap<Arc<str>, Entry, FxBuildHasher>>,
}

impl Verified {
    /// The grants of a token verified before and not expired at `now`.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Arc<Granted>> {
        let map = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        match map.get(token) {
            Some((granted, exp)) if *exp > now => Some(granted.clone()),
            _ => None,
        }
    }

    pub(crate) fn insert(&self, token: &str, granted: Arc<Granted>, exp: u64) {
        let mut map = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(Arc::from(token), (granted, exp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn remembers_until_expiry_and_stays_bounded() {
        let v = Verified::default();
        let g = Arc::new(Granted {
            identity: Identity::anonymous(),
            access: HashMap::new(),
        });
        v.insert("t1", g.clone(), 100);
        assert!(v.get("t1", 99).is_some());
        assert!(v.get("t1", 100).is_none(), "expired");
        assert!(v.get("t2", 50).is_none());
        for i in 0..CAPACITY + 5 {
            v.insert(&format!("x{i}"), g.clone(), 100);
        }
        assert!(v.tokens.read().unwrap().len() <= CAPACITY);
    }
}
