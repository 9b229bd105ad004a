//! Counting the operations that share a memory budget right now (blob
//! downloads sharing read-ahead, uploads sharing batch memory), so that each
//! can size its buffers to its share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The operations of one kind in progress.
#[derive(Debug, Clone, Default)]
pub struct ActiveCount(Arc<AtomicUsize>);

impl ActiveCount {
    /// Count one more operation for as long as the returned guard lives.
    pub fn enter(&self) -> Active {
        self.0.fetch_add(1, Ordering::Relaxed);
        Active(self.0.clone())
    }
}

/// One operation in progress.
#[derive(Debug)]
pub struct Active(Arc<AtomicUsize>);

impl Active {
    /// How many operations of its kind are in progress, this one included.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(1)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_guards_live() {
        let c = ActiveCount::default();
        let a = c.enter();
        let b = c.enter();
        assert_eq!(a.count(), 2);
        drop(b);
        assert_eq!(a.count(), 1);
    }
}
