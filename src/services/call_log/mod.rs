//! Every user's recent gateway calls, failed ones included: what `GET /v1/calls` and the account page list.
//! One interface, [`CallHistory`], with a backend per `REDIS_URL` setting: [`embedded`] (a file of its own
//! beside the replica's store) and [`redis`] (one sorted set per user for every replica).
//!
//! Recording never makes a call wait: [`CallLog::record`] queues the entry and one task writes what is
//! queued in batches. This is a view for people, not accounting (the ledger and `api_key_usage` are): when
//! the queue is full or the backend cannot be written, entries are dropped, counted and logged, and the call
//! goes on. Each user keeps at most `CALLS_KEPT_PER_USER` entries, none older than `CALLS_RETENTION_DAYS`.

pub mod embedded;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use self::embedded::EmbeddedHistory;
use self::redis::RedisHistory;
use crate::domain::call::{CallEntry, CallRetention};
use crate::domain::error_code::{Code, Coded};
use crate::domain::user::UserId;
use crate::shared::redis::{Redis, RedisFailure};
use crate::store::{Store, StoreError};
use crate::sync;

/// Entries waiting for the writer; past this (the backend is far behind) new ones are dropped.
const QUEUE_CAPACITY: usize = 16_384;
/// The most entries one write takes. Each user's newest `CALLS_KEPT_PER_USER` of them are written (see
/// [`CallRetention::newest_per_user`]): one user calling 13,000 times a second wrote and trimmed a row per call
/// in batches of 512 (7% of the sidecar's CPU); in batches of this size most of a flood is never written.
const BATCH: usize = 4_096;
/// Entries come one per call: after the first, the writer sleeps this long before it takes the rest, so calls
/// cost a few wake-ups and writes a second, not one each (which cost about 13 µs p50 per call on two cores).
const LINGER: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum CallLogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisFailure),
}

impl Coded for CallLogError {
    fn code(&self) -> Code {
        Code::CallsUnavailable
    }
}

/// A page of a user's calls, newest first; `next` is the `after` of the next page when there may be one.
#[derive(Debug)]
pub struct CallPage {
    pub calls: Vec<CallEntry>,
    pub next: Option<Uuid>,
}

#[async_trait::async_trait]
pub trait CallHistory: Send + Sync {
    /// Keeps `calls`, then trims each of their users to what [`CallRetention`] allows.
    async fn keep(&self, calls: Vec<(UserId, CallEntry)>) -> Result<(), CallLogError>;

    /// Up to `limit` of `user`'s calls kept since `since`, newest first, older than `after` when given.
    async fn page(
        &self,
        user: UserId,
        after: Option<Uuid>,
        limit: usize,
        since: OffsetDateTime,
    ) -> Result<Vec<CallEntry>, CallLogError>;

    /// Forgets every user's calls from before `since` (users who made no call since keep theirs otherwise).
    async fn forget_before(&self, since: OffsetDateTime) -> Result<(), CallLogError>;
}

pub struct CallLog {
    queue: mpsc::Sender<(UserId, CallEntry)>,
    /// Taken by [`CallLog::start`].
    queued: std::sync::Mutex<Option<mpsc::Receiver<(UserId, CallEntry)>>>,
    history: Arc<dyn CallHistory>,
    retention: CallRetention,
}

impl CallLog {
    /// The backend `REDIS_URL` asks for.
    pub fn new(store: Arc<Store>, redis: Option<Arc<Redis>>, retention: CallRetention) -> Result<CallLog, StoreError> {
        let history: Arc<dyn CallHistory> = match redis {
            Some(redis) => Arc::new(RedisHistory::new(redis, retention)),
            None => Arc::new(EmbeddedHistory::open(&store.path().with_file_name("calls.db"), retention)?),
        };
        Ok(CallLog::with(history, retention))
    }

    pub fn with(history: Arc<dyn CallHistory>, retention: CallRetention) -> CallLog {
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        CallLog { queue, queued: std::sync::Mutex::new(Some(queued)), history, retention }
    }

    /// Queues `entry` for `user` and returns at once.
    pub fn record(&self, user: UserId, entry: CallEntry) {
        if self.queue.try_send((user, entry)).is_err() {
            crate::metrics::calls_dropped(1);
        }
    }

