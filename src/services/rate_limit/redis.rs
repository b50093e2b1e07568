//! GCRA in Redis, atomic and on Redis's clock: one allowance per key across every replica. While Redis is
//! unreachable, this replica's own buckets decide.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::RateLimit;
use super::memory::MemoryRateLimit;
use crate::shared::redis::{Redis, key};

/// KEYS: the key's allowance. ARGV: milliseconds per request, burst. Returns 0 when allowed, else the
/// milliseconds until a request is.
const GCRA: &str = include_str!("gcra.lua");

pub struct RedisRateLimit<K> {
    /// Names the limit in Redis keys (`tier`, `key_checks`, `usage_reads`).
    name: &'static str,
    redis: Arc<Redis>,
    gcra: Script,
    fallback: MemoryRateLimit<K>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> RedisRateLimit<K> {
    pub fn new(name: &'static str, redis: Arc<Redis>) -> Self {
        RedisRateLimit { name, redis, gcra: Script::new(GCRA), fallback: MemoryRateLimit::new() }
    }
}

#[async_trait::async_trait]
impl<K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static> RateLimit<K> for RedisRateLimit<K> {
    async fn acquire(&self, user: &K, per_minute: u32) -> Result<(), Duration> {
        let key = key(&["rate", self.name, &user.to_string()]);
        let per_minute = per_minute.max(1);
        let period = 60_000.0 / f64::from(per_minute);
        let wait = self
            .redis
            .run(
                |mut c| async move { self.gcra.key(key).arg(period).arg(per_minute).invoke_async::<u64>(&mut c).await },
            )
            .await;
        match wait {
            Ok(0) => Ok(()),
            Ok(wait) => Err(Duration::from_millis(wait)),
            Err(_) => self.fallback.acquire(user, per_minute).await,
        }
    }
}
