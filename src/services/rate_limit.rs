//! Per-user request limits: internal-credit calls by tier, calls with the user's own keys by tier (far higher:
//! users pay their provider, but the gateway is shared), and the endpoints that cost the platform something
//! per call (key checks, usage reads, job submits, sign-in attempts). A token bucket per user refilled
//! continuously; one limiter per thing limited.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use redis::Script;

use crate::domain::user::UserId;
use crate::shared::redis::{Redis, key};
use crate::sync;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// GCRA, atomic in Redis, on Redis's clock. KEYS: the user's key. ARGV: milliseconds per request, burst.
/// Returns 0 when allowed, else the milliseconds until a request is.
const GCRA: &str = include_str!("lua/gcra.lua");

/// One allowance per `K`: a user by default, or e.g. a client address.
pub struct RateLimiter<K = UserId> {
    /// Names the limit in Redis keys and logs (`tier`, `key_checks`, `usage_reads`).
    name: &'static str,
    /// This replica's buckets: the whole story without Redis, the fallback while Redis is down.
    buckets: Cache<K, Arc<Mutex<Bucket>>>,
    redis: Option<Arc<Redis>>,
    gcra: Script,
}

impl<K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static> RateLimiter<K> {
    /// A limiter of its own name; with `redis`, one allowance per key across every replica.
    pub fn new(name: &'static str, redis: Option<Arc<Redis>>) -> Self {
        // Idle buckets are full again after a minute, so forgetting them then changes nothing.
        let buckets = Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(60)).build();
        RateLimiter { name, buckets, redis, gcra: Script::new(GCRA) }
    }

    /// Takes one request from the key's allowance of `per_minute`, or says how long until one is available.
    pub async fn acquire(&self, user: K, per_minute: u32) -> Result<(), Duration> {
        if let Some(redis) = &self.redis {
            let key = key(&["rate", self.name, &user.to_string()]);
            let period = 60_000.0 / f64::from(per_minute.max(1));
            let wait = redis
                .run(|mut c| async move {
                    self.gcra.key(key).arg(period).arg(per_minute.max(1)).invoke_async::<u64>(&mut c).await
                })
                .await;
            if let Ok(wait) = wait {
                return if wait == 0 { Ok(()) } else { Err(Duration::from_millis(wait)) };
            }
        }
        self.acquire_local(user, per_minute, Instant::now())
    }

    fn acquire_local(&self, user: K, per_minute: u32, now: Instant) -> Result<(), Duration> {
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
    use crate::config::TierLimits;
    use crate::domain::tier::SubscriptionTier;

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
        let limiter = RateLimiter::<UserId>::new("tier", None);
        let (u, t0) = (user(), Instant::now());
        for i in 0..20 {
            assert!(limiter.acquire_local(u, tier(SubscriptionTier::Free), t0).is_ok(), "request {i}");
        }
        let wait = limiter.acquire_local(u, tier(SubscriptionTier::Free), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3), "one request every 3 s refills");
        assert!(limiter.acquire_local(u, tier(SubscriptionTier::Free), t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn premium_users_get_more_and_users_do_not_share_buckets() {
        let limiter = RateLimiter::<UserId>::new("tier", None);
        let (a, b, t0) = (user(), user(), Instant::now());
        for _ in 0..120 {
            assert!(limiter.acquire_local(a, tier(SubscriptionTier::Premium), t0).is_ok());
        }
        assert!(limiter.acquire_local(a, tier(SubscriptionTier::Lifetime), t0).is_err());
        assert!(limiter.acquire_local(b, tier(SubscriptionTier::Free), t0).is_ok());
    }
}
