//! Claims in Redis (`SET NX PX`), one set for every replica. While Redis is unreachable, this replica's own.

use std::sync::Arc;
use std::time::Duration;

use super::Claims;
use super::memory::MemoryClaims;
use crate::shared::redis::{Redis, key};

pub struct RedisClaims {
    redis: Arc<Redis>,
    /// This replica's own claims: the first step of [`Claims::claim_here`], and the fallback.
    here: MemoryClaims,
}

impl RedisClaims {
    pub fn new(redis: Arc<Redis>) -> Self {
        RedisClaims { redis, here: MemoryClaims::new() }
    }

    /// `None` while Redis is unreachable.
    async fn claim_in_redis(&self, name: &str, ttl: Duration) -> Option<bool> {
        let key = key(&["claim", name]);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let claimed = self
            .redis
            .run(|mut c| async move {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        claimed.ok().map(|reply| reply.is_some())
    }
}

#[async_trait::async_trait]
impl Claims for RedisClaims {
    /// With Redis up only Redis counts, since a release on another replica must free the claim here too.
    async fn claim(&self, name: &str, ttl: Duration) -> bool {
        match self.claim_in_redis(name, ttl).await {
            Some(claimed) => claimed,
            None => self.here.claim(name, ttl).await,
        }
    }

    async fn claim_here(&self, name: &str, ttl: Duration) -> bool {
        self.here.claim(name, ttl).await
    }

    async fn claim_everywhere(&self, name: &str, ttl: Duration) -> bool {
        self.claim_in_redis(name, ttl).await.unwrap_or(true)
    }

    async fn release(&self, name: &str) {
        self.here.release(name).await;
        let key = key(&["claim", name]);
        let _ =
            self.redis.run(|mut c| async move { ::redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await }).await;
    }
}
