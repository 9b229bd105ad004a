//! Reusable buffers for the bytes berth moves in bulk: upload batches and
//! blob read chunks.
//!
//! Why not the allocator: a push of 256 MiB in fresh 4 MiB heap buffers paid
//! for 64 new mappings, their page faults and zeroing, and freeing them
//! raised glibc's mmap threshold so that 1 MiB download buffers stayed in its
//! heap afterwards (peak memory during 64 downloads rose from 56 to 93 MiB);
//! mimalloc made the push fast but held over 1 GiB in per-thread heaps
//! during those downloads (buffers filled on blocking threads are freed on
//! the runtime's workers). So these buffers are anonymous mappings of their
//! own: page-aligned (as direct I/O wants), a few kept for reuse, the rest
//! unmapped when dropped, which returns their memory at once. Only pages a
//! buffer used are resident.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use memmap2::MmapMut;

pub(crate) struct Pool {
    /// Free buffers, each with when it was freed.
    free: Mutex<Vec<(MmapMut, Instant)>>,
    /// Bytes in every buffer.
    size: usize,
    /// Free buffers kept; more are unmapped.
    keep: usize,
    /// Ask for transparent huge pages.
    huge: bool,
}

/// Large upload batches (over 1 MiB: a lone push's 4 MiB batches being
/// filled, hashed and written). Huge pages, because direct I/O pins a
/// batch's pages for every write and pinning 4 KiB pages was 3.7% of a
/// push's CPU (push 1,151-1,367 MiB/s without, 1,500-1,516 with).
pub(crate) static LARGE: Pool = Pool::new(crate::batch::MAX_BATCH, 4, true);

/// Blob read chunks and small batches (up to 1 MiB: busy servers, cache
/// fills). Not huge pages: a huge page would make a 256 KiB chunk cost
/// 2 MiB of memory, defeating the budgets that shrink chunks under load.
pub(crate) static SMALL: Pool = Pool::new(1024 * 1024, 8, false);

/// Free buffers unused this long are unmapped by the next use of any pool,
/// so that memory a burst of pushes left behind does not stay resident
/// while the server goes on serving (peak memory during 64 downloads right
/// after the push benchmark: 70-81 MiB keeping them, against a limit of 81).
const IDLE: Duration = Duration::from_secs(2);

fn trim_idle() {
    let now = Instant::now();
    for pool in [&LARGE, &SMALL] {
        let mut free = pool.free.lock().unwrap_or_else(|p| p.into_inner());
        free.retain(|(_, since)| now.duration_since(*since) < IDLE);
    }
}

/// The pool whose buffers fit `size` bytes.
pub(crate) fn for_size(size: usize) -> &'static Pool {
    if size <= SMALL.size {
        &SMALL
    } else {
        &LARGE
    }
}

impl Pool {
    const fn new(size: usize, keep: usize, huge: bool) -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            size,
            keep,
            huge,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// A buffer of `size()` bytes (their content is whatever was left).
    pub fn get(&'static self) -> std::io::Result<Buffer> {
        trim_idle();
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let map = match reused {
            Some((map, _)) => map,
            None => {
                let map = MmapMut::map_anon(self.size)?;
                #[cfg(target_os = "linux")]
                if self.huge {
                    let _ = map.advise(memmap2::Advice::HugePage);
                }
                map
            }
        };
        Ok(Buffer {
            map: Some(map),
            pool: self,
        })
    }
}

/// A pooled buffer; back to its pool when dropped.
pub(crate) struct Buffer {
    map: Option<MmapMut>,
    pool: &'static Pool,
}

impl Buffer {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.map {
            Some(map) => map,
            None => &mut [],
        }
    }

    /// Its first `len` bytes as `Bytes`; the buffer goes back to the pool
    /// when the last clone is dropped.
    pub fn freeze(self, len: usize) -> Bytes {
        Bytes::from_owner(Filled { buffer: self, len })
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
            if free.len() < self.pool.keep {
                free.push((map, Instant::now()));
            }
        }
    }
}

struct Filled {
    buffer: Buffer,
    len: usize,
}

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        match &self.buffer.map {
            Some(map) => &map[..self.len.min(map.len())],
            None => &[],
        }
    }
}
