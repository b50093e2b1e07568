//! Token buckets in this process: the whole story for one replica, and the Redis backend's fallback.

use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use super::RateLimit;
use crate::sync;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct MemoryRateLimit<K> {
    buckets: Cache<K, Arc<Mutex<Bucket>>>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> MemoryRateLimit<K> {
    pub fn new() -> Self {
        // Idle buckets are full again after a minute, so forgetting them then changes nothing.
        MemoryRateLimit {
            buckets: Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(60)).build(),
        }
    }

    /// [`RateLimit::acquire`] at `now`.
    pub fn acquire_at(&self, key: &K, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let bucket =
            self.buckets.get_with_by_ref(key, || Arc::new(Mutex::new(Bucket { tokens: capacity, updated: now })));
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

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Default for MemoryRateLimit<K> {
    fn default() -> Self {
        MemoryRateLimit::new()
    }
}

#[async_trait::async_trait]
impl<K: Hash + Eq + Clone + Send + Sync + 'static> RateLimit<K> for MemoryRateLimit<K> {
    async fn acquire(&self, key: &K, per_minute: u32) -> Result<(), Duration> {
        self.acquire_at(key, per_minute, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TierLimits;
    use crate::domain::tier::SubscriptionTier;
    use crate::domain::user::UserId;

    const LIMITS: TierLimits = TierLimits {
        free_per_minute: 20,
        premium_per_minute: 120,
        own_keys_premium_per_minute: 600,
        own_keys_lifetime_per_minute: 600,
    };

    fn user() -> UserId {
        UserId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
    }

    fn tier(tier: SubscriptionTier) -> u32 {
        LIMITS.per_minute(tier)
    }

    #[test]
    fn free_users_get_twenty_a_minute_then_wait() {
        let limiter = MemoryRateLimit::new();
        let (u, t0) = (user(), Instant::now());
        for i in 0..20 {
            assert!(limiter.acquire_at(&u, tier(SubscriptionTier::Free), t0).is_ok(), "request {i}");
        }
        let wait = limiter.acquire_at(&u, tier(SubscriptionTier::Free), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3), "one request every 3 s refills");
        assert!(limiter.acquire_at(&u, tier(SubscriptionTier::Free), t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn premium_users_get_more_and_users_do_not_share_buckets() {
        let limiter = MemoryRateLimit::new();
        let (a, b, t0) = (user(), user(), Instant::now());
        for _ in 0..120 {
            assert!(limiter.acquire_at(&a, tier(SubscriptionTier::Premium), t0).is_ok());
        }
        assert!(limiter.acquire_at(&a, tier(SubscriptionTier::Lifetime), t0).is_err());
        assert!(limiter.acquire_at(&b, tier(SubscriptionTier::Free), t0).is_ok());
    }
}
