//! Durable jobs: LLM calls the app queues instead of waiting for, run in the background by workers in every
//! replica through the same gateway as live calls (routing matrix, credentials, credit holds, limits,
//! accounting). Rate limits and outages put a job back with backoff for hours; an invalid or exhausted key
//! pauses the user's jobs until they save or verify a working key; anything else fails at once with the
//! gateway's coded error. A finished job is posted to the app's callback URL, signed (Standard Webhooks).
//!
//! One interface, storage chosen by configuration as for the other shared state: [`embedded`] keeps jobs in
//! the replica's own store; with `REDIS_URL`, [`redis`] keeps them in Redis, where every replica's workers
//! take from one queue and a dead replica's jobs are taken over.

/// Calls the same method on whichever store is configured (declared before the modules that use it).
mod callbacks;
pub mod embedded;
pub mod redis;
mod schedule;
mod worker;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

use self::embedded::EmbeddedJobs;
use self::redis::{RedisJobs, Renewal};
use super::callers::CallerDirectory;
use super::gateway::Gateway;
use super::in_flight::{InFlight, Permit};
use super::notifier::Notifier;
use super::standing::ContextError;
use crate::accounting::Outbox;
use crate::clock::Clock;
use crate::config::{JobsConfig, UserCaps};
use crate::crypto::webhook_signature::WebhookSecret;
use crate::domain::credit_book::UnixMillis;
use crate::domain::error_code::{Code, Coded};
use crate::domain::jobs::{Callback, CallbackState, CallbackUrl, JobRecord, JobStatus, RetryPolicy, millis};
use crate::domain::llm::{Api, LlmRequest, LlmRequestError};
use crate::domain::provider::Provider;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::shared::redis::{Redis, RedisFailure};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("no such job")]
    NotFound,
    /// Only failed or paused jobs can be retried.
    #[error("the job is {}", .0.as_str())]
    NotRetryable(JobStatus),
    /// A finished job cannot be cancelled.
    #[error("the job is {}", .0.as_str())]
    Finished(JobStatus),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] RedisFailure),
    /// The user keeps as many jobs, or as many bytes of them, as they may.
    #[error("{0}")]
    Full(JobCap),
    /// The account cannot queue jobs (unknown, inactive, or unreadable while Directus is down).
    #[error(transparent)]
    Account(#[from] ContextError),
    #[error("{0}")]
    Internal(String),
}

/// Which of a user's caps a new job would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JobCap {
    #[error("the user has {0} jobs waiting, the most allowed")]
    Waiting(u64),
    #[error("the user's jobs hold {0} bytes of requests, the most allowed")]
    StoredBytes(u64),
}

impl Coded for JobCap {
    fn code(&self) -> Code {
        match self {
            JobCap::Waiting(_) => Code::JobQueueFull,
            JobCap::StoredBytes(_) => Code::JobStorageFull,
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            JobCap::Waiting(most) => format!(
                "You have {most} background requests waiting, the most allowed. Wait for some to finish, or cancel \
                 some, then submit again."
            ),
            JobCap::StoredBytes(most) => format!(
                "Your background requests hold {} MiB, the most kept for one account. Finished ones are removed \
                 after their retention; cancel waiting ones or submit smaller requests.",
                most / (1024 * 1024)
            ),
        }
        .into()
    }

