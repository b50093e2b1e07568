//! Several replicas (`REDIS_URL`): jobs live in Redis and every replica's workers take from one queue.
//!
//! - `jobs:job:{id}`: a hash with the record (JSON), `status`, `user`, the request, the callback secret, the
//!   idempotency key, and while it runs the stream `entry` that holds it;
//! - `jobs:due:{user}`: the user's queued jobs by due time; `jobs:turns`: users by when their next job may go
//!   (their earliest due job, or, at the per-user cap, when a running job's lease ends);
//! - `jobs:stream` with the consumer group `workers`: jobs handed to workers. A script moves due jobs there
//!   (at most the cap per user in flight, counted in `jobs:inflight:{user}` with lease times) and hands them
//!   out (`XREADGROUP`) in the same step that marks them running, so a job is running under exactly one entry;
//! - a worker renews its lease while the call runs; an entry idle past the lease (its replica died) is taken
//!   over with `XAUTOCLAIM` and the job queued again;
//! - a result is written only by the holder of the job's current entry (compare and set in a script): once;
//! - `jobs:cb:{user}`: the user's due callbacks by time, `jobs:cbturns`: users by their earliest (callbacks
//!   are taken user by user, like jobs); `jobs:finished`: finished jobs by time; `jobs:user:{user}`: the
//!   user's jobs by creation; `jobs:counts`: jobs by status; `jobs:kept:{user}`: the user's waiting jobs and
//!   stored request bytes (the caps).
//!
//! Every step is one Lua script, so replicas never see a half-made change. Times are the replicas' clocks
//! (NTP), as for the other shared state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::Script;
use secrecy::SecretString;
use tokio::sync::{Mutex, Notify, mpsc};
use uuid::Uuid;

use super::{CallbackGate, Claimed, DueCallback, Inserted, JobCap, JobQueue, JobsError, Page, armed, encode};
use crate::accounting::{self, Outbox};
use crate::clock::Clock;
use crate::config::UserCaps;
use crate::domain::credit_book::UnixMillis;
use crate::domain::jobs::{JobRecord, JobStatus, millis};
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::shared::redis::{Redis, key};

/// A running job's claim lapses this long after its worker last renewed it.
const LEASE: Duration = Duration::from_secs(20);
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// With nothing to hand out, the fetcher looks again after this long (new work in this replica wakes it).
const POLL: Duration = Duration::from_millis(50);
const RECLAIM_EVERY: Duration = Duration::from_secs(5);
/// A list reads at most this many of a user's jobs per script call, and makes at most this many calls.
const LIST_SCAN: usize = 200;
const LIST_CALLS: usize = 10;
const GROUP: &str = "workers";

/// Shared by the scripts: what follows from a job's new state. KEYS are built from ARGV's prefix.
const FOLLOWUPS: &str = include_str!("lua/followups.lua");

/// ARGV: prefix, id, user, idempotency key or '', record, request, secret or '', now, most jobs waiting, most
/// bytes kept, the callback's host or ''. Returns {1} for a new job, {0, record, status, secret} for the job the
/// idempotency key made before, or {2, 'waiting' | 'bytes'} when the user's cap would be passed.
const INSERT: &str = include_str!("lua/insert.lua");

/// ARGV: prefix, now, cap, lease ms, consumer. Takes the earliest due job of a user under the cap (users by their
/// earliest due job), puts it in the stream and reads it as `consumer` in the same step, marked running under
/// that entry: only jobs a worker holds are ever in the stream, and only they count against the cap. Returns
/// {id, entry, record, request} or nothing.
const CLAIM: &str = include_str!("lua/claim.lua");

/// ARGV: prefix, id, entry, consumer, now, lease ms. Keeps a running job's claim.
const RENEW: &str = include_str!("lua/renew.lua");

/// ARGV: prefix, id, entry, record, status, due, callback due, finished at, revision. Writes a worker's result if it
/// still holds the job's entry, and the job still runs at the revision it was taken at. Returns 1 if written.
const FINISH: &str = include_str!("lua/finish.lua");

/// ARGV: prefix, id, expected status, record, status, due, callback due, finished at, expected revision. Compare
/// and set on the status and the revision, so a write based on an older reading never lands.
const UPDATE: &str = include_str!("lua/update.lua");

/// ARGV: prefix, consumer, min idle ms, now. Takes over entries whose replica stopped renewing them and
/// queues their jobs again. Returns how many jobs were queued again.
const RECLAIM: &str = include_str!("lua/reclaim.lua");

