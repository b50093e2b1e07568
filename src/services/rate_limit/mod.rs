//! Per-user request limits: internal-credit calls by tier, calls with the user's own keys by tier (far higher:
//! users pay their provider, but the gateway is shared), and the endpoints that cost the platform something
//! per call (key checks, usage reads, job submits, sign-in attempts). One limiter per thing limited.
//!
//! One interface, [`RateLimit`], with a backend per `REDIS_URL` setting: [`memory`] (token buckets in this
//! process) and [`redis`] (GCRA in Redis, one allowance across replicas, this replica's buckets while Redis is
//! unreachable). Callers hold a [`RateLimiter`] and never know which.

pub mod memory;
pub mod redis;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use self::memory::MemoryRateLimit;
use self::redis::RedisRateLimit;
use crate::domain::user::UserId;
use crate::shared::redis::Redis;

/// One allowance per key, refilled continuously: `per_minute` at once, then one every `60 s / per_minute`.
#[async_trait::async_trait]
pub trait RateLimit<K>: Send + Sync {
    /// Takes one request from `key`'s allowance, or says how long until one is available.
    async fn acquire(&self, key: &K, per_minute: u32) -> Result<(), Duration>;
}

/// One allowance per `K`: a user by default, or e.g. a client address.
pub struct RateLimiter<K = UserId> {
    backend: Arc<dyn RateLimit<K>>,
}

impl<K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static> RateLimiter<K> {
    /// A limiter named `name` (in Redis keys and logs: `tier`, `key_checks`); with `redis`, one allowance per
    /// key across every replica.
    pub fn new(name: &'static str, redis: Option<Arc<Redis>>) -> Self {
        let backend: Arc<dyn RateLimit<K>> = match redis {
            Some(redis) => Arc::new(RedisRateLimit::new(name, redis)),
            None => Arc::new(MemoryRateLimit::new()),
        };
        RateLimiter { backend }
    }

    pub async fn acquire(&self, key: K, per_minute: u32) -> Result<(), Duration> {
        self.backend.acquire(&key, per_minute).await
    }
}
