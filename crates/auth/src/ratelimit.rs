//! Failed logins per client address: after `max` failures within a window,
//! that address is refused (429, with the seconds to wait) until the window
//! that began with its first failure ends. Successful logins are never
//! limited by this, and do not reset it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many addresses are tracked before old windows are swept.
const SWEEP_AT: usize = 10_000;

pub struct FailureLimiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(wait)` when `addr` has failed too often lately.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let map = self.lock();
        match map.get(&addr) {
            Some((start, n)) if *n >= self.max && start.elapsed() < self.window => {
                Err(self.window.saturating_sub(start.elapsed()))
            }
            _ => Ok(()),
        }
    }

    /// Count one failure.
    pub fn fail(&self, addr: IpAddr) {
        let mut map = self.lock();
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, (start, _)| start.elapsed() < window);
        }
        let e = map.entry(addr).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= self.window {
            *e = (Instant::now(), 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_within_the_window() {
        let l = FailureLimiter::new(3, Duration::from_millis(300));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
            l.fail(a);
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait <= Duration::from_millis(300));
        assert!(l.check(b).is_ok());
        std::thread::sleep(Duration::from_millis(350));
        assert!(l.check(a).is_ok());
        l.fail(a);
        assert!(l.check(a).is_ok());
    }
}
