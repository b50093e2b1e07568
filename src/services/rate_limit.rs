//! Per-user request limits: internal-credit calls by tier (BYOK calls are never limited: users pay their
//! provider directly), and the endpoints that cost the platform something per call (key checks, usage
//! reads). A token bucket per user refilled continuously; one limiter per thing limited.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::domain::tier::SubscriptionTier;
use crate::domain::user::UserId;
use crate::sync;

#[derive(Debug, Clone, Copy)]
pub struct TierLimits {
    pub free_per_minute: u32,
    pub premium_per_minute: u32,
}

impl TierLimits {
    pub fn per_minute(&self, tier: SubscriptionTier) -> u32 {
        match tier {
            SubscriptionTier::Free => self.free_per_minute,
            SubscriptionTier::Premium | SubscriptionTier::Lifetime => self.premium_per_minute,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    buckets: Cache<UserId, Arc<Mutex<Bucket>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        // Idle buckets are full again after a minute, so forgetting them then changes nothing.
        let buckets = Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(60)).build();
        RateLimiter { buckets }
    }
}

impl RateLimiter {
    /// Takes one request from the user's allowance of `per_minute`, or says how long until one is available.
    pub fn acquire(&self, user: UserId, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let bucket = self.buckets.get_with(user, || Arc::new(Mutex::new(Bucket { tokens: capacity, updated: now })));
        let mut bucket = sync::lock(&bucket);
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TierLimits = TierLimits { free_per_minute: 20, premium_per_minute: 120 };

    fn user() -> UserId {
        UserId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
    }

    fn tier(tier: SubscriptionTier) -> u32 {
        LIMITS.per_minute(tier)
    }

    #[test]
    fn free_users_get_twenty_a_minute_then_wait() {
        let limiter = RateLimiter::default();
        let (u, t0) = (user(), Instant::now());
        for i in 0..20 {
            assert!(limiter.acquire(u, tier(SubscriptionTier::Free), t0).is_ok(), "request {i}");
        }
        let wait = limiter.acquire(u, tier(SubscriptionTier::Free), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3), "one request every 3 s refills");
        assert!(limiter.acquire(u, tier(SubscriptionTier::Free), t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn premium_users_get_more_and_users_do_not_share_buckets() {
        let limiter = RateLimiter::default();
        let (a, b, t0) = (user(), user(), Instant::now());
        for _ in 0..120 {
            assert!(limiter.acquire(a, tier(SubscriptionTier::Premium), t0).is_ok());
        }
        assert!(limiter.acquire(a, tier(SubscriptionTier::Lifetime), t0).is_err());
        assert!(limiter.acquire(b, tier(SubscriptionTier::Free), t0).is_ok());
    }
}
