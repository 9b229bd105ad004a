//! What one client may hold of the server, and for how long: the timeouts
//! and connection limits of `[limits]` in berth's configuration, and the
//! file-descriptor budget they are derived from.
//!
//! The defaults are chosen for a registry on a cluster network: kubelets
//! and containerd keep connections open between pulls (so an idle
//! keep-alive connection may stay a minute), while a client that sends half
//! a request, stops reading a download or stops sending an upload is cut
//! off well before it can pile up with hundreds like it.

use std::time::Duration;

/// File descriptors kept back from client connections: blob files, upload
/// files, upstream connections, the admin socket, logs.
const FD_RESERVE_MIN: u64 = 128;

/// What one connection's own state costs, charged to the memory budget
/// while it is open: measured on a release build with 1,000 downloads that
/// read nothing (about 24-31 KiB each besides their buffers, which the
/// budget counts apart), rounded up.
pub const DEFAULT_CONNECTION_MEMORY: usize = 32 * 1024;

/// Connections berth accepts by default, whatever the fd limit allows.
const DEFAULT_MAX_CONNECTIONS: u64 = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a connection's first byte of a request (or its opening, when it
    /// sends nothing) to the end of that request's headers.
    pub header_timeout: Duration,
    /// An idle keep-alive connection (every response sent, nothing new
    /// received) is closed after this.
    pub idle_timeout: Duration,
    /// A response the client reads nothing of for this long ends the
    /// connection (its memory and file are released).
    pub send_timeout: Duration,
    /// A request body that delivers nothing for this long ends the request:
    /// an upload keeps every byte that arrived before.
    pub body_timeout: Duration,
    /// After SIGTERM, requests in flight may finish for this long.
    pub shutdown_grace: Duration,
    /// Client connections held at once; at the limit, the connection idle
    /// longest is closed to admit a new one, and without any idle one the
    /// newcomer is answered 503.
    pub max_connections: usize,
    /// Connections one client address may hold (`None`: no own limit).
    pub max_connections_per_client: Option<usize>,
    /// Requests per second one client address may make (`None`: no limit).
    pub max_requests_per_client: Option<u32>,
    /// Bytes of the memory budget each open connection holds (see
    /// [`DEFAULT_CONNECTION_MEMORY`]); when the budget has no room for a
    /// newcomer, the connection idle longest is closed, or else it is
    /// answered 503.
    pub connection_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_connections_per_client: None,
            max_requests_per_client: None,
            connection_memory: DEFAULT_CONNECTION_MEMORY,
        }
    }
}

/// Raise the soft limit on open files to the hard limit (systemd and
/// shells start services at 1024 while allowing far more) and return the
/// limit now in force, with a warning to log if it could not be raised.
pub fn raise_fd_limit() -> (u64, Option<String>) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let soft = l.current.unwrap_or(u64::MAX);
    if l.current.is_some() && l.current != l.maximum {
        l.current = l.maximum;
        return match setrlimit(Resource::Nofile, l) {
            Ok(()) => (l.maximum.unwrap_or(u64::MAX), None),
            Err(e) => (
                soft,
                Some(format!(
                    "could not raise the open-file limit above {soft}: {e}"
                )),
            ),
        };
    }
    (soft, None)
}

/// The connections `fd_limit` leaves room for once the reserve is kept:
/// an eighth of the limit, and at least [`FD_RESERVE_MIN`].
pub fn connections_for(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 8).max(FD_RESERVE_MIN);
    fd_limit
        .saturating_sub(reserve)
        .clamp(16, DEFAULT_MAX_CONNECTIONS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_reserve_grows_with_the_limit() {
        assert_eq!(connections_for(1024), 896);
        assert_eq!(connections_for(256), 128);
        assert_eq!(connections_for(64), 16);
        assert_eq!(connections_for(1 << 20), DEFAULT_MAX_CONNECTIONS as usize);
    }
}
