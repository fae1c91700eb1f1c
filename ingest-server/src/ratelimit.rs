//! Per-account token buckets for the order endpoint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `rate` tokens a second, at most `burst` saved up, per account.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter of `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `account`, or says how long until one is there.
    pub fn take(&self, account: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets
            .entry(account.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let l = RateLimiter::new(1_000.0, 3.0);
        for _ in 0..3 {
            l.take("a").unwrap();
        }
        let wait = l.take("a").unwrap_err();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        l.take("b").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        l.take("a").unwrap();
    }
}
