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
//!
//! The memory budget: buffers filled for clients (blob read-ahead, upload
//! batches) are taken against one budget all clients share, so that a
//! thousand downloaders that stop reading, or uploaders that stop sending,
//! hold at most the budget between them; past it, the next buffer waits
//! for one to be freed (the connection timeouts free those of stalled
//! clients).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bytes::Bytes;
use memmap2::MmapMut;

pub(crate) struct Pool {
    /// Free buffers, each with when it was freed and how many of its bytes
    /// may be resident (see [`Buffer::touched`]).
    free: Mutex<Vec<(MmapMut, Instant, usize)>>,
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
        free.retain(|(_, since, _)| now.duration_since(*since) < IDLE);
    }
}

/// The default memory budget for client buffers.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 * 1024 * 1024;

static BUDGET: OnceLock<(Arc<Semaphore>, usize)> = OnceLock::new();

/// Set the memory budget for client buffers; only the first call (before
/// any buffer is reserved) counts. Returns whether it took effect.
pub fn set_memory_budget(bytes: u64) -> bool {
    let bytes = bytes.clamp(SMALL.size as u64, Semaphore::MAX_PERMITS as u64) as usize;
    BUDGET.set((Arc::new(Semaphore::new(bytes)), bytes)).is_ok()
}

fn budget() -> &'static (Arc<Semaphore>, usize) {
    BUDGET.get_or_init(|| {
        let bytes = DEFAULT_MEMORY_BUDGET as usize;
        (Arc::new(Semaphore::new(bytes)), bytes)
    })
}

/// The memory budget's size.
pub fn memory_budget_total() -> usize {
    budget().1
}

/// Bytes of the budget not held by any buffer now (for tests and metrics).
pub fn memory_budget_free() -> usize {
    budget().0.available_permits()
}