    /// Starts the writer (once) and the hourly sweep of entries past their age.
    pub fn start(self: &Arc<Self>) {
        let Some(queued) = sync::lock(&self.queued).take() else { return };
        tokio::spawn(write(Arc::clone(&self.history), self.retention, queued));
        let (history, retention) = (Arc::clone(&self.history), self.retention);
        tokio::spawn(async move {
            let mut hourly = tokio::time::interval(Duration::from_secs(3_600));
            loop {
                hourly.tick().await;
                if let Err(error) = history.forget_before(retention.since(OffsetDateTime::now_utc())).await {
                    tracing::warn!(%error, "cannot forget calls past their retention; trying again in an hour");
                }
            }
        });
    }

    /// A page of `user`'s calls, newest first.
    pub async fn page(&self, user: UserId, after: Option<Uuid>, limit: usize) -> Result<CallPage, CallLogError> {
        let since = self.retention.since(OffsetDateTime::now_utc());
        let mut calls = self.history.page(user, after, limit + 1, since).await?;
        let more = calls.len() > limit;
        calls.truncate(limit);
        let next = more.then(|| calls.last().map(|c| c.id)).flatten();
        Ok(CallPage { calls, next })
    }

    pub fn retention(&self) -> CallRetention {
        self.retention
    }
}

/// Takes the first entry, then (not listening, so no call wakes it) waits [`LINGER`] and takes whatever came
/// meanwhile (up to [`BATCH`]), and keeps what retention would not trim at once in one write, until the log is
/// gone.
async fn write(
    history: Arc<dyn CallHistory>,
    retention: CallRetention,
    mut queued: mpsc::Receiver<(UserId, CallEntry)>,
) {
    let mut batch = Vec::new();
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                match queued.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
        }
        retention.newest_per_user(&mut batch);
        let count = batch.len();
        if let Err(error) = history.keep(std::mem::take(&mut batch)).await {
            crate::metrics::calls_dropped(count as u64);
            tracing::warn!(%error, calls = count, "cannot keep recent calls; they are missing from /v1/calls");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::provider::Provider;
    use crate::store::tests::TempDir;

    const RETENTION: CallRetention = CallRetention { kept_per_user: 20, max_age: Duration::from_secs(86_400) };

    /// A log on `store`'s embedded history, not started.
    pub(crate) fn embedded(store: Arc<Store>) -> CallLog {
        CallLog::new(store, None, RETENTION).unwrap()
    }

    /// Polls (bounded) until `user` has `count` calls listed, then returns them.
    pub(crate) async fn listed(calls: &CallLog, user: UserId, count: usize) -> Vec<CallEntry> {
        for _ in 0..500 {
            let page = calls.page(user, None, 100).await.unwrap();
            if page.calls.len() >= count {
                return page.calls;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{count} calls were never listed");
    }

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e{n:02x}")).unwrap()
    }

    fn refused() -> CallEntry {
        CallEntry::uncharged(Provider::openai(), "gpt-4o-mini", None, 429, Code::RateLimited)
    }

    #[tokio::test]
    async fn recorded_calls_are_listed_in_pages_newest_first_and_each_user_sees_only_their_own() {
        let dir = TempDir::new();
        let calls = Arc::new(embedded(Arc::new(Store::open(&dir.store_path()).unwrap())));
        calls.start();
        let ids: Vec<Uuid> = (0..7)
            .map(|_| {
                let call = refused();
                let id = call.id;
                calls.record(user(1), call);
                id
            })
            .collect();
        calls.record(user(2), refused());
        listed(&calls, user(1), 7).await;

        let first = calls.page(user(1), None, 4).await.unwrap();
        let newest: Vec<Uuid> = ids.iter().rev().copied().collect();
        assert_eq!(first.calls.iter().map(|c| c.id).collect::<Vec<_>>(), newest[..4]);
        assert_eq!(first.next, Some(newest[3]), "the last of the page is where the next one starts");
        let second = calls.page(user(1), first.next, 4).await.unwrap();
        assert_eq!(second.calls.iter().map(|c| c.id).collect::<Vec<_>>(), newest[4..]);
        assert_eq!(second.next, None, "the last page says so");
        assert_eq!(calls.page(user(2), None, 100).await.unwrap().calls.len(), 1);
    }

    #[test]
    fn recording_never_waits_when_the_writer_is_far_behind() {
        let dir = TempDir::new();
        // Never started: nothing takes entries off the queue.
        let calls = embedded(Arc::new(Store::open(&dir.store_path()).unwrap()));
        for _ in 0..QUEUE_CAPACITY + 100 {
            calls.record(user(1), refused());
        }
        // Had a record waited for room, this test would never get here.
        assert_eq!(calls.queue.capacity(), 0, "the queue is full and the rest were dropped");
    }
}
