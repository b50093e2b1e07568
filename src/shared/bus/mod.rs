//! Fans changes out to every replica: the replica that learns of a change (a flag webhook, a saved key)
//! applies it itself and publishes it; the others apply it when the message arrives. One interface, [`Bus`],
//! with a backend per `REDIS_URL` setting: [`memory`] (replicas in this process: with one, nobody to tell) and
//! [`redis`] (pub/sub).

pub mod memory;
pub mod redis;

use std::sync::Arc;

use self::memory::MemoryBus;
use self::redis::RedisBus;
use crate::domain::flags::PushedFlags;
use crate::domain::user::UserId;
use crate::shared::redis::Redis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The feature flags changed: load them again.
    FlagsChanged,
    /// The feature flags changed to these (as the Directus hook read them): apply them, no reload needed.
    FlagsPushed(Arc<PushedFlags>),
    /// A user's keys changed: forget their cached profile.
    CallerChanged(UserId),
    /// The subscription was (re)established: messages may have been missed, reload what is cached.
    Resubscribed,
}

#[async_trait::async_trait]
pub trait Bus: Send + Sync {
    /// Tells the other replicas (this one has applied the change itself).
    async fn publish(&self, event: Event);

    /// Delivers other replicas' events (never this one's own) to `apply` for as long as the process runs.
    async fn run(&self, apply: Box<dyn Fn(Event) + Send + Sync>);
}

/// The backend `REDIS_URL` asks for.
pub fn bus(redis: Option<Arc<Redis>>) -> Arc<dyn Bus> {
    match redis {
        Some(redis) => Arc::new(RedisBus::new(redis)),
        None => Arc::new(MemoryBus::new()),
    }
}