    /// Jobs finish in seconds to minutes.
    fn retry_after(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
}

impl Coded for JobsError {
    fn code(&self) -> Code {
        match self {
            JobsError::NotFound => Code::JobNotFound,
            JobsError::NotRetryable(_) => Code::JobNotRetryable,
            JobsError::Finished(_) => Code::JobFinished,
            JobsError::Full(cap) => cap.code(),
            JobsError::Account(error) => error.code(),
            JobsError::Store(_) | JobsError::Redis(_) | JobsError::Internal(_) => Code::JobsUnavailable,
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            JobsError::NotRetryable(status) => {
                format!("The job is {}; only failed or paused jobs can be retried.", status.as_str()).into()
            }
            JobsError::Finished(status) => format!("The job is {} already.", status.as_str()).into(),
            JobsError::Full(cap) => cap.message(),
            JobsError::Account(error) => error.message(),
            _ => self.code().message().into(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            JobsError::Full(cap) => cap.retry_after(),
            _ => None,
        }
    }
}

impl UserCaps {
    /// Whether a user keeping `waiting` jobs of `bytes` may add one of `adding` bytes.
    fn admit(&self, waiting: u64, bytes: u64, adding: u64) -> Result<(), JobCap> {
        if waiting >= self.waiting {
            return Err(JobCap::Waiting(self.waiting));
        }
        if bytes.saturating_add(adding) > self.stored_bytes {
            return Err(JobCap::StoredBytes(self.stored_bytes));
        }
        Ok(())
    }
}

/// One page of a user's jobs, newest first, and where the next page starts when there may be more.
pub struct Page {
    pub jobs: Vec<JobRecord>,
    pub next: Option<Uuid>,
}

/// What `POST /v1/jobs` made.
pub enum Inserted {
    New(JobRecord),
    /// The same `Idempotency-Key` was used before: that job, unchanged, and its callback secret if it has one.
    Existing(JobRecord, Option<SecretString>),
}

/// A job a worker holds, with its request.
pub struct Claimed {
    pub record: JobRecord,
    pub request: Bytes,
    /// The Redis backend's proof of holding the job (its stream entry); the embedded one needs none.
    pub lease: Option<String>,
    /// Keeps the Redis lease alive while the job runs.
    pub renewal: Option<Renewal>,
}

/// Who may be sent a callback now: not a user or host with as many callbacks in flight as it may have (in
/// this replica), so one user's slow receiver holds only its share of the senders.
pub struct CallbackGate {
    users: Arc<InFlight<UserId>>,
    hosts: Arc<InFlight<String>>,
}

impl CallbackGate {
    fn new(config: &JobsConfig) -> CallbackGate {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        CallbackGate {
            users: InFlight::new(cap(config.callbacks_per_user)),
            hosts: InFlight::new(cap(config.callbacks_per_host)),
        }
    }

    pub fn admits(&self, user: UserId, host: &str) -> bool {
        !self.users.is_full(&user) && !self.hosts.is_full(&host.to_owned())
    }

    /// The users and hosts with as many in flight as they may have.
    pub fn full(&self) -> (Vec<UserId>, Vec<String>) {
        (self.users.full_keys(), self.hosts.full_keys())
    }

