//! The bus over Redis pub/sub. Pub/sub can drop messages (a replica disconnected meanwhile), so every
//! (re)subscription is also reported, and receivers then reload everything they cache.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Bus, Event};
use crate::domain::flags::PushedFlags;
use crate::domain::user::UserId;
use crate::shared::redis::{Redis, key};

const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct RedisBus {
    redis: Arc<Redis>,
    /// Identifies this replica's messages, which it has applied already.
    origin: String,
    channel: String,
}

impl RedisBus {
    pub fn new(redis: Arc<Redis>) -> RedisBus {
        let channel = key(&["db", &redis.database().to_string(), "events"]);
        RedisBus { redis, origin: uuid::Uuid::new_v4().simple().to_string(), channel }
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

#[async_trait::async_trait]
impl Bus for RedisBus {
    async fn publish(&self, event: Event) {
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
            self.redis
                .run(|mut c| async move {
                    ::redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(&mut c).await
                })
                .await;
        if let Err(error) = published {
            tracing::warn!(%error, ?event, "cannot tell the other replicas of a change; they see it by TTL");
        }
    }

    /// Resubscribes after any loss of the connection.
    async fn run(&self, apply: Box<dyn Fn(Event) + Send + Sync>) {
        let redis = &self.redis;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_other_replicas_events_and_skips_its_own() {
        let bus = RedisBus::new(Arc::new(Redis::new(&"redis://127.0.0.1:9/0".into()).unwrap()));
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