/// ARGV: prefix, consumer, now. At startup: this replica's entries from before it stopped, queued again.
const RECLAIM_OWN: &str = include_str!("lua/reclaim_own.lua");

/// ARGV: prefix, now, lease ms, users to pass over (comma-separated), hosts to pass over (one per line). Takes
/// the earliest due callback of a user, users in turn by their earliest, for a while (a lease), passing over
/// users and hosts with as many callbacks in flight as they may have. Returns {record, status, secret}.
const TAKE_CALLBACK: &str = include_str!("lua/take_callback.lua");

/// ARGV: prefix. Moves up to 500 callbacks from the single queue of earlier versions into the users' own.
/// Returns how many it moved.
const MOVE_CALLBACKS: &str = include_str!("lua/move_callbacks.lua");

/// ARGV: prefix, user, status or '', limit, after (a job id) or '', most entries to look at. The user's newest
/// jobs after `after`: {next, record, status, ...}, where `next` is '' when nothing may follow, else the id the
/// next page starts after. Looks at a bounded number of entries, whatever the user keeps.
const LIST: &str = include_str!("lua/list.lua");

/// ARGV: prefix, before, max. Removes up to `max` finished jobs that ended before `before`; one whose callback
/// is still due leaves the index until its callback is settled (which puts it back). Returns how many it
/// looked at.
const PURGE: &str = include_str!("lua/purge.lua");

struct Scripts {
    insert: Script,
    claim: Script,
    renew: Script,
    finish: Script,
    update: Script,
    reclaim: Script,
    reclaim_own: Script,
    take_callback: Script,
    move_callbacks: Script,
    list: Script,
    purge: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let with = |body: &str| Script::new(&format!("{FOLLOWUPS}\n{body}"));
        Scripts {
            insert: with(INSERT),
            claim: with(CLAIM),
            renew: with(RENEW),
            finish: with(FINISH),
            update: with(UPDATE),
            reclaim: with(RECLAIM),
            reclaim_own: with(RECLAIM_OWN),
            take_callback: with(TAKE_CALLBACK),
            move_callbacks: with(MOVE_CALLBACKS),
            list: with(LIST),
            purge: with(PURGE),
        }
    }
}

pub struct RedisJobs {
    redis: Arc<Redis>,
    /// This replica's usage outbox: a succeeded call's record is on its disk before the job is done in Redis.
    outbox: Arc<Outbox>,
    /// `byok-bridge:jobs:` (keys) and this replica's consumer name in the group.
    prefix: String,
    consumer: String,
    cap: usize,
    clock: Clock,
    scripts: Scripts,
    /// Claimed jobs, fetched by one task and taken by the workers.
    claimed: Mutex<mpsc::Receiver<Claimed>>,
    handoff: mpsc::Sender<Claimed>,
    /// New work in this replica: look at once instead of at the next poll.
    work: Notify,
    callback_work: Notify,
}

/// Renews a running job's lease until dropped, and says when the lease is lost (taken over, or not renewed for
/// longer than is safe): the worker then gives up the attempt, so a job never runs on two replicas at once.
pub struct Renewal {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<Lost>,
}

