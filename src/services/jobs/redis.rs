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
use redis::Script;
use secrecy::SecretString;
use tokio::sync::{Mutex, Notify, mpsc};
use uuid::Uuid;

use super::{CallbackGate, Claimed, DueCallback, Inserted, JobCap, JobsError, Page, UserCaps, armed, encode};
use crate::clock::Clock;
use crate::domain::credit_book::UnixMillis;
use crate::domain::jobs::{JobRecord, JobStatus, millis};
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
const FOLLOWUPS: &str = r"
-- A user's turn among those with callbacks due: their earliest.
local function callback_turn(p, user)
  local head = redis.call('ZRANGE', p .. 'cb:' .. user, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', p .. 'cbturns', user)
  else
    redis.call('ZADD', p .. 'cbturns', head[2], user)
  end
end
local function followups(p, id, user, status, due, callback_due, finished_at)
  if status == 'queued' and due ~= '' then
    redis.call('ZADD', p .. 'due:' .. user, due, id)
    redis.call('ZADD', p .. 'turns', 'LT', due, user)
  end
  if callback_due ~= '' then
    redis.call('ZADD', p .. 'cb:' .. user, callback_due, id)
  else
    redis.call('ZREM', p .. 'cb:' .. user, id)
  end
  callback_turn(p, user)
  if finished_at ~= '' then
    redis.call('ZADD', p .. 'finished', finished_at, id)
  else
    redis.call('ZREM', p .. 'finished', id)
  end
end
-- Counters never go below zero (jobs stored before they were kept).
local function add(key, field, n)
  if redis.call('HINCRBY', key, field, n) < 0 then
    redis.call('HSET', key, field, 0)
  end
end
local waits = {queued = true, running = true, paused = true}
-- A job moved between statuses: the counts by status, and the user's count of waiting jobs.
local function recount(p, user, from, to)
  redis.call('HINCRBY', p .. 'counts', from, -1)
  redis.call('HINCRBY', p .. 'counts', to, 1)
  if waits[from] and not waits[to] then
    add(p .. 'kept:' .. user, 'waiting', -1)
  elseif waits[to] and not waits[from] then
    add(p .. 'kept:' .. user, 'waiting', 1)
  end
end
local function give_turn(p, user)
  local head = redis.call('ZRANGE', p .. 'due:' .. user, 0, 0, 'WITHSCORES')
  if #head > 0 then
    redis.call('ZADD', p .. 'turns', 'LT', head[2], user)
  end
end
-- The user's turn as it now stands: their earliest due job, or at the cap, when a lease of theirs lapses (a
-- finishing job gives the turn back sooner).
local function retime(p, user, cap)
  local head = redis.call('ZRANGE', p .. 'due:' .. user, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', p .. 'turns', user)
    return
  end
  local inflight = p .. 'inflight:' .. user
  if redis.call('ZCARD', inflight) < cap then
    redis.call('ZADD', p .. 'turns', head[2], user)
  else
    local first = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
    redis.call('ZADD', p .. 'turns', math.max(tonumber(head[2]), tonumber(first[2])), user)
  end
end
local function retake(p, id, entry, now)
  redis.call('XACK', p .. 'stream', 'workers', entry)
  redis.call('XDEL', p .. 'stream', entry)
  local job = p .. 'job:' .. id
  local user = redis.call('HGET', job, 'user')
  if not user then
    return 0
  end
  redis.call('ZREM', p .. 'inflight:' .. user, id)
  if redis.call('HGET', job, 'entry') ~= entry then
    give_turn(p, user)
    return 0
  end
  redis.call('HDEL', job, 'entry')
  local status = redis.call('HGET', job, 'status')
  if status == 'running' then
    redis.call('HSET', job, 'status', 'queued')
    recount(p, user, 'running', 'queued')
    status = 'queued'
  end
  if status == 'queued' then
    redis.call('ZADD', p .. 'due:' .. user, now, id)
  end
  give_turn(p, user)
  return 1
end
";

/// ARGV: prefix, id, user, idempotency key or '', record, request, secret or '', now, most jobs waiting, most
/// bytes kept, the callback's host or ''. Returns {1} for a new job, {0, record, status, secret} for the job the idempotency key made
/// before, or {2, 'waiting' | 'bytes'} when the user's cap would be passed.
const INSERT: &str = r"
local p, id, user, idem = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_key = p .. 'idem:' .. user .. ':' .. idem
if idem ~= '' then
  local existing = redis.call('GET', idem_key)
  if existing then
    local found = redis.call('HMGET', p .. 'job:' .. existing, 'record', 'status', 'secret')
    if found[1] then
      return {0, found[1], found[2], found[3] or ''}
    end
  end
end
local kept = p .. 'kept:' .. user
local counts = redis.call('HMGET', kept, 'waiting', 'bytes')
local len = string.len(ARGV[6])
if tonumber(counts[1] or '0') >= tonumber(ARGV[9]) then
  return {2, 'waiting'}
end
if tonumber(counts[2] or '0') + len > tonumber(ARGV[10]) then
  return {2, 'bytes'}
end
if idem ~= '' then
  redis.call('SET', idem_key, id)
end
redis.call('HINCRBY', kept, 'waiting', 1)
redis.call('HINCRBY', kept, 'bytes', len)
local job = p .. 'job:' .. id
redis.call('HSET', job, 'user', user, 'status', 'queued', 'rev', 0, 'record', ARGV[5], 'request', ARGV[6], 'idem', idem,
  'rlen', len, 'cbhost', ARGV[11])
if ARGV[7] ~= '' then
  redis.call('HSET', job, 'secret', ARGV[7])
end
redis.call('ZADD', p .. 'user:' .. user, ARGV[8], id)
redis.call('HINCRBY', p .. 'counts', 'queued', 1)
followups(p, id, user, 'queued', ARGV[8], '', '')
return {1}
";

/// ARGV: prefix, now, cap, lease ms, consumer. Takes the earliest due job of a user under the cap (users by their
/// earliest due job), puts it in the stream and reads it as `consumer` in the same step, marked running under
/// that entry: only jobs a worker holds are ever in the stream, and only they count against the cap. Returns
/// {id, entry, record, request} or nothing.
const CLAIM: &str = r"
local p, now, cap, lease, consumer = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local stream = p .. 'stream'
-- A script's writes before an error stay: make sure the group exists before writing anything.
local groups = redis.pcall('XINFO', 'GROUPS', stream)
local grouped = false
if type(groups) == 'table' and not groups.err then
  for _, group in ipairs(groups) do
    if group[2] == 'workers' then
      grouped = true
    end
  end
end
if not grouped then
  return redis.error_reply('NOGROUP the jobs consumer group does not exist yet')
end
for _, user in ipairs(redis.call('ZRANGEBYSCORE', p .. 'turns', '-inf', now, 'LIMIT', 0, 50)) do
  local inflight, due = p .. 'inflight:' .. user, p .. 'due:' .. user
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
  local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if #head > 0 and tonumber(head[2]) <= now and redis.call('ZCARD', inflight) < cap then
    local id = head[1]
    redis.call('ZREM', due, id)
    local job = p .. 'job:' .. id
    local found = redis.call('HMGET', job, 'status', 'record', 'request')
    local taken = nil
    if found[1] == 'queued' then
      local entry = redis.call('XADD', stream, '*', 'job', id)
      repeat
        local read = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', 1, 'STREAMS', stream, '>')
        local got = read and read[1][2][1][1]
        if got and got ~= entry then
          redis.call('XACK', stream, 'workers', got)
          redis.call('XDEL', stream, got)
        end
      until not got or got == entry
      redis.call('HSET', job, 'status', 'running', 'entry', entry)
      recount(p, user, 'queued', 'running')
      redis.call('ZADD', inflight, now + lease, id)
      taken = {id, entry, found[2], found[3]}
    end
    retime(p, user, cap)
    if taken then
      return taken
    end
  else
    retime(p, user, cap)
  end
end
return false
";

/// ARGV: prefix, id, entry, consumer, now, lease ms. Keeps a running job's claim.
const RENEW: &str = r"
local p, id, entry = ARGV[1], ARGV[2], ARGV[3]
local job = p .. 'job:' .. id
if redis.call('HGET', job, 'entry') ~= entry then
  return 0
end
redis.call('ZADD', p .. 'inflight:' .. redis.call('HGET', job, 'user'), 'XX', tonumber(ARGV[5]) + tonumber(ARGV[6]), id)
redis.call('XCLAIM', p .. 'stream', 'workers', ARGV[4], 0, entry, 'JUSTID')
return 1
";

/// ARGV: prefix, id, entry, record, status, due, callback due, finished at, revision. Writes a worker's result if it
/// still holds the job's entry, and the job still runs at the revision it was taken at. Returns 1 if written.
const FINISH: &str = r"
local p, id, entry = ARGV[1], ARGV[2], ARGV[3]
redis.call('XACK', p .. 'stream', 'workers', entry)
redis.call('XDEL', p .. 'stream', entry)
local job = p .. 'job:' .. id
local found = redis.call('HMGET', job, 'user', 'status', 'entry', 'rev')
-- Gone, or taken over: the job and its slot are another worker's now.
if not found[1] or found[3] ~= entry then
  return 0
end
redis.call('ZREM', p .. 'inflight:' .. found[1], id)
redis.call('HDEL', job, 'entry')
local written = 0
if found[2] == 'running' and found[4] == ARGV[9] then
  redis.call('HSET', job, 'record', ARGV[4], 'status', ARGV[5], 'rev', tonumber(ARGV[9]) + 1)
  recount(p, found[1], 'running', ARGV[5])
  followups(p, id, found[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  written = 1
end
give_turn(p, found[1])
return written
";

/// ARGV: prefix, id, expected status, record, status, due, callback due, finished at, expected revision. Compare
/// and set on the status and the revision, so a write based on an older reading never lands.
const UPDATE: &str = r"
local p, id = ARGV[1], ARGV[2]
local job = p .. 'job:' .. id
local found = redis.call('HMGET', job, 'user', 'status', 'rev')
if not found[1] or found[2] ~= ARGV[3] or found[3] ~= ARGV[9] then
  return 0
end
redis.call('HSET', job, 'record', ARGV[4], 'status', ARGV[5], 'rev', tonumber(ARGV[9]) + 1)
if found[2] ~= ARGV[5] then
  recount(p, found[1], found[2], ARGV[5])
end
if found[2] == 'queued' then
  redis.call('ZREM', p .. 'due:' .. found[1], id)
end
followups(p, id, found[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 1
";

/// ARGV: prefix, consumer, min idle ms, now. Takes over entries whose replica stopped renewing them and
/// queues their jobs again. Returns how many jobs were queued again.
const RECLAIM: &str = r"
local p, consumer, now = ARGV[1], ARGV[2], ARGV[4]
local claimed = redis.call('XAUTOCLAIM', p .. 'stream', 'workers', consumer, ARGV[3], '0-0', 'COUNT', 100)
local n = 0
for _, entry in ipairs(claimed[2]) do
  if entry[2] then
    n = n + retake(p, entry[2][2], entry[1], now)
  end
end
return n
";

/// ARGV: prefix, consumer, now. At startup: this replica's entries from before it stopped, queued again.
const RECLAIM_OWN: &str = r"
local p, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for _, pending in ipairs(redis.call('XPENDING', p .. 'stream', 'workers', '-', '+', 1000, consumer)) do
  local entry = redis.call('XRANGE', p .. 'stream', pending[1], pending[1])
  if #entry > 0 then
    n = n + retake(p, entry[1][2][2], pending[1], now)
  else
    redis.call('XACK', p .. 'stream', 'workers', pending[1])
  end
end
return n
";

/// ARGV: prefix, now, lease ms, users to pass over (comma-separated), hosts to pass over (one per line). Takes
/// the earliest due callback of a user, users in turn by their earliest, for a while (a lease), passing over
/// users and hosts with as many callbacks in flight as they may have. Returns {record, status, secret}.
const TAKE_CALLBACK: &str = r"
local p, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local users, hosts = {}, {}
for user in string.gmatch(ARGV[4], '[^,]+') do
  users[user] = true
end
for host in string.gmatch(ARGV[5], '[^\n]+') do
  hosts[host] = true
end
for _, user in ipairs(redis.call('ZRANGEBYSCORE', p .. 'cbturns', '-inf', now, 'LIMIT', 0, 100)) do
  if not users[user] then
    local queue = p .. 'cb:' .. user
    local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    if #head == 0 or tonumber(head[2]) > now then
      callback_turn(p, user)
    else
      local found = redis.call('HMGET', p .. 'job:' .. head[1], 'record', 'status', 'secret', 'cbhost')
      if not found[1] then
        redis.call('ZREM', queue, head[1])
        callback_turn(p, user)
      elseif not hosts[found[4] or ''] then
        redis.call('ZADD', queue, now + lease, head[1])
        callback_turn(p, user)
        return {found[1], found[2], found[3] or ''}
      end
    end
  end
end
return false
";

/// ARGV: prefix. Moves up to 500 callbacks from the single queue of earlier versions into the users' own.
/// Returns how many it moved.
const MOVE_CALLBACKS: &str = r"
local p = ARGV[1]
local entries = redis.call('ZRANGE', p .. 'callbacks', 0, 499, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id, due = entries[i], entries[i + 1]
  local user = redis.call('HGET', p .. 'job:' .. id, 'user')
  if user then
    redis.call('ZADD', p .. 'cb:' .. user, due, id)
    callback_turn(p, user)
  end
  redis.call('ZREM', p .. 'callbacks', id)
end
return #entries / 2
";

/// ARGV: prefix, user, status or '', limit, after (a job id) or '', most entries to look at. The user's newest
/// jobs after `after`: {next, record, status, ...}, where `next` is '' when nothing may follow, else the id the
/// next page starts after. Looks at a bounded number of entries, whatever the user keeps.
const LIST: &str = r"
local p, user, status, limit, after = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local index = p .. 'user:' .. user
local start = 0
if after ~= '' then
  local rank = redis.call('ZREVRANK', index, after)
  if not rank then
    return {''}
  end
  start = rank + 1
end
local ids = redis.call('ZREVRANGE', index, start, start + tonumber(ARGV[6]) - 1)
local out = {''}
local taken, last = 0, ''
for _, id in ipairs(ids) do
  local found = redis.call('HMGET', p .. 'job:' .. id, 'record', 'status')
  if found[1] and (status == '' or found[2] == status) then
    if taken == limit then
      out[1] = last
      return out
    end
    table.insert(out, found[1])
    table.insert(out, found[2])
    taken = taken + 1
  end
  last = id
end
if #ids == tonumber(ARGV[6]) then
  out[1] = last
end
return out
";

/// ARGV: prefix, before, max. Removes up to `max` finished jobs that ended before `before`; one whose callback
/// is still due leaves the index until its callback is settled (which puts it back). Returns how many it
/// looked at.
const PURGE: &str = r"
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'finished', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local job = p .. 'job:' .. id
  local found = redis.call('HMGET', job, 'user', 'status', 'idem', 'rlen')
  if not (found[1] and redis.call('ZSCORE', p .. 'cb:' .. found[1], id)) then
    if found[1] then
      redis.call('ZREM', p .. 'user:' .. found[1], id)
      if found[3] and found[3] ~= '' then
        redis.call('DEL', p .. 'idem:' .. found[1] .. ':' .. found[3])
      end
      redis.call('HINCRBY', p .. 'counts', found[2], -1)
      add(p .. 'kept:' .. found[1], 'bytes', -tonumber(found[4] or '0'))
      redis.call('DEL', job)
    end
  end
  redis.call('ZREM', p .. 'finished', id)
end
return #ids
";

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
    pub fn new(redis: Arc<Redis>, replica: String, cap: usize, clock: Clock) -> RedisJobs {
        let (handoff, claimed) = mpsc::channel(1);
        RedisJobs {
            redis,
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

    pub async fn insert(
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
    pub async fn waiting(&self, user: UserId) -> Result<u64, JobsError> {
        let kept = format!("{}kept:{user}", self.prefix);
        let waiting: Option<u64> = self
            .redis
            .run(|mut c| async move { redis::cmd("HGET").arg(kept).arg("waiting").query_async(&mut c).await })
            .await?;
        Ok(waiting.unwrap_or(0))
    }

    pub async fn get(&self, user: UserId, id: Uuid) -> Result<Option<JobRecord>, JobsError> {
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
    pub async fn list(
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

    pub async fn update(&self, record: &JobRecord, expected: JobStatus) -> Result<bool, JobsError> {
        self.write(&self.scripts.update, record, expected.as_str()).await
    }

    pub async fn finish(&self, record: &JobRecord, lease: Option<&str>) -> Result<bool, JobsError> {
        let entry = lease.ok_or_else(|| JobsError::Internal("a Redis job finished without its entry".into()))?;
        let written = self.write(&self.scripts.finish, record, entry).await;
        // The user's slot is free again: the fetcher looks at once.
        self.work.notify_one();
        written
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

    /// The next job for a worker of this replica; waits until there is one.
    pub async fn claim(&self) -> Claimed {
        let mut claimed = self.claimed.lock().await;
        claimed.recv().await.expect("the fetcher runs as long as the queue")
    }

    /// Fetches jobs for this replica's workers, renews their leases, takes over dead replicas' jobs.
    pub fn maintain(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let jobs = Arc::clone(self);
        async move {
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

    /// The next callback due that `gate` admits, taken for a while (leased); waits until there is one.
    pub async fn due_callback(&self, gate: &CallbackGate) -> DueCallback {
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
    pub fn callback_done(&self) {
        self.callback_work.notify_one();
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

    /// Removes up to `page` finished jobs older than `before`. How many were looked at.
    pub async fn purge(&self, before: UnixMillis, page: usize) -> Result<usize, JobsError> {
        let script = &self.scripts.purge;
        let n: usize = self
            .redis
            .run(|mut c| async move { script.arg(&self.prefix).arg(before).arg(page).invoke_async(&mut c).await })
            .await?;
        Ok(n)
    }

    pub async fn counts(&self) -> Result<HashMap<JobStatus, u64>, JobsError> {
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
