//! One process owns a local storage root at a time: `berth serve` holds an
//! exclusive `flock` on `ROOT/run/berth.lock` for as long as it runs, and
//! maintenance commands (`berth gc`) work on a root directly only when they
//! can take it; otherwise they ask the running server through its admin
//! socket beside the lock. Opening a root also clears its `tmp/`, which
//! would destroy a running server's files in flight: the lock prevents that.

use std::path::{Path, PathBuf};

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RootLock {
    _file: std::fs::File,
}

/// `ROOT/run`: the lock and the admin socket.
pub fn run_dir(root: &Path) -> PathBuf {
    root.join("run")
}

/// Take the root's lock, or `None` when another process holds it.
pub fn try_lock(root: &Path) -> std::io::Result<Option<RootLock>> {
    let dir = run_dir(root);
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("berth.lock"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(RootLock { _file: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::try_lock(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(super::try_lock(dir.path()).unwrap().is_none());
        drop(first);
        assert!(super::try_lock(dir.path()).unwrap().is_some());
    }
}
