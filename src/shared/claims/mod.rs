//! One-time claims: a webhook id applied, a key incident notified. One interface, [`Claims`], with a backend
//! per `REDIS_URL` setting: [`memory`] (this replica's own) and [`redis`] (one set for every replica, this
//! replica's own while Redis is unreachable).

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use self::memory::MemoryClaims;
use self::redis::RedisClaims;
use super::redis::Redis;

#[async_trait::async_trait]
pub trait Claims: Send + Sync {
    /// Claims `name` for `ttl` unless it is claimed already: true for the one caller that gets it.
    async fn claim(&self, name: &str, ttl: Duration) -> bool;

    /// For a claim that is never released elsewhere (a webhook id) and a caller that acts between two steps:
    /// first this replica's own claim, so a repeat here is refused at once...
    async fn claim_here(&self, name: &str, ttl: Duration) -> bool;

    /// ...then the claim across replicas: true where there is nobody else to ask.
    async fn claim_everywhere(&self, name: &str, ttl: Duration) -> bool;

    /// Gives a claim up, so the next claimer gets it (a failed notification, a changed key).
    async fn release(&self, name: &str);
}

/// The backend `REDIS_URL` asks for.
pub fn claims(redis: Option<Arc<Redis>>) -> Arc<dyn Claims> {
    match redis {
        Some(redis) => Arc::new(RedisClaims::new(redis)),
        None => Arc::new(MemoryClaims::new()),
    }
}