/// A share of the memory budget, held by the buffer it was taken for.
pub(crate) struct Reservation(#[allow(dead_code)] OwnedSemaphorePermit);

/// Wait for `bytes` of the budget (all of it, if `bytes` is more).
/// `None` only if the budget was closed, which nothing does.
pub(crate) async fn reserve(bytes: usize) -> Option<Reservation> {
    let (sem, total) = budget();
    let n = bytes.clamp(1, *total).min(u32::MAX as usize) as u32;
    sem.clone()
        .acquire_many_owned(n)
        .await
        .ok()
        .map(Reservation)
}

/// The part of the memory budget set apart for client connections' own
/// state (see [`ConnectionCharge`]); buffers cannot take it, so clients
/// that stall holding buffers never keep newcomers out. Unset: no charge.
static CONNECTIONS: OnceLock<Arc<Semaphore>> = OnceLock::new();

/// Set apart `bytes` for connections; only the first call counts.
pub fn set_connection_budget(bytes: u64) -> bool {
    let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
    CONNECTIONS.set(Arc::new(Semaphore::new(bytes))).is_ok()
}

/// A client connection's share of the memory budget: what its own state
/// costs (hyper's buffers, its tasks and futures), which no buffer
/// reservation covers. Charged when the connection is admitted, so that
/// the budget bounds the memory clients hold, not just their buffers.
pub struct ConnectionCharge(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// [`ConnectionCharge`] of `bytes`, if the connections' part of the budget
/// has that much free now (always, when no part was set apart).
pub fn try_charge_connection(bytes: usize) -> Option<ConnectionCharge> {
    let Some(sem) = CONNECTIONS.get() else {
        return Some(ConnectionCharge(None));
    };
    let n = bytes.clamp(1, u32::MAX as usize) as u32;
    let p = sem.clone().try_acquire_many_owned(n).ok()?;
    Some(ConnectionCharge(Some(p)))
}

/// Up to `want` bytes of the budget, fewer when it runs low (a sixteenth
/// of what is free, at least `least`), so that under pressure every waiter
/// gets a little soon instead of a few getting much: a download's next
/// chunk shrinks rather than waiting behind clients that stopped reading.
/// Returns the reservation and the bytes it covers.
pub(crate) async fn reserve_up_to(want: usize, least: usize) -> (Option<Reservation>, usize) {
    if let Some((r, n)) = try_reserve_up_to(want, least) {
        return (Some(r), n);
    }
    let least = least.clamp(1, budget().1).min(want.max(1));
    (reserve(least).await, least)
}

/// [`reserve_up_to`] when the budget has room right now, without waiting.
pub(crate) fn try_reserve_up_to(want: usize, least: usize) -> Option<(Reservation, usize)> {
    let (sem, total) = budget();
    let least = least.clamp(1, *total).min(want.max(1));
    let n = want
        .min(sem.available_permits() / 16)
        .max(least)
        .min(u32::MAX as usize);
    let p = sem.clone().try_acquire_many_owned(n as u32).ok()?;
    Some((Reservation(p), n))
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

    /// A buffer of `size()` bytes, holding `reservation` until dropped.
    /// A free buffer is reused only if what it already has resident fits
    /// the reservation: a 16 KiB share must not hold a buffer a 1 MiB read
    /// filled before, or the budget would count less than is resident.
    pub fn get_reserved(
        &'static self,
        reservation: Option<Reservation>,
    ) -> std::io::Result<Buffer> {
        let allowed = reservation
            .as_ref()
            .map_or(self.size, |r| r.0.num_permits());
        let mut b = self.take(|touched| touched <= allowed)?;
        b.reservation = reservation;
        Ok(b)
    }

    /// A buffer of `size()` bytes (their content is whatever was left).
    pub fn get(&'static self) -> std::io::Result<Buffer> {
        self.take(|_| true)
    }

    /// A free buffer that `fits` (by its resident bytes), or a new mapping.
    fn take(&'static self, fits: impl Fn(usize) -> bool) -> std::io::Result<Buffer> {
        trim_idle();
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            free.iter()
                .rposition(|(_, _, touched)| fits(*touched))
                .map(|i| free.swap_remove(i))
        };
        let (map, touched) = match reused {
            Some((map, _, touched)) => (map, touched),
            None => {
                let map = MmapMut::map_anon(self.size)?;
                #[cfg(target_os = "linux")]
                if self.huge {
                    let _ = map.advise(memmap2::Advice::HugePage);
                }
                (map, 0)
            }
        };
        Ok(Buffer {
            map: Some(map),
            pool: self,
            reservation: None,
            touched,
            written: false,
        })
    }
}

/// A pooled buffer; back to its pool when dropped.
pub(crate) struct Buffer {
    map: Option<MmapMut>,
    pool: &'static Pool,
    /// Its share of the memory budget, returned when it is dropped.
    reservation: Option<Reservation>,
    /// Bytes from its start that may be resident: the most any use of it
    /// has filled (a fresh mapping has none until written).
    touched: usize,
    /// Handed out for writing since it was taken; `freeze` says how far.
    written: bool,
}

impl Buffer {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.written = true;
        match &mut self.map {
            Some(map) => map,
            None => &mut [],
        }
    }

    /// Its first `len` bytes as `Bytes`; the buffer goes back to the pool
    /// when the last clone is dropped.
    pub fn freeze(mut self, len: usize) -> Bytes {
        self.touched = self.touched.max(len);
        self.written = false;
        Bytes::from_owner(Filled { buffer: self, len })
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            // Written but never frozen (an error path): how far is unknown.
            let touched = if self.written {
                self.pool.size
            } else {
                self.touched
            };
            let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
            if free.len() < self.pool.keep {
                free.push((map, Instant::now(), touched));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn address(b: &mut Buffer) -> usize {
        b.as_mut_slice().as_ptr() as usize
    }

    /// A buffer a full read left resident is not handed to a small
    /// reservation (the budget would count 16 KiB of a resident 1 MiB); a
    /// reservation as large as what it holds may reuse it.
    #[test]
    fn reuse_never_holds_more_than_the_reservation_covers() {
        static POOL: Pool = Pool::new(1024 * 1024, 4, false);
        let mut full = POOL.get().unwrap();
        let at = address(&mut full);
        full.as_mut_slice().fill(7);
        drop(full.freeze(POOL.size()));

        let (small, n) = try_reserve_up_to(16 * 1024, 16 * 1024).unwrap();
        assert_eq!(n, 16 * 1024);
        let mut b = POOL.get_reserved(Some(small)).unwrap();
        assert_ne!(address(&mut b), at, "a 16 KiB share got the filled buffer");

        let (large, _) = try_reserve_up_to(POOL.size(), POOL.size()).unwrap();
        let mut big = POOL.get_reserved(Some(large)).unwrap();
        assert_eq!(address(&mut big), at, "a 1 MiB share may reuse it");
        drop(b);
        let mut b = big;
        // Written and dropped without freezing: counted as full.
        b.as_mut_slice()[0] = 1;
        drop(b);
        let (small, _) = try_reserve_up_to(16 * 1024, 16 * 1024).unwrap();
        let mut b = POOL.get_reserved(Some(small)).unwrap();
        assert_ne!(address(&mut b), at);
    }
}
