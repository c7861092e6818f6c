//! The per-key API rate limit: a token bucket per key, in process memory.
//!
//! The limit is `DESKHOOK_RATE_LIMIT` requests per minute (or the workspace's own), the burst
//! is 1.67 × that. Every `/v1` answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (Unix seconds when the bucket is full again); over the limit: 429 with
//! `Retry-After`. Buckets are per instance: N instances behind a balancer allow up to N × the
//! limit, which is stated in the README.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, HeaderValue};

use crate::{auth::Principal, config::RateLimit};

/// The limiter shared by every request of one instance.
#[derive(Debug)]
pub struct RateLimiter {
    default: RateLimit,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The outcome of one check, with what the headers should say.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Seconds until one token is available (for `Retry-After`).
    pub retry_after_seconds: u64,
    limit: Option<u32>,
    remaining: u32,
    reset_unix: u64,
}

impl Decision {
    /// Adds the `X-RateLimit-*` headers (none when the limit is off).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let Some(limit) = self.limit else { return };
        headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_unix));
    }
}

impl RateLimiter {
    /// A limiter with the instance-wide default.
    pub fn new(default: RateLimit) -> Self {
        Self {
            default,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The operator's limit (`DESKHOOK_RATE_LIMIT`), which no workspace may raise its own past.
    pub fn ceiling(&self) -> Option<u32> {
        match self.default {
            RateLimit::Off => None,
            RateLimit::PerMinute(per_minute) => Some(per_minute),
        }
    }

    /// Takes one token from the principal's bucket.
    pub fn check(&self, principal: &Principal) -> Decision {
        let per_minute = match (self.default, principal.workspace_rate_limit) {
            (RateLimit::Off, _) => {
                return Decision {
                    allowed: true,
                    retry_after_seconds: 0,
                    limit: None,
                    remaining: 0,
                    reset_unix: 0,
                };
            }
            // A workspace may only lower the operator's limit (review L9); rows set before
            // that rule are held to it here.
            (RateLimit::PerMinute(default), Some(own)) => own.min(default),
            (RateLimit::PerMinute(default), None) => default,
        };
        let capacity = (f64::from(per_minute) * 1.67).floor().max(1.0);
        let refill_per_second = f64::from(per_minute) / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter");
        let bucket = buckets.entry(principal.key_id).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * refill_per_second).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing_for_one = (1.0 - bucket.tokens).max(0.0);
        let until_full = (capacity - bucket.tokens) / refill_per_second;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Decision {
            allowed,
            retry_after_seconds: (missing_for_one / refill_per_second).ceil() as u64,
            limit: Some(per_minute),
            // The bucket holds a burst above the per-minute limit; the header never says more
            // than the limit, so `remaining ≤ limit` holds for clients.
            remaining: (bucket.tokens.floor() as u32).min(per_minute),
            reset_unix: unix_now + until_full.ceil() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(limit: Option<u32>) -> Principal {
        Principal {
            workspace_id: 1,
            key_id: 7,
            scopes: vec![crate::auth::Scope::Admin],
            user_id: None,
            workspace_rate_limit: limit,
        }
    }

    #[test]
    fn the_burst_is_one_and_two_thirds_the_limit_then_429() {
        let limiter = RateLimiter::new(RateLimit::PerMinute(60));
        let p = principal(None);
        let allowed = (0..200).filter(|_| limiter.check(&p).allowed).count();
        assert_eq!(allowed, 100, "burst of 1.67 × 60");
        let denied = limiter.check(&p);
        assert!(!denied.allowed);
        assert!(denied.retry_after_seconds >= 1);
    }

    #[test]
    fn remaining_never_exceeds_the_limit_during_the_burst() {
        let limiter = RateLimiter::new(RateLimit::PerMinute(60));
        let p = principal(None);
        for _ in 0..100 {
            let decision = limiter.check(&p);
            assert!(decision.allowed);
            assert!(
                decision.remaining <= decision.limit.expect("a limit"),
                "remaining {} over the limit {:?}",
                decision.remaining,
                decision.limit
            );
        }
    }

    #[test]
    fn a_workspace_limit_wins_and_off_means_off() {
        let limiter = RateLimiter::new(RateLimit::PerMinute(600));
        let p = principal(Some(6));
        let allowed = (0..50).filter(|_| limiter.check(&p).allowed).count();
        assert_eq!(allowed, 10);
        let off = RateLimiter::new(RateLimit::Off);
        assert!((0..5000).all(|_| off.check(&p).allowed));
    }
}
