//! In-memory copies of the metadata every pull reads, so that the hot reads
//! (a manifest by tag, a tag list) cost no file system round trips: a
//! manifest GET by tag was three small file reads, each a hop to the
//! blocking pool, and listing thousands of tags re-read the directory.
//!
//! A [`Memo`] is filled by reads and kept right by writes: every write in
//! this process updates or removes the entries it affects *after* the
//! storage write (whether that write succeeded or not), and a generation
//! counter makes a fill that raced with any write give up, so a memo never
//! holds what storage no longer says. Like the catalog, this assumes berth
//! is the only writer of its storage while it runs.
//!
//! Where other processes write the same storage (replicas on one bucket),
//! each entry also has a maximum age ([`Memo::set_max_age`]): older ones
//! are read from storage again, which bounds how long another replica's
//! write can go unseen here.
//!
//! Each memo has a weight budget; going over it empties the memo (they
//! refill from storage as they are read), which keeps memory bounded
//! without bookkeeping on the read path.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Inner<V> {
    map: HashMap<String, (V, Instant)>,
    weight: usize,
    generation: u64,
}

pub(crate) struct Memo<V> {
    inner: Mutex<Inner<V>>,
    budget: usize,
    weigh: fn(&str, &V) -> usize,
    max_age: Option<Duration>,
}

/// A memo's key for something inside a repository. Neither repository
/// names nor tags nor digests contain a space.
pub(crate) fn key(repo: &str, item: &str) -> String {
    let mut k = String::with_capacity(repo.len() + 1 + item.len());
    k.push_str(repo);
    k.push(' ');
    k.push_str(item);
    k
}

impl<V: Clone> Memo<V> {
    pub fn new(budget: usize, weigh: fn(&str, &V) -> usize) -> Self {
        Memo {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                weight: 0,
                generation: 0,
            }),
            budget,
            weigh,
            max_age: None,
        }
    }

    /// Entries older than this are dropped when read (storage shared with
    /// other writers).
    pub fn set_max_age(&mut self, age: Duration) {
        self.max_age = Some(age);
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, k: &str) -> Option<V> {
        let mut inner = self.lock();
        let (v, at) = inner.map.get(k)?;
        if self.max_age.is_some_and(|age| at.elapsed() > age) {
            if let Some((old, _)) = inner.map.remove(k) {
                inner.weight -= (self.weigh)(k, &old);
            }
            return None;
        }
        Some(v.clone())
    }

    /// Take before reading storage; hand to [`Memo::fill`] with what was read.
    pub fn token(&self) -> u64 {
        self.lock().generation
    }

    fn insert(&self, inner: &mut Inner<V>, k: String, v: V) {
        if let Some((old, _)) = inner.map.remove(&k) {
            inner.weight -= (self.weigh)(&k, &old);
        }
        let w = (self.weigh)(&k, &v);
        if w > self.budget {
            return;
        }
        if inner.weight + w > self.budget {
            inner.map.clear();
            inner.weight = 0;
        }
        inner.weight += w;
        inner.map.insert(k, (v, Instant::now()));
    }

    /// Remember what a read found, unless a write happened since `token`.
    pub fn fill(&self, token: u64, k: String, v: V) {
        let mut inner = self.lock();
        if inner.generation == token && !inner.map.contains_key(&k) {
            self.insert(&mut inner, k, v);
        }
    }

    /// After storage now holds `v` under `k`.
    pub fn set(&self, k: String, v: V) {
        let mut inner = self.lock();
        inner.generation += 1;
        self.insert(&mut inner, k, v);
    }

    /// After storage changed `k` in a way not known here (removed, or a
    /// write that failed midway).
    pub fn remove(&self, k: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some((old, _)) = inner.map.remove(k) {
            inner.weight -= (self.weigh)(k, &old);
        }
    }

    /// After a write that changes part of `k`'s value: apply it if `k` is
    /// held (a value not held is simply read from storage later).
    pub fn update(&self, k: &str, f: impl FnOnce(&mut V)) {
        let mut inner = self.lock();
        inner.generation += 1;
        let Inner { map, weight, .. } = &mut *inner;
        if let Some((v, _)) = map.get_mut(k) {
            let before = (self.weigh)(k, v);
            f(v);
            *weight = *weight - before + (self.weigh)(k, v);
        }
        if inner.weight > self.budget {
            inner.map.clear();
            inner.weight = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memo(budget: usize) -> Memo<String> {
        Memo::new(budget, |k, v| k.len() + v.len())
    }

    #[test]
    fn fills_unless_a_write_intervened() {
        let m = memo(1000);
        let t = m.token();
        m.fill(t, key("r", "a"), "1".into());
        assert_eq!(m.get(&key("r", "a")).as_deref(), Some("1"));

        // A read that started before a delete must not bring the value back.
        let t = m.token();
        m.remove(&key("r", "a"));
        m.fill(t, key("r", "a"), "1".into());
        assert_eq!(m.get(&key("r", "a")), None);

        // A fill never replaces what a write put there.
        m.set(key("r", "b"), "new".into());
        let t = m.token();
        m.fill(t, key("r", "b"), "old".into());
        assert_eq!(m.get(&key("r", "b")).as_deref(), Some("new"));

        m.update(&key("r", "b"), |v| v.push('!'));
        assert_eq!(m.get(&key("r", "b")).as_deref(), Some("new!"));
        m.update(&key("r", "absent"), |v| v.push('!'));
        assert_eq!(m.get(&key("r", "absent")), None);
    }

    #[test]
    fn stays_within_its_budget() {
        let m = memo(20);
        m.set(key("r", "a"), "0123456789".into()); // weight 13
        assert!(m.get(&key("r", "a")).is_some());
        m.set(key("r", "b"), "0123456789".into()); // would be 26: emptied first
        assert!(m.get(&key("r", "a")).is_none());
        assert!(m.get(&key("r", "b")).is_some());
        m.set(key("r", "c"), "x".repeat(100)); // larger than the budget: not kept
        assert!(m.get(&key("r", "c")).is_none());
        m.set(key("r", "b"), "x".repeat(100)); // and the old value is gone
        assert!(m.get(&key("r", "b")).is_none());
        m.set(key("r", "b"), "0123456789".into());
        m.update(&key("r", "b"), |v| v.push_str(&"y".repeat(50)));
        assert!(m.get(&key("r", "b")).is_none());
        assert_eq!(m.lock().weight, 0);
    }

    #[test]
    fn entries_past_their_age_are_read_again() {
        let mut m = memo(1000);
        m.set_max_age(Duration::from_millis(50));
        m.set(key("r", "a"), "1".into());
        assert_eq!(m.get(&key("r", "a")).as_deref(), Some("1"));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(m.get(&key("r", "a")), None, "expired");
        assert_eq!(m.lock().weight, 0, "and its weight returned");
        // A fresh read fills it again.
        let t = m.token();
        m.fill(t, key("r", "a"), "2".into());
        assert_eq!(m.get(&key("r", "a")).as_deref(), Some("2"));
    }
}