#[derive(Default)]
struct Lost {
    yes: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Renewal {
    /// Resolves when the lease is lost.
    pub async fn lost(&self) {
        loop {
            let notified = armed(&self.lost.notify);
            if self.lost.yes.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisJobs {
    /// The queue in `redis` as `replica`; succeeded calls' usage records go to this replica's `outbox`.
    pub fn new(redis: Arc<Redis>, outbox: Arc<Outbox>, replica: String, cap: usize, clock: Clock) -> RedisJobs {
        let (handoff, claimed) = mpsc::channel(1);
        RedisJobs {
            redis,
            outbox,
            prefix: key(&["jobs", ""]),
            consumer: replica,
            cap: cap.max(1),
            clock,
            scripts: Scripts::new(),
            claimed: Mutex::new(claimed),
            handoff,
            work: Notify::new(),
            callback_work: Notify::new(),
        }
    }

    /// Writes `record` as its next revision with `script` ([`UPDATE`] or [`FINISH`]), guarded by `guard` (the
    /// expected status, or the entry the worker holds) and by the revision it was read at.
    async fn write(&self, script: &Script, record: &JobRecord, guard: &str) -> Result<bool, JobsError> {
        let json = encode(&JobRecord { revision: record.revision + 1, ..record.clone() })?;
        let prefix = &self.prefix;
        let written: i64 = self
            .redis
            .run(|mut c| async move {
                script
                    .arg(prefix)
                    .arg(record.id.to_string())
                    .arg(guard)
                    .arg(json)
                    .arg(record.status.as_str())
                    .arg(optional(record.next_attempt_at))
                    .arg(optional(record.callback_due()))
                    .arg(optional(record.finished_at))
                    .arg(record.revision)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.wake_for(record);
        Ok(written == 1)
    }

    fn wake_for(&self, record: &JobRecord) {
        if record.status == JobStatus::Queued {
            self.work.notify_one();
        }
        if record.callback_due().is_some() {
            self.callback_work.notify_one();
        }
    }

    async fn fetch(self: Arc<Self>) {
        self.ensure_group().await;
        loop {
            let work = armed(&self.work);
            match self.claim_next().await {
                Ok(Some(claimed)) => {
                    if self.handoff.send(claimed).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        () = work => {}
                        () = self.clock.sleep_until(self.clock.now() + millis(POLL)) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot fetch jobs from Redis; retrying");
                    if error.to_string().contains("NOGROUP") {
                        self.ensure_group().await;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn ensure_group(&self) {
        let stream = format!("{}stream", self.prefix);
        let created: Result<(), _> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Err(error) = created
            && !error.to_string().contains("BUSYGROUP")
        {
            tracing::warn!(%error, "cannot create the jobs consumer group; the fetcher retries");
        }
    }

    async fn claim_next(self: &Arc<Self>) -> Result<Option<Claimed>, JobsError> {
        let script = &self.scripts.claim;
        let now = self.clock.now();
        let found: Option<(String, String, String, Vec<u8>)> = self
            .redis
            .run(|mut c| async move {
                script
                    .arg(&self.prefix)
                    .arg(now)
                    .arg(self.cap)
                    .arg(millis(LEASE))
                    .arg(&self.consumer)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let Some((id, entry, record, request)) = found else { return Ok(None) };
        let record = with_status(&record, JobStatus::Running.as_str())?;
        let lost = Arc::new(Lost::default());
        let task = tokio::spawn(Arc::clone(self).renew(id, entry.clone(), Arc::clone(&lost)));
        let renewal = Renewal { task, lost };
        Ok(Some(Claimed { record, request: Bytes::from(request), lease: Some(entry), renewal: Some(renewal) }))
    }

    async fn renew(self: Arc<Self>, id: String, entry: String, lost: Arc<Lost>) {
        let give_up = |why: &str| {
            tracing::warn!(job = %id, why, "a running job's lease is lost; its attempt is given up");
            lost.yes.store(true, std::sync::atomic::Ordering::SeqCst);
            lost.notify.notify_waiters();
        };
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let (script, id, entry, now) = (&self.scripts.renew, &id, &entry, self.clock.now());
            let (prefix, consumer) = (&self.prefix, &self.consumer);
            let renewed: Result<i64, _> = self
                .redis
                .run(|mut c| async move {
                    script
                        .arg(prefix)
                        .arg(id)
                        .arg(entry)
                        .arg(consumer)
                        .arg(now)
                        .arg(millis(LEASE))
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            match renewed {
                Ok(1) => renewed_at = tokio::time::Instant::now(),
                Ok(_) => return give_up("taken over"),
                // Another replica may take the job over once the lease lapses: stop before it can.
                Err(_) if renewed_at.elapsed() >= LEASE - RENEW_EVERY => return give_up("not renewed in time"),
                Err(error) => tracing::warn!(job = %id, %error, "cannot renew a running job's lease; retrying"),
            }
        }
    }

    async fn reclaim_dead(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RECLAIM_EVERY).await;
            match self.reclaim(&self.scripts.reclaim, Some(LEASE)).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(n, "jobs of a replica that stopped renewing them are queued again"),
                Err(error) => tracing::debug!(%error, "cannot look for abandoned jobs"),
            }
        }
    }

    async fn reclaim(&self, script: &Script, idle: Option<Duration>) -> Result<i64, JobsError> {
        let now = self.clock.now();
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix).arg(&self.consumer);
        if let Some(idle) = idle {
            invocation.arg(millis(idle));
        }
        invocation.arg(now);
        let n: i64 = self.redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        if n > 0 {
            self.work.notify_one();
        }
        Ok(n)
    }

    /// Callbacks waiting in the single queue of earlier versions go to their users' queues.
    async fn move_old_callbacks(&self) -> Result<i64, JobsError> {
        let mut moved = 0;
        loop {
            let script = &self.scripts.move_callbacks;
            let n: i64 =
                self.redis.run(|mut c| async move { script.arg(&self.prefix).invoke_async(&mut c).await }).await?;
            moved += n;
            if n == 0 {
                return Ok(moved);
            }
        }
    }
}

#[async_trait::async_trait]
impl JobQueue for RedisJobs {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn insert(
        &self,
        record: JobRecord,
        request: Bytes,
        secret: Option<String>,
        caps: UserCaps,
    ) -> Result<Inserted, JobsError> {
        let json = encode(&record)?;
        let (id, user) = (record.id.to_string(), record.user.to_string());
        let idem = record.idempotency_key.clone().unwrap_or_default();
        let due = record.next_attempt_at.unwrap_or(record.created_at);
        let host = record.callback.as_ref().map(|c| c.host()).unwrap_or_default();
        let script = &self.scripts.insert;
        let prefix = &self.prefix;
        let reply: Vec<redis::Value> = self
            .redis
            .run(|mut c| async move {
                script
                    .arg(prefix)
                    .arg(id)
                    .arg(user)
                    .arg(idem)
                    .arg(json)
                    .arg(request.as_ref())
                    .arg(secret.as_deref().unwrap_or(""))
                    .arg(due)
                    .arg(caps.waiting)
                    .arg(caps.stored_bytes)
                    .arg(host)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [redis::Value::Int(1)] => {
                self.work.notify_one();
                Ok(Inserted::New(record))
            }
            [redis::Value::Int(2), which] => Err(JobsError::Full(match text(which).as_deref() {
                Some("bytes") => JobCap::StoredBytes(caps.stored_bytes),
                _ => JobCap::Waiting(caps.waiting),
            })),
            [_, found, status, secret] => {
                let secret = text(secret).filter(|s| !s.is_empty()).map(SecretString::from);
                Ok(Inserted::Existing(decode(found, status)?, secret))
            }
            _ => Err(JobsError::Internal("unexpected answer from the insert script".into())),
        }
    }

    /// How many of the user's jobs are waiting.
    async fn waiting(&self, user: UserId) -> Result<u64, JobsError> {
        let kept = format!("{}kept:{user}", self.prefix);
        let waiting: Option<u64> = self
            .redis
            .run(|mut c| async move { redis::cmd("HGET").arg(kept).arg("waiting").query_async(&mut c).await })
            .await?;
        Ok(waiting.unwrap_or(0))
    }

    async fn get(&self, user: UserId, id: Uuid) -> Result<Option<JobRecord>, JobsError> {
        let job = key(&["jobs", "job", &id.to_string()]);
        let found: (Option<String>, Option<String>, Option<String>) = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HMGET").arg(job).arg("record").arg("status").arg("user").query_async(&mut c).await
            })
            .await?;
        match found {
            (Some(record), Some(status), Some(owner)) if owner == user.to_string() => {
                Ok(Some(with_status(&record, &status)?))
            }
            _ => Ok(None),
        }
    }

    /// The user's newest jobs after `after`: a few bounded script calls, never one that reads all their jobs.
    async fn list(
        &self,
        user: UserId,
        status: Option<JobStatus>,
        limit: usize,
        mut after: Option<Uuid>,
    ) -> Result<Page, JobsError> {
        let mut jobs = Vec::new();
        for _ in 0..LIST_CALLS {
            let script = &self.scripts.list;
            let wanted = limit - jobs.len();
            let cursor = after.map(|id| id.to_string()).unwrap_or_default();
            let flat: Vec<String> = self
                .redis
                .run(|mut c| async move {
                    script
                        .arg(&self.prefix)
                        .arg(user.to_string())
                        .arg(status.map_or("", JobStatus::as_str))
                        .arg(wanted)
                        .arg(cursor)
                        .arg(LIST_SCAN)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let (next, found) = flat.split_first().ok_or_else(|| JobsError::Internal("empty list reply".into()))?;
            for pair in found.chunks(2) {
                jobs.push(with_status(&pair[0], &pair[1])?);
            }
            after = Uuid::parse_str(next).ok();
            if after.is_none() || jobs.len() == limit {
                break;
            }
        }
        Ok(Page { jobs, next: after })
    }

    async fn update(&self, record: &JobRecord, expected: JobStatus) -> Result<bool, JobsError> {
        self.write(&self.scripts.update, record, expected.as_str()).await
    }

    async fn finish(
        &self,
        record: &JobRecord,
        lease: Option<&str>,
        usage: Option<&UsageRecord>,
    ) -> Result<bool, JobsError> {
        let entry = lease.ok_or_else(|| JobsError::Internal("a Redis job finished without its entry".into()))?;
        // On this replica's disk before Redis says the job is done.
        if let Some(usage) = usage.cloned() {
            accounting::blocking(&self.outbox, move |outbox| outbox.keep(std::slice::from_ref(&usage))).await?;
        }
        let written = self.write(&self.scripts.finish, record, entry).await;
        // The user's slot is free again: the fetcher looks at once.
        self.work.notify_one();
        written
    }

    /// The next job for a worker of this replica; waits until there is one.
    async fn claim(&self) -> Claimed {
        let mut claimed = self.claimed.lock().await;
        claimed.recv().await.expect("the fetcher runs as long as the queue")
    }

    /// Fetches jobs for this replica's workers, renews their leases, takes over dead replicas' jobs.
    fn maintain(self: Arc<Self>) -> BoxFuture<'static, ()> {
        let jobs = self;
        Box::pin(async move {
            match jobs.move_old_callbacks().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "callbacks moved to their users' queues"),
                Err(error) => tracing::warn!(%error, "cannot move the callbacks of an earlier version"),
            }
            match jobs.reclaim(&jobs.scripts.reclaim_own, None).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "jobs this replica held when it stopped are queued again"),
                Err(error) => tracing::warn!(%error, "cannot queue again the jobs this replica held when it stopped"),
            }
            tokio::spawn(Arc::clone(&jobs).reclaim_dead());
            jobs.fetch().await;
        })
    }

    /// The next callback due that `gate` admits, taken for a while (leased); waits until there is one.
    async fn due_callback(&self, gate: &CallbackGate) -> DueCallback {
        loop {
            let work = armed(&self.callback_work);
            let script = &self.scripts.take_callback;
            let now = self.clock.now();
            let (users, hosts) = gate.full();
            let users = users.iter().map(UserId::to_string).collect::<Vec<_>>().join(",");
            let hosts = hosts.join("\n");
            let taken: Result<Option<(String, String, String)>, _> = self
                .redis
                .run(|mut c| async move {
                    script
                        .arg(&self.prefix)
                        .arg(now)
                        .arg(millis(LEASE))
                        .arg(users)
                        .arg(hosts)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            match taken
                .map_err(JobsError::from)
                .and_then(|t| t.map(|(r, s, secret)| Ok((with_status(&r, &s)?, secret))).transpose())
            {
                Ok(Some((record, secret))) => {
                    let secret = Some(secret).filter(|s| !s.is_empty()).map(SecretString::from);
                    return DueCallback { record, secret };
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot read due callbacks from Redis"),
            }
            tokio::select! {
                () = work => {}
                () = self.clock.sleep_until(now + 250) => {}
            }
        }
    }

    /// A callback was sent: a sender that passed over its user or host looks again at once.
    fn callback_done(&self, _: UserId, _: Uuid) {
        self.callback_work.notify_one();
    }

    /// Removes up to `page` finished jobs older than `before`. How many were looked at.
    async fn purge(&self, before: UnixMillis, page: usize) -> Result<usize, JobsError> {
        let script = &self.scripts.purge;
        let n: usize = self
            .redis
            .run(|mut c| async move { script.arg(&self.prefix).arg(before).arg(page).invoke_async(&mut c).await })
            .await?;
        Ok(n)
    }

    async fn counts(&self) -> Result<HashMap<JobStatus, u64>, JobsError> {
        let counts = format!("{}counts", self.prefix);
        let raw: HashMap<String, i64> =
            self.redis.run(|mut c| async move { redis::cmd("HGETALL").arg(counts).query_async(&mut c).await }).await?;
        Ok(raw.into_iter().filter_map(|(s, n)| Some((JobStatus::parse(&s)?, n.max(0) as u64))).collect())
    }
}

fn optional(value: Option<UnixMillis>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// The record as stored, with the status the hash says (a running job's record still says queued).
fn with_status(record: &str, status: &str) -> Result<JobRecord, JobsError> {
    let mut record = super::decode(record)?;
    record.status = JobStatus::parse(status).unwrap_or(record.status);
    Ok(record)
}

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn decode(record: &redis::Value, status: &redis::Value) -> Result<JobRecord, JobsError> {
    match (text(record), text(status)) {
        (Some(record), Some(status)) => with_status(&record, &status),
        _ => Err(JobsError::Internal("unexpected job record from Redis".into())),
    }
}
