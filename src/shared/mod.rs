//! State that several replicas must share, with two backends chosen by configuration, in the manner of a
//! cache with `memory` and `redis` implementations: without `REDIS_URL` everything stays in this process (no
//! new moving part for one replica); with it, Redis carries what replicas must agree on. Callers never know
//! which, and when Redis is unreachable they carry on with this replica's own state (see [`redis`]).
//!
//! Here: one-time claims (webhook ids, notification incidents) and the event bus that fans flag and caller
//! changes out to every replica ([`bus`]). Rate limits and credit reservations keep their own two backends
//! beside their logic ([`crate::services::rate_limit`], [`crate::services::reservations`]).

pub mod bus;
pub mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use self::redis::{Redis, key};

/// Local claims expire after their own time to live.
struct ClaimExpiry;

impl Expiry<String, Duration> for ClaimExpiry {
    fn expire_after_create(&self, _: &String, ttl: &Duration, _: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

pub struct Shared {
    redis: Option<Arc<Redis>>,
    claims: Cache<String, Duration>,
}

impl Shared {
    pub fn new(redis: Option<Arc<Redis>>) -> Shared {
        Shared { redis, claims: Cache::builder().max_capacity(100_000).expire_after(ClaimExpiry).build() }
    }

    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref()
    }

    /// Claims `name` for `ttl` unless it is claimed already (by any replica): true for the one caller that
    /// gets it. With Redis up only Redis counts, since a release on another replica must free the claim here
    /// too; while Redis is down, claims are this replica's own.
    pub async fn claim(&self, name: &str, ttl: Duration) -> bool {
        match self.claim_in_redis(name, ttl).await {
            Some(claimed) => claimed,
            None => self.claim_here(name, ttl).await,
        }
    }

    /// For a claim that is never released elsewhere (a webhook id) and a caller that acts between two steps:
    /// first this replica's own claim, so a repeat here is refused at once, without a round trip to Redis...
    pub async fn claim_here(&self, name: &str, ttl: Duration) -> bool {
        self.claims.entry(name.to_owned()).or_insert(ttl).await.is_fresh()
    }

    /// ...then the claim across replicas: true without Redis, and while Redis is unreachable.
    pub async fn claim_everywhere(&self, name: &str, ttl: Duration) -> bool {
        self.claim_in_redis(name, ttl).await.unwrap_or(true)
    }

    /// `None` without Redis or while it is unreachable.
    async fn claim_in_redis(&self, name: &str, ttl: Duration) -> Option<bool> {
        let redis = self.redis.as_ref()?;
        let key = key(&["claim", name]);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let claimed = redis
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

    /// Gives a claim up, so the next claimer gets it (a failed notification, a changed key).
    pub async fn release(&self, name: &str) {
        self.claims.invalidate(name).await;
        if let Some(redis) = &self.redis {
            let key = key(&["claim", name]);
            let _ =
                redis.run(|mut c| async move { ::redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await }).await;
        }
    }

    /// `Some(healthy)` when Redis is configured.
    pub fn redis_health(&self) -> Option<bool> {
        self.redis.as_ref().map(|redis| redis.is_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_claim_is_granted_once_until_it_expires_or_is_released() {
        let shared = Shared::new(None);
        assert!(shared.claim("webhook:msg_1", Duration::from_secs(60)).await);
        assert!(!shared.claim("webhook:msg_1", Duration::from_secs(60)).await);
        assert!(shared.claim("webhook:msg_2", Duration::from_secs(60)).await, "claims are per name");
        shared.release("webhook:msg_1").await;
        assert!(shared.claim("webhook:msg_1", Duration::from_secs(60)).await);
        assert!(shared.claim("short", Duration::from_millis(50)).await);
        tokio::time::sleep(Duration::from_millis(120)).await;
        shared.claims.run_pending_tasks().await;
        assert!(shared.claim("short", Duration::from_millis(50)).await, "expired");
    }

    #[tokio::test]
    async fn without_redis_a_claim_here_is_the_whole_claim() {
        let shared = Shared::new(None);
        assert!(shared.claim_here("webhook:msg_1", Duration::from_secs(60)).await);
        assert!(shared.claim_everywhere("webhook:msg_1", Duration::from_secs(60)).await, "nobody else to ask");
        assert!(!shared.claim_here("webhook:msg_1", Duration::from_secs(60)).await);
        assert!(!shared.claim("webhook:msg_1", Duration::from_secs(60)).await, "one set of claims");
    }
}
