//! The server's table of open client connections: what each is doing (a
//! request in flight, reading the headers of the next one, or idle), which
//! one to close when the table is full, and how many each client address
//! holds.
//!
//! A full table sheds before it refuses: the connection quiet longest with
//! no request in flight (an idle keep-alive, or one that sent half a request
//! line and stopped) is told to close, so that a scan of half-open sockets
//! cannot keep a kubelet's pull out. Only when every connection is busy is a
//! newcomer answered 503.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::limits::Limits;

/// "No such moment" in the millisecond fields of [`ConnState`].
const NEVER: u64 = u64::MAX;

/// One connection's state, shared by its I/O wrapper, its requests and the
/// table.
pub struct ConnState {
    opened: Instant,
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the first byte of the next request
    /// arrived, or [`NEVER`] (none since the last response).
    request_began: AtomicU64,
    /// Milliseconds after `opened` when the last response was sent in full.
    idle_since: AtomicU64,
    /// At least one response has been sent.
    served: AtomicBool,
    /// Told to close (the table shed it, or shutdown's grace ran out).
    closing: Notify,
    /// The task waiting to read, woken when the connection becomes idle so
    /// that its read starts the idle timer (hyper may have begun that read
    /// while the response was still being sent).
    reader: AtomicWaker,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            request_began: AtomicU64::new(NEVER),
            idle_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            closing: Notify::new(),
            reader: AtomicWaker::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + std::time::Duration::from_millis(ms)
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.request_began.load(Ordering::Relaxed) == NEVER
        {
            self.request_began.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request's headers were read and it is being served.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.request_began.store(NEVER, Ordering::Relaxed);
    }

    /// A response was sent in full (or abandoned).
    pub fn response_finished(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reader.wake();
        }
    }

    /// Remember the task of a read that is waiting.
    pub fn waiting_to_read(&self, waker: &std::task::Waker) {
        self.reader.register(waker);
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When a read that is waiting now must have produced the rest of a
    /// request: `None` while a request is in flight (its body has a timer
    /// of its own, and a handler may take long without reading).
    pub fn read_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        let began = self.request_began.load(Ordering::Relaxed);
        Some(if began != NEVER {
            self.at(began) + limits.header_timeout
        } else if self.served.load(Ordering::Relaxed) {
            self.at(self.idle_since.load(Ordering::Relaxed)) + limits.idle_timeout
        } else {
            // Opened and silent: as long as headers may take.
            self.opened + limits.header_timeout
        })
    }

    /// Resolves once the connection is told to close.
    pub async fn closing(&self) {
        self.closing.notified().await
    }

    pub fn close(&self) {
        // `notify_one` keeps a permit, so a close before the connection's
        // task first waits is not lost.
        self.closing.notify_one();
    }

    /// Since when the connection has been quiet (for choosing whom to shed).
    fn quiet_since(&self) -> u64 {
        let began = self.request_began.load(Ordering::Relaxed);
        if began != NEVER {
            // A half-sent request is quiet since it began: slow senders go
            // before idle keep-alives of the same age.
            began
        } else {
            self.idle_since.load(Ordering::Relaxed)
        }
    }
}

struct Entry {
    state: Arc<ConnState>,
    ip: IpAddr,
    /// Its share of the memory budget, given back when it leaves the table
    /// (a shed connection's at once, before its task has unwound).
    _charge: berth_storage::ConnectionCharge,
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
}

/// Shed connections whose tasks may still hold their sockets before the
/// accept loop waits for them: within the fds kept in reserve (128 at
/// least, `limits`), so that a burst of newcomers shedding idle connections
/// cannot outrun their closing and run out of file descriptors.
const UNWINDING_MAX: usize = 32;

/// How long accepting waits for shed connections to unwind.
const UNWIND_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// The open connections, bounded by [`Limits::max_connections`].
pub struct ConnTable {
    limits: Limits,
    inner: Mutex<Inner>,
    /// Admitted connections whose tasks have not ended: those in the table
    /// and those shed from it that are still closing.
    sockets: std::sync::atomic::AtomicUsize,
    /// A connection's task ended.
    released: tokio::sync::Notify,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection is busy.
    Full,
    /// The client address holds its limit of busy connections.
    ClientFull,
    /// The memory budget has no room for another connection, and every
    /// connection is busy.
    Memory,
}

/// A connection's place in the table; leaving drops it from the table.
pub struct Admitted {
    table: Arc<ConnTable>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.remove(self.id);
        self.table
            .sockets
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.table.released.notify_waiters();
    }
}

