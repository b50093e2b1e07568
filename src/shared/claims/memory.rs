//! Claims in this process: the whole story for one replica, and the Redis backend's own half.

use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::Claims;

/// Claims expire after their own time to live.
struct ClaimExpiry;

impl Expiry<String, Duration> for ClaimExpiry {
    fn expire_after_create(&self, _: &String, ttl: &Duration, _: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

pub struct MemoryClaims {
    claims: Cache<String, Duration>,
}

impl MemoryClaims {
    pub fn new() -> Self {
        MemoryClaims { claims: Cache::builder().max_capacity(100_000).expire_after(ClaimExpiry).build() }
    }
}

impl Default for MemoryClaims {
    fn default() -> Self {
        MemoryClaims::new()
    }
}

#[async_trait::async_trait]
impl Claims for MemoryClaims {
    async fn claim(&self, name: &str, ttl: Duration) -> bool {
        self.claims.entry(name.to_owned()).or_insert(ttl).await.is_fresh()
    }

    async fn claim_here(&self, name: &str, ttl: Duration) -> bool {
        self.claim(name, ttl).await
    }

    async fn claim_everywhere(&self, _: &str, _: Duration) -> bool {
        true
    }

    async fn release(&self, name: &str) {
        self.claims.invalidate(name).await;
    }
}
