//! One replica (no `REDIS_URL`): jobs live in the store's `jobs` table, beside the usage outbox, and the
//! due ones in an in-memory `Schedule` rebuilt from the table at startup. Writes are group-committed
//! ([`BatchWriter`]): a job is on disk before `POST /v1/jobs` answers, and a result before its callback goes.
//!
//! "Running" is not written: a job a worker holds is still `queued` on disk (its status is shown as
//! `running` from memory), so a process that dies mid-call leaves nothing to clean up; the next start finds
//! the job queued and runs it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use secrecy::SecretString;
use tokio::sync::Notify;
use uuid::Uuid;

use super::schedule::{Next, Schedule};
use super::{
    CallbackGate, Claimed, DueCallback, Inserted, JobQueue, JobsConfig, JobsError, Page, UserCaps, armed, decode,
    encode,
};
use crate::accounting::Outbox;
use crate::accounting::outbox::insert_within;
use crate::clock::Clock;
use crate::domain::credit_book::UnixMillis;
use crate::domain::jobs::{JobRecord, JobStatus};
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::store::{BatchWriter, Store, StoreError};
use crate::sync;

/// With nothing due, a worker looks again after this long anyway (a safety net; new work wakes it).
const IDLE_LOOK: UnixMillis = 60_000;

/// What one user keeps in the queue: jobs waiting, and bytes of requests of every job kept.
#[derive(Debug, Default, Clone, Copy)]
struct Kept {
    waiting: u64,
    bytes: u64,
}

type KeptByUser = Arc<Mutex<HashMap<UserId, Kept>>>;

pub struct EmbeddedJobs {
    store: Arc<Store>,
    /// Counted in memory (this process is the queue's only writer), changed only by the writer thread, in the
    /// transaction that changes the jobs, so concurrent submits cannot pass a cap together. (Should a commit
    /// fail, the counts are rebuilt from the table at the next start.)
    kept: KeptByUser,
    writer: BatchWriter,
    /// Where a succeeded call's usage record goes, in the transaction that records the job's result.
    outbox: Arc<Outbox>,
    /// Read connections, reused (WAL: reads never wait for the writer).
    readers: Arc<Mutex<Vec<Connection>>>,
    schedule: Mutex<Schedule>,
    /// Callbacks due, per user like jobs (at most the per-user number sent at once), and the host of each.
    callbacks: Mutex<Schedule>,
    callback_hosts: Mutex<HashMap<Uuid, String>>,
    work: Notify,
    callback_work: Notify,
    clock: Clock,
}

