//! The connection to Redis when `REDIS_URL` is set: one multiplexed, self-reconnecting connection for commands
//! and scripts, a bound on every command, and the health every caller reports into. A command that fails or
//! times out marks Redis down (logged once, with what is weaker meanwhile); the next success marks it up.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{Client, RedisResult};
use secrecy::{ExposeSecret, SecretString};

use crate::{metrics, sync};

/// No request waits longer than this on Redis; past it, the local fallback answers.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// While Redis is down, one command this often finds out whether it is back; the others go straight to the
/// local fallback instead of each waiting up to the command timeout.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Every key of byok-bridge starts with this, so it can share a Redis with Directus.
pub const KEY_PREFIX: &str = "byok-bridge:";

#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {} ms", COMMAND_TIMEOUT.as_millis())]
    Timeout,
    #[error("Redis is down; not asked until the next probe")]
    Down,
}

pub struct Redis {
    client: Client,
    commands: ConnectionManager,
    up: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    /// While down: when the next command may try Redis.
    next_probe: Mutex<Option<Instant>>,
}

impl Redis {
    /// Prepares the connection without waiting for it: the sidecar starts (on local state) when Redis is down.
    pub fn new(url: &SecretString) -> Result<Redis, RedisFailure> {
        let client = Client::open(url.expose_secret())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Redis {
            client,
            commands,
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            next_probe: Mutex::new(None),
        })
    }

    /// Runs one command (or script) with the shared connection, bounded, recording Redis's health.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() && !self.may_probe(Instant::now()) {
            return Err(RedisFailure::Down);
        }
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, command(self.commands.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RedisFailure::Redis(error)),
            Err(_) => Err(RedisFailure::Timeout),
        };
        match &result {
            Ok(_) => self.mark_up(),
            Err(error) => self.mark_down(error),
        }
        result
    }

    /// One command per [`PROBE_INTERVAL`] may try Redis while it is down.
    fn may_probe(&self, now: Instant) -> bool {
        let mut next = sync::lock(&self.next_probe);
        if next.is_some_and(|at| now < at) {
            return false;
        }
        *next = Some(now + PROBE_INTERVAL);
        true
    }

    /// The database number of `REDIS_URL`: keys live in it, but pub/sub channels are shared by all databases,
    /// so channel names carry it (deployments on one Redis, apart by database, must not hear each other).
    pub fn database(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }

    /// A dedicated connection for subscribing (pub/sub needs its own).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisFailure> {
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        Ok(pubsub)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long Redis has been unreachable, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        sync::lock(&self.down_since).map(|since| since.elapsed())
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            sync::lock(&self.down_since).take();
            metrics::redis_up(true);
            tracing::info!("Redis answers again: rate limits, credit holds and deduplication are shared again");
        }
    }

    pub fn mark_down(&self, error: &RedisFailure) {
        if self.up.swap(false, Ordering::Relaxed) {
            sync::lock(&self.down_since).get_or_insert_with(Instant::now);
            metrics::redis_up(false);
            tracing::warn!(%error,
                "Redis unreachable: serving on this replica's own state meanwhile. Weaker until it returns: rate \
                 limits count per replica, credit holds and costs are seen by this replica only, a webhook or a \
                 key incident may be handled once per replica, and flag changes reach other replicas only by TTL");
        }
    }
}

/// Redis keys of byok-bridge: the shared prefix, then `parts` joined by `:`.
pub fn key(parts: &[&str]) -> String {
    format!("{KEY_PREFIX}{}", parts.join(":"))
}
