//! Replicas in one process, on a broadcast channel: with one replica (the only way it is configured) there
//! is nobody to tell; tests put several on one channel.

use tokio::sync::broadcast;

use super::{Bus, Event};

/// Events a slow receiver may fall behind by before it is told to reload instead.
const BACKLOG: usize = 1_024;

pub struct MemoryBus {
    origin: uuid::Uuid,
    channel: broadcast::Sender<(uuid::Uuid, Event)>,
}

impl MemoryBus {
    pub fn new() -> Self {
        MemoryBus { origin: uuid::Uuid::new_v4(), channel: broadcast::channel(BACKLOG).0 }
    }

    /// Another replica on `other`'s channel.
    pub fn beside(other: &MemoryBus) -> Self {
        MemoryBus { origin: uuid::Uuid::new_v4(), channel: other.channel.clone() }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new()
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, event: Event) {
        // No receiver: no other replica to tell.
        let _ = self.channel.send((self.origin, event));
    }

    async fn run(&self, apply: Box<dyn Fn(Event) + Send + Sync>) {
        let mut events = self.channel.subscribe();
        loop {
            match events.recv().await {
                Ok((origin, event)) if origin != self.origin => apply(event),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => apply(Event::Resubscribed),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