impl EmbeddedJobs {
    /// Opens the queue on `store` (whose usage outbox is `outbox`), scheduling what was queued when the last
    /// process stopped.
    pub fn open(
        store: Arc<Store>,
        outbox: Arc<Outbox>,
        config: &JobsConfig,
        clock: Clock,
    ) -> Result<EmbeddedJobs, StoreError> {
        let reader = store.connect()?;
        let mut schedule = Schedule::new(config.per_user_cap);
        let mut callbacks = Schedule::new(config.callbacks_per_user);
        let mut callback_hosts = HashMap::new();
        {
            let mut queued = reader
                .prepare("SELECT id, user_id, due FROM jobs WHERE status = 'queued'")
                .map_err(|e| store.error(e))?;
            let rows = queued
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?)))
                .map_err(|e| store.error(e))?;
            for row in rows {
                let (id, user, due): (String, String, Option<i64>) = row.map_err(|e| store.error(e))?;
                if let (Ok(id), Ok(user)) = (Uuid::parse_str(&id), UserId::parse(&user)) {
                    schedule.push(user, id, due.unwrap_or(0));
                }
            }
            let mut pending = reader
                .prepare("SELECT record, callback_due FROM jobs WHERE callback_due IS NOT NULL")
                .map_err(|e| store.error(e))?;
            let rows =
                pending.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?))).map_err(|e| store.error(e))?;
            for row in rows {
                let (json, due): (String, i64) = row.map_err(|e| store.error(e))?;
                if let Ok(record) = decode(&json) {
                    callbacks.push(record.user, record.id, due);
                    callback_hosts.insert(record.id, record.callback.map(|c| c.host()).unwrap_or_default());
                }
            }
        }
        let mut kept = HashMap::new();
        {
            let mut per_user = reader
                .prepare(
                    "SELECT user_id, sum(status IN ('queued', 'paused')), sum(length(request)) FROM jobs \
                     GROUP BY user_id",
                )
                .map_err(|e| store.error(e))?;
            let rows = per_user
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))
                .map_err(|e| store.error(e))?;
            for row in rows {
                let (user, waiting, bytes) = row.map_err(|e| store.error(e))?;
                if let Ok(user) = UserId::parse(&user) {
                    kept.insert(user, Kept { waiting: waiting.max(0) as u64, bytes: bytes.max(0) as u64 });
                }
            }
        }
        if schedule.queued_len() > 0 || callbacks.queued_len() > 0 {
            tracing::info!(
                queued = schedule.queued_len(),
                callbacks = callbacks.queued_len(),
                "jobs waiting from before"
            );
        }
        Ok(EmbeddedJobs {
            writer: BatchWriter::start(Arc::clone(&store), "jobs-writer")?,
            outbox,
            store,
            kept: Arc::new(Mutex::new(kept)),
            readers: Arc::new(Mutex::new(vec![reader])),
            schedule: Mutex::new(schedule),
            callbacks: Mutex::new(callbacks),
            callback_hosts: Mutex::new(callback_hosts),
            work: Notify::new(),
            callback_work: Notify::new(),
            clock,
        })
    }

    /// Writes `record` as its next revision, if the stored job is still in `expected` at the revision `record`
    /// was read at; `usage` goes into the outbox in the same transaction, whether or not the job is written.
    async fn write(
        &self,
        record: &JobRecord,
        expected: JobStatus,
        usage: Option<UsageRecord>,
    ) -> Result<bool, JobsError> {
        let revision = i64::try_from(record.revision).unwrap_or(i64::MAX);
        let next = JobRecord { revision: record.revision + 1, ..record.clone() };
        let json = encode(&next)?;
        // What a running job is on disk.
        let expected = if expected == JobStatus::Running { JobStatus::Queued } else { expected };
        let (id, user, status, finished_at, due) =
            (record.id.to_string(), record.user, record.status, record.finished_at, record.next_attempt_at);
        let callback_due = record.callback_due();
        let kept = Arc::clone(&self.kept);
        let (changed, inserted) = self
            .writer
            .write(move |t| {
                let inserted = match &usage {
                    Some(usage) => insert_within(t, std::slice::from_ref(usage))?,
                    None => 0,
                };
                let changed = t
                    .prepare_cached(
                        "UPDATE jobs SET status = ?1, record = ?2, finished_at = ?3, due = ?4, callback_due = ?5, \
                         revision = revision + 1 WHERE id = ?6 AND status = ?7 AND revision = ?8",
                    )?
                    .execute(params![
                        status.as_str(),
                        json,
                        finished_at,
                        due,
                        callback_due,
                        id,
                        expected.as_str(),
                        revision
                    ])?;
                if changed == 1 && expected.is_waiting() != status.is_waiting() {
                    let mut kept = sync::lock(&kept);
                    let entry = kept.entry(user).or_default();
                    entry.waiting =
                        if status.is_waiting() { entry.waiting + 1 } else { entry.waiting.saturating_sub(1) };
                }
                Ok((changed, inserted))
            })
            .await?;
        if inserted > 0 {
            self.outbox.inserted(inserted);
        }
        let written = changed == 1;
        if written && let Some(due) = callback_due {
            let host = record.callback.as_ref().map(|c| c.host()).unwrap_or_default();
            sync::lock(&self.callback_hosts).insert(record.id, host);
            sync::lock(&self.callbacks).push(record.user, record.id, due);
            self.callback_work.notify_one();
        }
        Ok(written)
    }

    async fn load(&self, id: Uuid) -> Result<Option<(JobRecord, Bytes)>, JobsError> {
        let row: Option<(String, Vec<u8>)> = self
            .read(move |c| {
                c.query_row("SELECT record, request FROM jobs WHERE id = ?1", [id.to_string()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
            })
            .await?;
        row.map(|(json, request)| Ok((decode(&json)?, Bytes::from(request)))).transpose()
    }

    /// A job a worker holds shows as running.
    fn overlay(&self, record: JobRecord) -> JobRecord {
        if record.status == JobStatus::Queued && sync::lock(&self.schedule).is_running(record.id) {
            JobRecord { status: JobStatus::Running, ..record }
        } else {
            record
        }
    }

    /// Runs a read on the reader connection, off the async threads.
    async fn read<R, F>(&self, read: F) -> Result<R, JobsError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (readers, store) = (Arc::clone(&self.readers), Arc::clone(&self.store));
        tokio::task::spawn_blocking(move || {
            let connection = sync::lock(&readers).pop().map_or_else(|| store.connect(), Ok)?;
            let result = read(&connection).map_err(|e| store.error(e));
            sync::lock(&readers).push(connection);
            Ok(result?)
        })
        .await
        .map_err(|e| JobsError::Internal(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl JobQueue for EmbeddedJobs {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    /// Stores a new job unless the user's `caps` are reached, or finds the job their idempotency key made.
    async fn insert(
        &self,
        record: JobRecord,
        request: Bytes,
        secret: Option<String>,
        caps: UserCaps,
    ) -> Result<Inserted, JobsError> {
        let json = encode(&record)?;
        let (id, user, key, due) = (record.id, record.user, record.idempotency_key.clone(), record.next_attempt_at);
        let kept = Arc::clone(&self.kept);
        let found = self
            .writer
            .write(move |t| {
                if key.is_some() {
                    let existing = t
                        .query_row(
                            "SELECT record, callback_secret FROM jobs \
                             WHERE user_id = ?1 AND idempotency_key = ?2",
                            params![user.to_string(), key],
                            |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?)),
                        )
                        .optional()?;
                    if let Some(existing) = existing {
                        return Ok(Ok(Some(existing)));
                    }
                }
                let adding = request.len() as u64;
                let mut kept = sync::lock(&kept);
                let now = kept.get(&user).copied().unwrap_or_default();
                if let Err(cap) = caps.admit(now.waiting, now.bytes, adding) {
                    return Ok(Err(cap));
                }
                t.prepare_cached(
                    "INSERT INTO jobs (id, user_id, status, idempotency_key, record, request, callback_secret, due) \
                     VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    id.to_string(),
                    user.to_string(),
                    key,
                    json,
                    request.as_ref(),
                    secret,
                    due
                ])?;
                kept.insert(user, Kept { waiting: now.waiting + 1, bytes: now.bytes + adding });
                Ok(Ok(None))
            })
            .await?;
        match found.map_err(JobsError::Full)? {
            Some((json, secret)) => {
                Ok(Inserted::Existing(self.overlay(decode(&json)?), secret.map(SecretString::from)))
            }
            None => {
                sync::lock(&self.schedule).push(user, id, due.unwrap_or(0));
                self.work.notify_waiters();
                Ok(Inserted::New(record))
            }
        }
    }

    /// How many of the user's jobs are waiting.
    async fn waiting(&self, user: UserId) -> Result<u64, JobsError> {
        Ok(sync::lock(&self.kept).get(&user).map_or(0, |k| k.waiting))
    }

    async fn get(&self, user: UserId, id: Uuid) -> Result<Option<JobRecord>, JobsError> {
        let json: Option<String> = self
            .read(move |c| {
                c.query_row(
                    "SELECT record FROM jobs WHERE id = ?1 AND user_id = ?2",
                    params![id.to_string(), user.to_string()],
                    |row| row.get(0),
                )
                .optional()
            })
            .await?;
        json.map(|json| decode(&json).map(|r| self.overlay(r))).transpose()
    }

    /// The user's newest jobs first, `limit` at most, older than `after` if given, optionally only those in
    /// `status` (an index on the user, status and id makes each a bounded read).
    async fn list(
        &self,
        user: UserId,
        status: Option<JobStatus>,
        limit: usize,
        after: Option<Uuid>,
    ) -> Result<Page, JobsError> {
        // Running jobs are `queued` on disk: those are the few the workers hold, looked up by id; a list of queued
        // ones reads enough rows to leave them out.
        let running: Vec<String> = sync::lock(&self.schedule).running().map(|id| id.to_string()).collect();
        let after = after.map(|id| id.to_string());
        let rows: Vec<String> = match status {
            Some(JobStatus::Running) => {
                self.read(move |c| {
                    let mut statement = c.prepare_cached(
                        "SELECT record FROM jobs WHERE user_id = ?1 AND id IN (SELECT value FROM json_each(?2)) \
                         AND (?3 IS NULL OR id < ?3) ORDER BY id DESC",
                    )?;
                    let ids = serde_json::to_string(&running).unwrap_or_default();
                    statement.query_map(params![user.to_string(), ids, after], |row| row.get(0))?.collect()
                })
                .await?
            }
            _ => {
                let rows = limit + 1 + if status == Some(JobStatus::Queued) { running.len() } else { 0 };
                self.read(move |c| {
                    let mut statement = c.prepare_cached(
                        "SELECT record FROM jobs WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) \
                         AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
                    )?;
                    let status = status.map(JobStatus::as_str);
                    statement
                        .query_map(params![user.to_string(), status, after, rows as i64], |row| row.get(0))?
                        .collect()
                })
                .await?
            }
        };
        let mut jobs = Vec::with_capacity(rows.len().min(limit));
        let mut more = false;
        for json in rows {
            let job = self.overlay(decode(&json)?);
            if status.is_none_or(|s| s == job.status) {
                if jobs.len() == limit {
                    more = true;
                    break;
                }
                jobs.push(job);
            }
        }
        let next = if more { jobs.last().map(|j| j.id) } else { None };
        Ok(Page { jobs, next })
    }

    /// Writes `record` if the job is still in `expected` (compare and set), and schedules what follows from
    /// its new state. Whether it was written.
    async fn update(&self, record: &JobRecord, expected: JobStatus) -> Result<bool, JobsError> {
        let written = self.write(record, expected, None).await?;
        if written {
            let mut schedule = sync::lock(&self.schedule);
            match (record.status, record.next_attempt_at) {
                (JobStatus::Queued, Some(at)) => {
                    schedule.push(record.user, record.id, at);
                    drop(schedule);
                    self.work.notify_waiters();
                }
                _ => {
                    schedule.remove(record.id);
                }
            }
        }
        Ok(written)
    }

    /// A worker is done with a job it claimed: `record` is its new state, written unless the user cancelled
    /// it meanwhile. Whether it was written.
    async fn finish(
        &self,
        record: &JobRecord,
        _: Option<&str>,
        usage: Option<&UsageRecord>,
    ) -> Result<bool, JobsError> {
        // No longer running before the result is written: a reader sees the attempt before it (queued), or the
        // result, never the result still running.
        sync::lock(&self.schedule).done(record.user, record.id);
        let written = self.write(record, JobStatus::Running, usage.cloned()).await;
        if let (Ok(true), JobStatus::Queued, Some(at)) = (&written, record.status, record.next_attempt_at) {
            sync::lock(&self.schedule).push(record.user, record.id, at);
        }
        // The user's slot is free again (and the job may be due again): one waiting worker looks.
        self.work.notify_one();
        written
    }

    /// The next due job, claimed for the caller; waits until there is one.
    async fn claim(&self) -> Claimed {
        loop {
            let work = armed(&self.work);
            let next = sync::lock(&self.schedule).pop(self.clock.now());
            match next {
                Next::Run(user, id) => match self.load(id).await {
                    Ok(Some((record, request))) if record.status == JobStatus::Queued => {
                        let record = JobRecord { status: JobStatus::Running, ..record };
                        return Claimed { record, request, lease: None, renewal: None };
                    }
                    Ok(_) => sync::lock(&self.schedule).done(user, id),
                    Err(error) => {
                        tracing::error!(job = %id, %error, "cannot read a due job; it waits for the next start");
                        sync::lock(&self.schedule).done(user, id);
                    }
                },
                Next::WaitUntil(at) => {
                    let at = at.unwrap_or_else(|| self.clock.now() + IDLE_LOOK);
                    tokio::select! {
                        () = work => {}
                        () = self.clock.sleep_until(at) => {}
                    }
                }
            }
        }
    }

    /// The next callback due that `gate` admits (earliest first, user by user), with its job and secret;
    /// waits until there is one. Hand it back with [`EmbeddedJobs::callback_done`] once sent.
    async fn due_callback(&self, gate: &CallbackGate) -> DueCallback {
        loop {
            let work = armed(&self.callback_work);
            let now = self.clock.now();
            let next = {
                let hosts = sync::lock(&self.callback_hosts);
                let admits = |user, id| gate.admits(user, hosts.get(&id).map_or("", String::as_str));
                sync::lock(&self.callbacks).pop_admitted(now, admits)
            };
            match next {
                Next::Run(user, id) => {
                    let row: Result<Option<(String, Option<String>)>, _> = self
                        .read(move |c| {
                            c.query_row(
                                "SELECT record, callback_secret FROM jobs WHERE id = ?1 AND callback_due <= ?2",
                                params![id.to_string(), now],
                                |row| Ok((row.get(0)?, row.get(1)?)),
                            )
                            .optional()
                        })
                        .await;
                    match row.map(|row| row.map(|(json, secret)| decode(&json).map(|r| (r, secret)))) {
                        Ok(Some(Ok((record, secret)))) => {
                            return DueCallback { record, secret: secret.map(SecretString::from) };
                        }
                        Ok(None) => {}
                        Ok(Some(Err(error))) | Err(error) => {
                            tracing::error!(job = %id, %error, "cannot read a due callback; it waits for the next start");
                        }
                    }
                    self.callback_done(user, id);
                }
                Next::WaitUntil(at) => {
                    let at = at.unwrap_or(now + IDLE_LOOK);
                    tokio::select! {
                        () = work => {}
                        () = self.clock.sleep_until(at) => {}
                    }
                }
            }
        }
    }

    /// A callback [`EmbeddedJobs::due_callback`] handed out was sent (its outcome written): the user's place
    /// is free, and a retry it scheduled is due in its turn.
    fn callback_done(&self, user: UserId, id: Uuid) {
        let queued = {
            let mut callbacks = sync::lock(&self.callbacks);
            callbacks.done(user, id);
            callbacks.is_queued(id)
        };
        // One lock at a time: `due_callback` takes the hosts' before the queue's.
        if !queued {
            sync::lock(&self.callback_hosts).remove(&id);
        }
        self.callback_work.notify_one();
    }

    /// Removes up to `page` finished jobs older than `before` whose callback is settled. How many went.
    async fn purge(&self, before: UnixMillis, page: usize) -> Result<usize, JobsError> {
        let kept = Arc::clone(&self.kept);
        Ok(self
            .writer
            .write(move |t| {
                let mut statement = t.prepare_cached(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < ?1 AND callback_due IS NULL \
                     AND status IN ('succeeded', 'failed', 'cancelled') LIMIT ?2) RETURNING user_id, length(request)",
                )?;
                let removed: Vec<(String, i64)> = statement
                    .query_map(params![before, page as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let mut kept = sync::lock(&kept);
                for (user, bytes) in &removed {
                    if let Some(entry) = UserId::parse(user).ok().and_then(|user| kept.get_mut(&user)) {
                        entry.bytes = entry.bytes.saturating_sub(bytes.max(&0).unsigned_abs());
                    }
                }
                kept.retain(|_, k| k.waiting > 0 || k.bytes > 0);
                Ok(removed.len())
            })
            .await?)
    }

    /// Jobs by status, for metrics.
    async fn counts(&self) -> Result<HashMap<JobStatus, u64>, JobsError> {
        let rows: Vec<(String, i64)> = self
            .read(|c| {
                let mut statement = c.prepare_cached("SELECT status, count(*) FROM jobs GROUP BY status")?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect()
            })
            .await?;
        let mut counts: HashMap<JobStatus, u64> =
            rows.into_iter().filter_map(|(s, n)| Some((JobStatus::parse(&s)?, n.max(0) as u64))).collect();
        let running = sync::lock(&self.schedule).running_len() as u64;
        let queued = counts.entry(JobStatus::Queued).or_default();
        *queued = queued.saturating_sub(running);
        counts.insert(JobStatus::Running, running);
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JobsConfig;
    use crate::domain::jobs::{Attempt, JobError, RetryPolicy};
    use crate::domain::llm::Api;
    use crate::store::tests::TempDir;

    fn failure() -> Attempt {
        let error = JobError { code: "x".into(), message: "x".into(), provider_status: None, provider_answer: None };
        Attempt::Fail { error }
    }

    #[tokio::test]
    async fn a_write_based_on_an_older_reading_never_lands() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(&dir.store_path()).unwrap());
        let outbox = Arc::new(Outbox::open(Arc::clone(&store)).unwrap());
        let jobs = EmbeddedJobs::open(store, outbox, &JobsConfig::default(), Clock::manual(0)).unwrap();
        let user = UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap();
        let policy = RetryPolicy::default();
        let record = JobRecord::new(user, Api::ChatCompletions, "gpt-4o-mini".into(), 0, &policy);
        let id = record.id;
        assert!(matches!(
            jobs.insert(record, Bytes::from_static(b"{}"), None, JobsConfig::default().caps).await.unwrap(),
            Inserted::New(_)
        ));

        let mut failed = jobs.get(user, id).await.unwrap().unwrap();
        failed.settle(failure(), 1, &policy, 0.0);
        assert!(jobs.update(&failed, JobStatus::Queued).await.unwrap());
        // A callback sender reads the failed job; meanwhile the user retries it and it fails again.
        let stale = jobs.get(user, id).await.unwrap().unwrap();
        let mut retried = stale.clone();
        retried.requeue(2, &policy);
        assert!(jobs.update(&retried, JobStatus::Failed).await.unwrap());
        let mut again = jobs.get(user, id).await.unwrap().unwrap();
        again.settle(failure(), 3, &policy, 0.0);
        assert!(jobs.update(&again, JobStatus::Queued).await.unwrap());

        let mut late = stale;
        late.callback_abandoned("late");
        assert!(!jobs.update(&late, JobStatus::Failed).await.unwrap(), "the older reading's write is refused");
        let now = jobs.get(user, id).await.unwrap().unwrap();
        assert_eq!((now.status, now.attempts, now.revision), (JobStatus::Failed, 2, 3));
    }
}