impl ConnTable {
    pub fn new(limits: Limits) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            limits,
            inner: Mutex::new(Inner::default()),
            sockets: std::sync::atomic::AtomicUsize::new(0),
            released: tokio::sync::Notify::new(),
        })
    }

    /// Connections shed from the table whose tasks have not ended yet.
    pub fn unwinding(&self) -> usize {
        let live = self.lock().conns.len();
        self.sockets
            .load(std::sync::atomic::Ordering::Acquire)
            .saturating_sub(live)
    }

    /// Before accepting: wait, briefly, while many shed connections still
    /// hold their sockets (see [`UNWINDING_MAX`]).
    pub async fn room_to_accept(&self) {
        let deadline = tokio::time::Instant::now() + UNWIND_WAIT;
        loop {
            let released = self.released.notified();
            if self.unwinding() < UNWINDING_MAX {
                return;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Admit a connection from `peer`, shedding a quiet one if the table
    /// (or the client's share of it) is full.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admitted, Refusal> {
        let ip = peer.ip();
        let mut inner = self.lock();
        if let Some(max) = self.limits.max_connections_per_client {
            if inner.per_client.get(&ip).copied().unwrap_or(0) >= max {
                match Self::quietest(&inner, Some(ip)) {
                    Some(id) => Self::shed(&mut inner, id),
                    None => return Err(Refusal::ClientFull),
                }
            }
        }
        if inner.conns.len() >= self.limits.max_connections {
            match Self::quietest(&inner, None) {
                Some(id) => Self::shed(&mut inner, id),
                None => return Err(Refusal::Full),
            }
        }
        let bytes = self.limits.connection_memory;
        let charge = match berth_storage::try_charge_connection(bytes) {
            Some(c) => c,
            None => match Self::quietest(&inner, None) {
                Some(id) => {
                    Self::shed(&mut inner, id);
                    berth_storage::try_charge_connection(bytes).ok_or(Refusal::Memory)?
                }
                None => return Err(Refusal::Memory),
            },
        };
        let id = inner.next;
        inner.next += 1;
        let state = Arc::new(ConnState::new());
        inner.conns.insert(
            id,
            Entry {
                state: state.clone(),
                ip,
                _charge: charge,
            },
        );
        *inner.per_client.entry(ip).or_default() += 1;
        self.sockets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(Admitted {
            table: self.clone(),
            id,
            state,
        })
    }

    /// The connection with no request in flight that has been quiet
    /// longest (of `ip`'s, when given).
    fn quietest(inner: &Inner, ip: Option<IpAddr>) -> Option<u64> {
        inner
            .conns
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip) && !e.state.busy())
            .min_by_key(|(_, e)| {
                e.state.opened + std::time::Duration::from_millis(e.state.quiet_since())
            })
            .map(|(id, _)| *id)
    }

    /// Tell a connection to close and take it off the table now, so that
    /// its place is free at once (its task ends on its own).
    fn shed(inner: &mut Inner, id: u64) {
        if let Some(e) = Self::take(inner, id) {
            tracing::debug!(client = %e.ip, "closing a quiet connection to admit a new one");
            e.state.close();
        }
    }

    fn take(inner: &mut Inner, id: u64) -> Option<Entry> {
        let e = inner.conns.remove(&id)?;
        if let Some(n) = inner.per_client.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_client.remove(&e.ip);
            }
        }
        Some(e)
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        Self::take(&mut inner, id);
    }

    /// Tell every connection to close (shutdown's grace is over).
    pub fn close_all(&self) {
        for e in self.lock().conns.values() {
            e.state.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_sheds_the_quietest_idle_connection_then_refuses() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let table = ConnTable::new(limits);
        let a = table.admit(addr(1, 1)).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let b = table.admit(addr(2, 1)).unwrap();
        // Both idle: the older goes.
        let c = table.admit(addr(3, 1)).unwrap();
        assert_eq!(table.len(), 2);
        tokio::time::timeout(std::time::Duration::from_millis(1), a.state.closing())
            .await
            .expect("the oldest was told to close");
        drop(a);
        assert_eq!(table.len(), 2, "a shed connection leaves its place once");
        // Both busy: refused.
        b.state.request_started();
        c.state.request_started();
        assert_eq!(table.admit(addr(4, 1)).err(), Some(Refusal::Full));
        // One finishes: it can be shed again.
        c.state.response_finished();
        let _d = table.admit(addr(4, 1)).unwrap();
        assert_eq!(table.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_is_held_to_its_own_share() {
        let limits = Limits {
            max_connections_per_client: Some(1),
            ..Limits::default()
        };
        let table = ConnTable::new(limits);
        let a = table.admit(addr(1, 1)).unwrap();
        a.state.request_started();
        assert_eq!(table.admit(addr(1, 2)).err(), Some(Refusal::ClientFull));
        let _other = table.admit(addr(2, 1)).unwrap();
        a.state.response_finished();
        let _b = table.admit(addr(1, 3)).unwrap();
        assert_eq!(table.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_state() {
        let limits = Limits::default();
        let s = ConnState::new();
        let t0 = s.opened;
        assert_eq!(s.read_deadline(&limits), Some(t0 + limits.header_timeout));
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        s.on_read();
        s.request_started();
        assert_eq!(
            s.read_deadline(&limits),
            None,
            "in flight: the body's timer"
        );
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        s.response_finished();
        let idle = t0 + std::time::Duration::from_secs(5) + limits.idle_timeout;
        assert_eq!(s.read_deadline(&limits), Some(idle));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        s.on_read();
        let header = t0 + std::time::Duration::from_secs(6) + limits.header_timeout;
        assert_eq!(s.read_deadline(&limits), Some(header));
    }
}
