//! Requests per second per client address (`limits.max_requests_per_client`,
//! off by default): a token bucket per address, refilled continuously, with
//! a burst of one second's worth. A client over its rate is answered 429
//! TOOMANYREQUESTS with `Retry-After` before its request reaches a handler.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::time::Instant;

/// Addresses tracked before idle ones (full buckets) are swept.
const SWEEP_AT: usize = 10_000;

pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request from `ip`'s bucket; `Err(seconds)` to wait when empty.
    pub fn take(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            let full = self.per_second;
            let rate = self.per_second;
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < full
            });
        }
        let (tokens, at) = map.entry(ip).or_insert((self.per_second, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.per_second);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let r = RateLimiter::new(5);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..5 {
            r.take(a).unwrap();
        }
        assert_eq!(r.take(a), Err(1));
        r.take(b).expect("another client has its own bucket");
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        r.take(a).expect("refilled by one");
        assert!(r.take(a).is_err());
    }
}
