//! Token buckets for invocation rate limits: one per function (its `rate_limit_per_s`) and
//! one per caller (the manager's `invoke_rate_limit_per_s`, per user or API key). A bucket
//! holds up to one second's worth of tokens and refills continuously; an empty one answers
//! how long until the next token, for `Retry-After`.
//!
//! In memory, per manager: with several managers each enforces its own share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_BUCKETS: usize = 10_000;

#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes a token from `key`'s bucket (`per_s` tokens a second; 0 means no limit).
    pub fn take(&self, key: &str, per_s: u32) -> Result<(), Duration> {
        if per_s == 0 {
            return Ok(());
        }
        let rate = f64::from(per_s);
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            // Full buckets hold no information: forget them first.
            map.retain(|_, b| b.tokens + b.at.elapsed().as_secs_f64() * rate < rate);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_refills() {
        let r = RateLimits::default();
        for _ in 0..5 {
            assert!(r.take("f", 5).is_ok());
        }
        let wait = r.take("f", 5).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(r.take("other", 5).is_ok(), "buckets are per key");
        assert!(r.take("f", 0).is_ok(), "0 means no limit");
        std::thread::sleep(Duration::from_millis(250));
        assert!(r.take("f", 5).is_ok(), "refilled");
    }
}
