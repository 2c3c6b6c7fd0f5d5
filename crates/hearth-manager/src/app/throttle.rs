//! Slows down password guessing. After [`FREE_FAILURES`] failed logins for one username,
//! each further attempt is refused (429 with Retry-After) until a lock-out that doubles with
//! every failure, up to [`MAX_LOCKOUT`], has passed. A success clears the record.
//!
//! Kept in memory: a restart forgives, which is acceptable for a delay (not a ban). The map
//! is bounded so a flood of made-up usernames can't grow it without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FREE_FAILURES: u32 = 5;
pub const MAX_LOCKOUT: Duration = Duration::from_secs(300);
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

impl LoginThrottle {
    /// `Err(wait)` when this username must wait before trying again.
    pub fn check(&self, username: &str) -> Result<(), Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(username).and_then(|f| f.locked_until) {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, username: &str) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(username) {
            // Forget the stalest record to make room.
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let f = map.entry(username.to_string()).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count >= FREE_FAILURES {
            let exp = (f.count - FREE_FAILURES).min(16);
            let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCKOUT);
            f.locked_until = Some(now + lock);
        }
    }

    pub fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_free_failures_and_clears_on_success() {
        let t = LoginThrottle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("bob");
            assert!(t.check("bob").is_ok());
        }
        t.failed("bob");
        assert!(t.check("bob").is_err());
        assert!(t.check("alice").is_ok(), "other users are unaffected");
        t.succeeded("bob");
        assert!(t.check("bob").is_ok());
    }

    #[test]
    fn lockout_grows_and_is_capped() {
        let t = LoginThrottle::default();
        for _ in 0..FREE_FAILURES + 30 {
            t.failed("x");
        }
        let wait = t.check("x").unwrap_err();
        assert!(wait <= MAX_LOCKOUT && wait > Duration::from_secs(200));
    }
}
