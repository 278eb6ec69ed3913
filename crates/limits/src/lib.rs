//! Abuse limits shared by the front doors (SCIM, the REST API, SFTP): a request-rate limit per
//! credential (token bucket) and a failed-authentication limit per client (failures in a
//! window, then refusals until the window passes). Each refusal says how long to wait, for a
//! `Retry-After` header in the protocol's own 429 answer.
//!
//! Keys are chosen by the caller (a directory id, an API key id, a client address, an SFTP
//! account). The maps are bounded ([`MAX_KEYS`]): stale entries are dropped first, then the
//! oldest, so a flood of new keys costs bounded memory.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Entries kept per limiter at most.
pub const MAX_KEYS: usize = 100_000;

/// How long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1 (the `Retry-After` value).
    pub fn secs(self) -> u64 {
        let d = self.0;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// A request rate: `per_second` on average, `burst` at once. `per_second = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key.
#[derive(Debug)]
pub struct RateLimiter {
    /// Behind a lock so the admin API can change it while the server runs.
    limit: RwLock<RateLimit>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit: RwLock::new(limit),
            buckets: Mutex::default(),
        }
    }

    pub fn limit(&self) -> RateLimit {
        *self.limit.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a new limit in force now (buckets keep their tokens, capped by the new burst).
    pub fn set_limit(&self, limit: RateLimit) {
        *self.limit.write().unwrap_or_else(|p| p.into_inner()) = limit;
    }

    /// Takes one request for `key`, or says how long until one is allowed.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let RateLimit { per_second, burst } = self.limit();
        if per_second <= 0.0 || !per_second.is_finite() {
            return Ok(());
        }
        let capacity = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_KEYS {
            // A full bucket is the same as no entry: drop those first.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
            evict_oldest(&mut buckets, |b| b.updated);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(RetryAfter(Duration::from_secs_f64(wait)))
        }
    }
}

/// At most `max_failures` failed authentications per key in `window_secs`; past that, every
/// attempt (even a right one) is refused until the window that holds them has passed.
/// `max_failures = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureLimit {
    pub max_failures: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
}

/// Failed authentications per key.
#[derive(Debug)]
pub struct FailureLimiter {
    /// Behind a lock so the admin API can change it while the server runs.
    limit: RwLock<FailureLimit>,
    failures: Mutex<HashMap<String, Failures>>,
}

impl FailureLimiter {
    pub fn new(limit: FailureLimit) -> Self {
        FailureLimiter {
            limit: RwLock::new(limit),
            failures: Mutex::default(),
        }
    }

    pub fn limit(&self) -> FailureLimit {
        *self.limit.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a new limit in force now (failures already counted stay counted).
    pub fn set_limit(&self, limit: FailureLimit) {
        *self.limit.write().unwrap_or_else(|p| p.into_inner()) = limit;
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limit().window_secs.max(1))
    }

    /// Whether `key` may try to authenticate now.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let max_failures = self.limit().max_failures;
        if max_failures == 0 {
            return Ok(());
        }
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(key) {
            Some(f) if f.count >= max_failures => {
                let ends = f.window_start + self.window();
                if ends > now {
                    Err(RetryAfter(ends - now))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication of `key`.
    pub fn failed(&self, key: &str) {
        self.failed_at(key, Instant::now())
    }

    fn failed_at(&self, key: &str, now: Instant) {
        if self.limit().max_failures == 0 {
            return;
        }
        let window = self.window();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.contains_key(key) && failures.len() >= MAX_KEYS {
            failures.retain(|_, f| now.duration_since(f.window_start) < window);
            evict_oldest(&mut failures, |f| f.window_start);
        }
        let f = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            window_start: now,
        });
        if now.duration_since(f.window_start) >= window {
            *f = Failures {
                count: 0,
                window_start: now,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// A successful authentication clears `key`'s failures.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

/// Drops the oldest tenth of a full map.
fn evict_oldest<V>(map: &mut HashMap<String, V>, age: impl Fn(&V) -> Instant) {
    if map.len() < MAX_KEYS {
        return;
    }
    let mut stamps: Vec<Instant> = map.values().map(&age).collect();
    let cut = stamps.len() / 10;
    let (_, nth, _) = stamps.select_nth_unstable(cut);
    let cutoff = *nth;
    map.retain(|_, v| age(v) > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let l = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 5,
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check_at("k", t0).is_ok());
        }
        let wait = l.check_at("k", t0).unwrap_err();
        assert_eq!(wait.secs(), 1);
        assert!(wait.0 <= Duration::from_millis(100));
        // Another key has its own bucket.
        assert!(l.check_at("other", t0).is_ok());
        // 100 ms later one more request is allowed, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.check_at("k", t1).is_ok());
        assert!(l.check_at("k", t1).is_err());
    }

    #[test]
    fn zero_rate_is_off() {
        let l = RateLimiter::new(RateLimit {
            per_second: 0.0,
            burst: 0,
        });
        let t0 = Instant::now();
        assert!((0..1000).all(|_| l.check_at("k", t0).is_ok()));
    }

    #[test]
    fn failures_lock_out_until_the_window_passes() {
        let l = FailureLimiter::new(FailureLimit {
            max_failures: 3,
            window_secs: 60,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("ip", t0).is_ok());
            l.failed_at("ip", t0);
        }
        let wait = l.check_at("ip", t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait.secs(), 59);
        assert!(l.check_at("other", t0).is_ok());
        assert!(l.check_at("ip", t0 + Duration::from_secs(60)).is_ok());
        // A success clears the count.
        l.failed_at("ip2", t0);
        l.failed_at("ip2", t0);
        l.succeeded("ip2");
        l.failed_at("ip2", t0);
        assert!(l.check_at("ip2", t0).is_ok());
    }

    #[test]
    fn maps_stay_bounded() {
        let l = FailureLimiter::new(FailureLimit {
            max_failures: 1,
            window_secs: 3600,
        });
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            l.failed_at(&i.to_string(), t0 + Duration::from_nanos(i as u64));
        }
        let n = l.failures.lock().unwrap().len();
        assert!(n <= MAX_KEYS, "{n}");
        // The newest stays locked out.
        assert!(l.check_at(&(MAX_KEYS + 9).to_string(), t0).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).secs(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).secs(), 3);
    }
}
