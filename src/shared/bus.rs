//! Fans changes out to every replica: the replica that learns of a change (a flag webhook, a saved key)
//! applies it itself and publishes it; the others apply it when the message arrives. Pub/sub can drop
//! messages (a replica disconnected meanwhile), so every (re)subscription is also reported, and receivers
//! then reload everything they cache. Without Redis there is nobody to tell: publishing does nothing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::redis::{Redis, key};
use crate::domain::flags::PushedFlags;
use crate::domain::user::UserId;

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

const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Bus {
    redis: Option<Arc<Redis>>,
    /// Identifies this replica's messages, which it has applied already.
    origin: String,
    channel: String,
}

impl Bus {
    pub fn new(redis: Option<Arc<Redis>>) -> Bus {
        let channel = match &redis {
            Some(redis) => key(&["db", &redis.database().to_string(), "events"]),
            None => key(&["events"]),
        };
        Bus { redis, origin: uuid::Uuid::new_v4().simple().to_string(), channel }
    }

    /// Tells the other replicas (this one has applied the change itself).
    pub async fn publish(&self, event: Event) {
        let Some(redis) = &self.redis else { return };
        let message = match &event {
            Event::FlagsChanged => format!("{} flags", self.origin),
            Event::FlagsPushed(flags) => match serde_json::to_string(flags.as_ref()) {
                Ok(json) => format!("{} flagset {json}", self.origin),
                Err(_) => format!("{} flags", self.origin),
            },
            Event::CallerChanged(user) => format!("{} caller {user}", self.origin),
            Event::Resubscribed => return,
        };
        let channel = self.channel.clone();
        let published =
            redis
                .run(|mut c| async move {
                    ::redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(&mut c).await
                })
                .await;
        if let Err(error) = published {
            tracing::warn!(%error, ?event, "cannot tell the other replicas of a change; they see it by TTL");
        }
    }

    /// Delivers other replicas' events to `apply` for as long as the process runs, resubscribing after any
    /// loss of the connection. Nothing to do without Redis.
    pub async fn run(self: Arc<Self>, apply: impl Fn(Event) + Send + Sync + 'static) {
        let Some(redis) = self.redis.clone() else { return };
        let mut retry = RETRY_FIRST;
        loop {
            match redis.pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&self.channel).await {
                    Ok(()) => {
                        redis.mark_up();
                        retry = RETRY_FIRST;
                        apply(Event::Resubscribed);
                        let mut messages = pubsub.into_on_message();
                        while let Some(message) = messages.next().await {
                            let Ok(text) = message.get_payload::<String>() else { continue };
                            if let Some(event) = self.parse(&text) {
                                apply(event);
                            }
                        }
                        tracing::warn!("the Redis subscription ended; resubscribing");
                    }
                    Err(error) => redis.mark_down(&error.into()),
                },
                Err(error) => redis.mark_down(&error),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// Another replica's event; `None` for this replica's own and for anything unreadable.
    fn parse(&self, text: &str) -> Option<Event> {
        let mut words = text.splitn(3, ' ');
        if words.next()? == self.origin {
            return None;
        }
        match (words.next()?, words.next()) {
            ("flags", None) => Some(Event::FlagsChanged),
            ("flagset", Some(json)) => match serde_json::from_str::<PushedFlags>(json) {
                Ok(flags) if flags.is_plausible() => Some(Event::FlagsPushed(Arc::new(flags))),
                // Unreadable: a reload is always correct.
                _ => Some(Event::FlagsChanged),
            },
            ("caller", Some(user)) => UserId::parse(user).ok().map(Event::CallerChanged),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_other_replicas_events_and_skips_its_own() {
        let bus = Bus::new(None);
        let user = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";
        assert_eq!(bus.parse("other flags"), Some(Event::FlagsChanged));
        assert_eq!(
            bus.parse(&format!("other caller {user}")),
            Some(Event::CallerChanged(UserId::parse(user).unwrap()))
        );
        assert_eq!(bus.parse(&format!("{} flags", bus.origin)), None, "already applied");
        let pushed = PushedFlags {
            read_at: 1_700_000_000_123,
            rows: vec![crate::domain::flags::PushedRow {
                key: "byok_only_mode".into(),
                is_enabled: true,
                min_tier: None,
            }],
        };
        let json = serde_json::to_string(&pushed).unwrap();
        assert_eq!(bus.parse(&format!("other flagset {json}")), Some(Event::FlagsPushed(Arc::new(pushed))));
        assert_eq!(bus.parse("other flagset {not json"), Some(Event::FlagsChanged), "unreadable: reload");
        for junk in ["", "other", "other caller not-a-uuid", "other flags extra", "other unknown"] {
            assert_eq!(bus.parse(junk), None, "{junk:?}");
        }
    }
}