    /// Counts a callback of `user` to `host` in flight until the permits are dropped.
    fn enter(&self, user: UserId, host: &str) -> (Option<Permit<UserId>>, Option<Permit<String>>) {
        (self.users.try_acquire(&user), self.hosts.try_acquire(&host.to_owned()))
    }
}

/// A callback due for delivery: the job and its per-job secret, if it has one.
pub struct DueCallback {
    pub record: JobRecord,
    pub secret: Option<SecretString>,
}

/// Where jobs are kept: `embedded` (this replica's store) or `redis` (every replica's).
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync {
    /// `embedded` or `redis`, for operators.
    fn backend(&self) -> &'static str;

    /// Stores a new job unless the user's `caps` are reached, or finds the job their idempotency key made.
    async fn insert(
        &self,
        record: JobRecord,
        request: Bytes,
        secret: Option<String>,
        caps: UserCaps,
    ) -> Result<Inserted, JobsError>;

    /// How many of the user's jobs are waiting (not finished).
    async fn waiting(&self, user: UserId) -> Result<u64, JobsError>;

    async fn get(&self, user: UserId, id: Uuid) -> Result<Option<JobRecord>, JobsError>;

    /// The user's jobs, newest first, from `after` (the previous page's `next`) on.
    async fn list(
        &self,
        user: UserId,
        status: Option<JobStatus>,
        limit: usize,
        after: Option<Uuid>,
    ) -> Result<Page, JobsError>;

    /// Writes `record` if the job is still `expected` (and not changed since it was read): whether it was.
    async fn update(&self, record: &JobRecord, expected: JobStatus) -> Result<bool, JobsError>;

    /// A worker's attempt is recorded, with the `lease` [`JobQueue::claim`] handed out (none for `embedded`):
    /// false when the job was cancelled or taken over meanwhile. The attempt's `usage` record (a succeeded
    /// call's) is in the usage outbox no later than the result, kept or not: a crash in between cannot leave a
    /// served job uncharged.
    async fn finish(
        &self,
        record: &JobRecord,
        lease: Option<&str>,
        usage: Option<&UsageRecord>,
    ) -> Result<bool, JobsError>;

    /// The next due job, claimed for a worker of this replica; waits until there is one.
    async fn claim(&self) -> Claimed;

    /// The next callback due, of a user and host `gate` lets through; waits until there is one.
    async fn due_callback(&self, gate: &CallbackGate) -> DueCallback;

    /// A callback handed out for sending is done with.
    fn callback_done(&self, user: UserId, id: Uuid);

    /// Removes up to `page` jobs finished before `before`: how many.
    async fn purge(&self, before: UnixMillis, page: usize) -> Result<usize, JobsError>;

    /// Jobs by status.
    async fn counts(&self) -> Result<HashMap<JobStatus, u64>, JobsError>;

    /// What the queue does in the background while the process runs (Redis: fetching, lease renewal, taking
    /// over dead replicas' jobs).
    fn maintain(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// A job as submitted, already parsed.
pub struct NewJob {
    pub api: Api,
    pub request: LlmRequest,
    pub metadata: Option<Value>,
    pub idempotency_key: Option<String>,
    /// What was submitted, for telling a replay from another request under the same key.
    pub fingerprint: String,
    pub callback: Option<NewCallback>,
    pub notify_on_failure: bool,
}

/// Where a new job's completion goes.
pub enum NewCallback {
    /// The app's URL: signed with `JOB_CALLBACK_SECRET`, or a new secret returned to the caller.
    App(CallbackUrl),
    /// The Directus Flows bundle's endpoint, for a job a Flow queued: reached on any address, signed with the
    /// secret derived from `FLOWS_TOKEN` (never stored with the job).
    Flows,
}

/// What signs a callback. A secret of the job's own (or of the Flows endpoint) speaks for that job alone; the
/// shared `JOB_CALLBACK_SECRET` signs every user's callbacks, so the payload it signs names the user too.
pub enum Signer {
    Own(WebhookSecret),
    Shared(WebhookSecret),
}

/// Where jobs queued by Flows report back, and the secret both ends derive from the Flows credential.
pub struct FlowCallbacks {
    pub url: CallbackUrl,
    pub secret: WebhookSecret,
}

pub struct Submitted {
    pub record: JobRecord,
    /// The new job's own callback secret (`whsec_...`), to be shown to the caller once.
    pub callback_secret: Option<SecretString>,
    pub created: bool,
}

/// What jobs run with: the gateway for their calls, the callers' profiles (is the account active, is the key
/// a paused job waits for usable), and the notifier for failures users asked to hear of.
pub struct JobServices {
    pub gateway: Arc<Gateway>,
    pub callers: Arc<CallerDirectory>,
    pub notifier: Arc<Notifier>,
}

pub struct Jobs {
    queue: Arc<dyn JobQueue>,
    gateway: Arc<Gateway>,
    callers: Arc<CallerDirectory>,
    notifier: Arc<Notifier>,
    clock: Clock,
    config: JobsConfig,
    callbacks: callbacks::CallbackClient,
    callback_gate: CallbackGate,
    /// Set when `FLOWS_TOKEN` is.
    flows: Option<FlowCallbacks>,
}

impl Jobs {
    /// Jobs in the replica's own store, or with `redis` in Redis; succeeded calls' usage records go to
    /// `outbox` with their results.
    pub fn new(
        store: Arc<Store>,
        outbox: Arc<Outbox>,
        redis: Option<Arc<Redis>>,
        services: JobServices,
        clock: Clock,
        config: JobsConfig,
        flows: Option<FlowCallbacks>,
    ) -> Result<Jobs, JobsError> {
        let queue: Arc<dyn JobQueue> = match redis {
            Some(redis) => {
                Arc::new(RedisJobs::new(redis, outbox, store.replica_id()?, config.per_user_cap, clock.clone()))
            }
            None => Arc::new(EmbeddedJobs::open(store, outbox, &config, clock.clone())?),
        };
        let callbacks = callbacks::CallbackClient::new(config.allow_internal_callbacks, config.callback_timeout);
        let callback_gate = CallbackGate::new(&config);
        let JobServices { gateway, callers, notifier } = services;
        Ok(Jobs { queue, gateway, callers, notifier, clock, config, callbacks, callback_gate, flows })
    }

    /// Where jobs are kept: `embedded` (this replica's store) or `redis`.
    pub fn backend(&self) -> &'static str {
        self.queue.backend()
    }

    /// Whether jobs a Flow queues can report back to Directus (`FLOWS_TOKEN` is set).
    pub fn reports_to_flows(&self) -> bool {
        self.flows.is_some()
    }

    /// The secret a callback is signed with: the Flows one for the Flows endpoint, else the job's own, else the
    /// configured app secret.
    fn signing_secret(&self, record: &JobRecord, own: Option<SecretString>) -> Option<Signer> {
        if record.callback.as_ref().is_some_and(|c| c.trusted) {
            return self.flows.as_ref().map(|f| Signer::Own(f.secret.clone()));
        }
        match own {
            Some(own) => WebhookSecret::parse(own.expose_secret()).ok().map(Signer::Own),
            None => self.config.callback_secret.clone().map(Signer::Shared),
        }
    }

    pub fn allows_internal_callbacks(&self) -> bool {
        self.config.allow_internal_callbacks
    }

    /// Queues a job, or with an `Idempotency-Key` used before, finds the job it made.
    pub async fn submit(&self, user: UserId, job: NewJob) -> Result<Submitted, JobsError> {
        // A suspended account queues nothing (its jobs would only fail later, each stored meanwhile).
        let caller = self.callers.profile(user).await.map_err(ContextError::Caller)?;
        if !caller.profile.active {
            return Err(ContextError::AccountInactive.into());
        }
        let now = self.clock.now();
        let mut record = JobRecord::new(user, job.api, job.request.model.clone(), now, &self.config.retry);
        record.metadata = job.metadata;
        record.idempotency_key = job.idempotency_key;
        record.fingerprint = Some(job.fingerprint);
        record.notify_on_failure = job.notify_on_failure;
        let mut secret = None;
        let target = match job.callback {
            Some(NewCallback::App(url)) => {
                if self.config.callback_secret.is_none() {
                    secret = Some(new_secret());
                }
                Some((url, false))
            }
            Some(NewCallback::Flows) => self.flows.as_ref().map(|flows| (flows.url.clone(), true)),
            None => None,
        };
        record.callback = target.map(|(url, trusted)| Callback {
            url: url.as_str().to_owned(),
            state: CallbackState::Waiting,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            trusted,
        });
        let stored_secret = secret.as_ref().map(|s: &SecretString| s.expose_secret().to_owned());
        let caps = self.config.caps;
        let inserted = self.queue.insert(record, job.request.body.clone(), stored_secret, caps).await?;
        Ok(match inserted {
            Inserted::New(record) => {
                tracing::info!(job = %record.id, %user, api = %record.api, "job queued");
                Submitted { record, callback_secret: secret, created: true }
            }
            // The same caller asking again (the key is the user's): their job's secret again, in case the first
            // answer was lost.
            Inserted::Existing(record, secret) => Submitted { record, callback_secret: secret, created: false },
        })
    }

    pub async fn get(&self, user: UserId, id: Uuid) -> Result<JobRecord, JobsError> {
        self.queue.get(user, id).await?.ok_or(JobsError::NotFound)
    }

    /// The user's jobs, newest first, from `after` (the previous page's `next`) on.
    pub async fn list(
        &self,
        user: UserId,
        status: Option<JobStatus>,
        limit: usize,
        after: Option<Uuid>,
    ) -> Result<Page, JobsError> {
        self.queue.list(user, status, limit, after).await
    }

    /// Queues a failed or paused job again, now, with a fresh give-up time. A failed job waits again, so it
    /// needs room under the user's cap.
    pub async fn retry(&self, user: UserId, id: Uuid) -> Result<JobRecord, JobsError> {
        let waiting = self.queue.waiting(user).await?;
        if waiting >= self.config.caps.waiting && self.get(user, id).await?.status == JobStatus::Failed {
            return Err(JobsError::Full(JobCap::Waiting(self.config.caps.waiting)));
        }
        let change = |record: &mut JobRecord, now, policy: &RetryPolicy| record.requeue(now, policy);
        self.change(user, id, JobStatus::can_retry, JobsError::NotRetryable, change).await
    }

    /// Cancels a queued, paused or running job (a running call finishes, but its result is not kept).
    pub async fn cancel(&self, user: UserId, id: Uuid) -> Result<JobRecord, JobsError> {
        self.change(user, id, JobStatus::can_cancel, JobsError::Finished, |record, now, _| record.cancel(now)).await
    }

    async fn change(
        &self,
        user: UserId,
        id: Uuid,
        allowed: fn(JobStatus) -> bool,
        refused: fn(JobStatus) -> JobsError,
        change: impl Fn(&mut JobRecord, i64, &RetryPolicy),
    ) -> Result<JobRecord, JobsError> {
        // A worker may move the job between the read and the write: read again and decide again.
        for _ in 0..5 {
            let mut record = self.get(user, id).await?;
            let expected = record.status;
            if !allowed(expected) {
                return Err(refused(expected));
            }
            change(&mut record, self.clock.now(), &self.config.retry);
            if self.queue.update(&record, expected).await? {
                return Ok(record);
            }
        }
        Err(JobsError::Internal("the job kept changing; retry".into()))
    }

    /// A job's request body, read as the gateway reads a live call's.
    pub fn parse(&self, api: Api, raw: &Bytes) -> Result<LlmRequest, LlmRequestError> {
        self.gateway.parse(api, raw)
    }

    /// The user saved or verified a working key for `provider`: their jobs paused on it are queued again.
    pub async fn resume(&self, user: UserId, provider: Provider) {
        let paused = match self.all_paused(user).await {
            Ok(paused) => paused,
            Err(error) => {
                tracing::warn!(%user, %error, "cannot read the user's paused jobs; they stay paused");
                return;
            }
        };
        let mut resumed = 0;
        for mut record in paused {
            let served_by = |api| crate::domain::llm::target(api, &record.model, self.gateway.prices()).0;
            if crate::domain::jobs::parse_api(&record.api).map(served_by) != Some(provider) {
                continue;
            }
            record.requeue(self.clock.now(), &self.config.retry);
            match self.queue.update(&record, JobStatus::Paused).await {
                Ok(true) => resumed += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(job = %record.id, %error, "cannot resume a paused job"),
            }
        }
        if resumed > 0 {
            tracing::info!(%user, %provider, resumed, "the user's key works again; paused jobs resumed");
        }
    }

    /// Every paused job of the user, read page by page.
    async fn all_paused(&self, user: UserId) -> Result<Vec<JobRecord>, JobsError> {
        let (mut paused, mut after) = (Vec::new(), None);
        loop {
            let page = self.list(user, Some(JobStatus::Paused), 200, after).await?;
            paused.extend(page.jobs);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(paused),
            }
        }
    }

    /// A callback handed out for sending is done with: its user's and host's places are free again.
    fn callback_done(&self, user: UserId, id: Uuid) {
        self.queue.callback_done(user, id);
    }

    /// Starts the workers, the callback sender, the clean-up and the job metrics.
    pub fn start(self: &Arc<Self>) {
        for _ in 0..self.config.workers {
            tokio::spawn(Arc::clone(self).work());
        }
        tokio::spawn(Arc::clone(self).send_callbacks());
        tokio::spawn(Arc::clone(self).upkeep());
        tokio::spawn(Arc::clone(&self.queue).maintain());
    }

    /// Removes finished jobs past their retention and publishes job counts, every so often.
    async fn upkeep(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(Duration::from_secs(15));
        let mut last_purge = None;
        loop {
            ticks.tick().await;
            match self.counts().await {
                Ok(counts) => {
                    for status in JobStatus::ALL {
                        crate::metrics::jobs(status, counts.get(&status).copied().unwrap_or(0));
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot count jobs"),
            }
            let now = self.clock.now();
            if last_purge.is_none_or(|at| now - at >= 3_600_000) {
                last_purge = Some(now);
                self.purge(now - millis(self.config.retention)).await;
            }
        }
    }

    /// Removes finished jobs that ended before `before`, a bounded page at a time, until none is left.
    async fn purge(&self, before: UnixMillis) {
        let mut removed = 0;
        loop {
            match self.queue.purge(before, PURGE_PAGE).await {
                Ok(n) => {
                    removed += n;
                    if n < PURGE_PAGE {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot remove old jobs; will retry");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "finished jobs past their retention removed");
        }
    }

    /// Jobs by status (what `/metrics` shows).
    pub async fn counts(&self) -> Result<HashMap<JobStatus, u64>, JobsError> {
        self.queue.counts().await
    }
}

/// Finished jobs removed by one store call.
const PURGE_PAGE: usize = 500;

/// A record as both stores keep it: JSON.
fn encode(record: &JobRecord) -> Result<String, JobsError> {
    serde_json::to_string(record).map_err(|e| JobsError::Internal(e.to_string()))
}

fn decode(json: &str) -> Result<JobRecord, JobsError> {
    serde_json::from_str(json).map_err(|e| JobsError::Internal(format!("unreadable job record: {e}")))
}

/// A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
fn new_secret() -> SecretString {
    use aes_gcm::aead::rand_core::RngCore;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aes_gcm::aead::OsRng.fill_bytes(bytes.as_mut());
    SecretString::from(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes.as_ref())))
}

/// A wake-up from `notify`, registered now: a notification between this call and the wait is not missed.
fn armed(notify: &tokio::sync::Notify) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
    let mut notified = Box::pin(notify.notified());
    notified.as_mut().enable();
    notified
}
