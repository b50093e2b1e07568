//! Durable jobs: LLM calls queued to run in the background. The rules here are pure: which states a job
//! moves between, when the next attempt is due, and which callback addresses the sidecar may post to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::credit_book::UnixMillis;
use super::error_code::{Code, Coded};
use super::llm::Api;
use super::money::Cents;
use super::retry::backoff;
use super::routing::Source;
use super::user::UserId;

/// Where a job is in its life. `Succeeded`, `Failed` and `Cancelled` are final (a failed job can be
/// retried by its user, which queues it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its first or next attempt (`next_attempt_at`).
    Queued,
    /// A worker is calling the provider.
    Running,
    /// The user's key for the provider is invalid or out of quota: waits until the user saves or verifies a
    /// working key.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// A user may retry a job that failed or is paused; anything else is running or waiting already.
    pub fn can_retry(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Paused)
    }

    pub fn can_cancel(self) -> bool {
        self.is_waiting()
    }

    /// Not finished: the job counts against its user's cap on waiting jobs.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Paused | JobStatus::Running)
    }
}

/// The API a job calls, named as in `POST /v1/jobs` (`"chat.completions"` or `"messages"`).
pub fn api_name(api: Api) -> &'static str {
    match api {
        Api::ChatCompletions => "chat.completions",
        Api::Messages => "messages",
        Api::Responses => "responses",
        Api::Embeddings => "embeddings",
        Api::CountTokens => "messages.count_tokens",
    }
}

pub fn parse_api(raw: &str) -> Option<Api> {
    [Api::ChatCompletions, Api::Messages, Api::Responses, Api::Embeddings].into_iter().find(|api| api_name(*api) == raw)
}

/// The coded error a job failed with (or, while it still retries, last failed with): the same codes and
/// messages as the live gateway's error answers. When the provider refused the request itself, its status and
/// answer are kept too, as the live gateway would have passed them on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub provider_answer: Option<serde_json::Value>,
}

impl JobError {
    /// A coded error of the sidecar's own (the provider's status and answer are for its refusals).
    pub fn new(code: Code, message: impl Into<String>) -> JobError {
        JobError {
            code: code.as_str().to_owned(),
            message: message.into(),
            provider_status: None,
            provider_answer: None,
        }
    }

    /// What the live gateway would have answered with for `error`.
    pub fn of(error: &impl Coded) -> JobError {
        JobError::new(error.code(), error.message())
    }
}

/// How failed attempts are spaced, and for how long a job keeps trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub cap: Duration,
    /// After this long since the job was queued, a job that still fails fails for good.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(2),
            cap: Duration::from_secs(10 * 60),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// When a job that failed its `attempts`-th attempt at `now` is tried again, or `None` when that would be
    /// past its give-up time. The provider's or the circuit's requested wait (`asked`) is a floor; the
    /// exponential part is jittered over its upper half (`unit` in [0, 1)) so a thousand jobs refused at once
    /// do not come back at once, yet none comes back almost immediately.
    pub fn next_attempt(
        &self,
        attempts: u32,
        asked: Option<Duration>,
        now: UnixMillis,
        queued_at: UnixMillis,
        unit: f64,
    ) -> Option<UnixMillis> {
        let bound = backoff(attempts.saturating_sub(1), self.first, self.cap, 1.0);
        let jittered = bound / 2 + backoff(attempts.saturating_sub(1), self.first, self.cap, unit) / 2;
        let wait = asked.map_or(jittered, |asked| asked.max(jittered));
        let at = now.saturating_add(millis(wait));
        (at <= queued_at.saturating_add(millis(self.give_up_after))).then_some(at)
    }
}

/// A job as stored, and (less `user` and `idempotency_key`) as its user sees it; its request and callback
/// secret are kept beside it, never in it. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: Uuid,
    pub user: UserId,
    /// `"chat.completions"` or `"messages"` ([`api_name`]).
    pub api: String,
    pub model: String,
    pub status: JobStatus,
    /// Bumped by every stored change: writes compare it, so one based on an older reading never lands.
    #[serde(default)]
    pub revision: u64,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// When a queued job is due.
    pub next_attempt_at: Option<UnixMillis>,
    /// A job still failing after this fails for good.
    pub give_up_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// A digest of what was submitted (API, request, callback, metadata): a replay with the same
    /// `Idempotency-Key` must carry the same submit. Absent on jobs stored by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Tell the user through Directus when the job fails for good.
    #[serde(default)]
    pub notify_on_failure: bool,
    /// Why it failed, or (while it retries or is paused) why the last attempt did not succeed.
    #[serde(default)]
    pub error: Option<JobError>,
    /// The provider's complete answer.
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default, with = "super::money::exact_option")]
    pub cost_cents: Option<Cents>,
    /// The usage record of the successful call (`request_id` in Directus).
    #[serde(default)]
    pub usage_id: Option<Uuid>,
    #[serde(default)]
    pub callback: Option<Callback>,
}

/// Where a job's completion is posted, and how that went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Callback {
    pub url: String,
    pub state: CallbackState,
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_at: Option<UnixMillis>,
    /// What the last failed delivery got (a status or a network error), never the app's answer body.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Configured by the operator (Directus's own endpoint for Flows), not chosen by a user: may be internal.
    #[serde(default)]
    pub trusted: bool,
}

impl Callback {
    /// The host callbacks go to: what a slow receiver is known by, so it holds only its share of senders.
    pub fn host(&self) -> String {
        Url::parse(&self.url).ok().and_then(|url| url.host_str().map(str::to_owned)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// The job has not finished.
    Waiting,
    /// Due at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every retry failed.
    Failed,
}

/// What a finished attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Succeeded {
        result: Value,
        source: Source,
        cost: Cents,
        usage_id: Uuid,
    },
    /// Worth trying again (rate limit, outage, busy); `asked`: the wait the provider or circuit named.
    Retry {
        error: JobError,
        asked: Option<Duration>,
    },
    /// The user's key is invalid or out of quota.
    Pause {
        error: JobError,
    },
    /// Trying again cannot help (the request itself, no credits and no key, ...).
    Fail {
        error: JobError,
    },
}

impl JobRecord {
    /// A job accepted at `now`, due at once.
    pub fn new(user: UserId, api: Api, model: String, now: UnixMillis, policy: &RetryPolicy) -> JobRecord {
        JobRecord {
            id: Uuid::now_v7(),
            user,
            api: api_name(api).to_owned(),
            model,
            status: JobStatus::Queued,
            revision: 0,
            attempts: 0,
            created_at: now,
            updated_at: now,
            next_attempt_at: Some(now),
            give_up_at: now.saturating_add(millis(policy.give_up_after)),
            finished_at: None,
            metadata: None,
            idempotency_key: None,
            fingerprint: None,
            notify_on_failure: false,
            error: None,
            result: None,
            source: None,
            cost_cents: None,
            usage_id: None,
            callback: None,
        }
    }

    /// Applies an attempt's outcome (the attempt is counted). `unit` jitters the next attempt's time.
    pub fn settle(&mut self, attempt: Attempt, now: UnixMillis, policy: &RetryPolicy, unit: f64) {
        self.attempts += 1;
        self.updated_at = now;
        self.next_attempt_at = None;
        match attempt {
            Attempt::Succeeded { result, source, cost, usage_id } => {
                self.error = None;
                (self.result, self.source, self.cost_cents, self.usage_id) =
                    (Some(result), Some(source), Some(cost), Some(usage_id));
                self.finish(JobStatus::Succeeded, now);
            }
            Attempt::Retry { error, asked } => {
                let queued_at = self.give_up_at.saturating_sub(millis(policy.give_up_after));
                match policy.next_attempt(self.attempts, asked, now, queued_at, unit) {
                    Some(at) => {
                        self.status = JobStatus::Queued;
                        self.next_attempt_at = Some(at);
                        self.error = Some(error);
                    }
                    None => {
                        self.error = Some(JobError {
                            message: format!(
                                "Gave up after {} attempts over {} hours. Last error: {}",
                                self.attempts,
                                policy.give_up_after.as_secs() / 3600,
                                error.message
                            ),
                            ..error
                        });
                        self.finish(JobStatus::Failed, now);
                    }
                }
            }
            Attempt::Pause { error } => {
                self.status = JobStatus::Paused;
                self.error = Some(error);
            }
            Attempt::Fail { error } => {
                self.error = Some(error);
                self.finish(JobStatus::Failed, now);
            }
        }
    }

    fn finish(&mut self, status: JobStatus, now: UnixMillis) {
        self.status = status;
        self.finished_at = Some(now);
        if let Some(callback) = &mut self.callback {
            callback.state = CallbackState::Pending;
            callback.next_attempt_at = Some(now);
        }
    }

    /// The user retried a failed or paused job: queued now, with a fresh give-up time.
    pub fn requeue(&mut self, now: UnixMillis, policy: &RetryPolicy) {
        self.status = JobStatus::Queued;
        self.updated_at = now;
        self.next_attempt_at = Some(now);
        self.give_up_at = now.saturating_add(millis(policy.give_up_after));
        self.finished_at = None;
        if let Some(callback) = &mut self.callback {
            callback.state = CallbackState::Waiting;
            (callback.attempts, callback.next_attempt_at, callback.last_error) = (0, None, None);
        }
    }

    /// Whether a submit with this job's `Idempotency-Key` asks for this same job: the same fingerprint, or for
    /// a job stored before fingerprints, the same API and model.
    pub fn replayed_by(&self, api: &str, model: &str, fingerprint: &str) -> bool {
        match &self.fingerprint {
            Some(stored) => stored == fingerprint,
            None => self.api == api && self.model == model,
        }
    }

    /// Cancelled by its user: no callback (the app asked for it).
    pub fn cancel(&mut self, now: UnixMillis) {
        self.status = JobStatus::Cancelled;
        self.updated_at = now;
        self.next_attempt_at = None;
        self.finished_at = Some(now);
    }

    /// A callback delivery's outcome: `Ok` when the app took it, else what went wrong.
    pub fn callback_attempted(&mut self, outcome: Result<(), String>, now: UnixMillis) {
        let Some(callback) = &mut self.callback else { return };
        callback.attempts += 1;
        match outcome {
            Ok(()) => {
                callback.state = CallbackState::Delivered;
                callback.next_attempt_at = None;
                callback.last_error = None;
            }
            Err(error) => {
                callback.last_error = Some(error);
                match CALLBACK_RETRIES.get(callback.attempts as usize - 1) {
                    Some(wait) => callback.next_attempt_at = Some(now.saturating_add(millis(*wait))),
                    None => {
                        callback.state = CallbackState::Failed;
                        callback.next_attempt_at = None;
                    }
                }
            }
        }
    }

    /// What the job's user sees (`GET /v1/jobs/{id}`, the callback's `data`): times in RFC 3339, and neither
    /// the user id nor the idempotency key.
    pub fn view(&self) -> Value {
        // A trusted target is the platform's own (Directus, for Flows): not shown to users.
        let callback = self.callback.as_ref().map(|c| {
            json!({"url": (!c.trusted).then_some(&c.url), "state": c.state, "attempts": c.attempts,
                   "next_attempt_at": c.next_attempt_at.map(rfc3339), "last_error": c.last_error})
        });
        json!({
            "id": self.id,
            "status": self.status,
            "api": self.api,
            "model": self.model,
            "attempts": self.attempts,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "next_attempt_at": self.next_attempt_at.map(rfc3339),
            "give_up_at": rfc3339(self.give_up_at),
            "finished_at": self.finished_at.map(rfc3339),
            "metadata": self.metadata,
            "result": self.result,
            "error": self.error,
            "source": self.source,
            "cost_cents": self.cost_cents,
            "usage_id": self.usage_id,
            "callback": callback,
        })
    }

    /// The callback cannot be sent at all (`reason`): given up without trying again.
    pub fn callback_abandoned(&mut self, reason: &str) {
        if let Some(callback) = &mut self.callback {
            callback.state = CallbackState::Failed;
            callback.next_attempt_at = None;
            callback.last_error = Some(reason.to_owned());
        }
    }

    /// When the callback is due, if it is.
    pub fn callback_due(&self) -> Option<UnixMillis> {
        self.callback.as_ref().filter(|c| c.state == CallbackState::Pending).and_then(|c| c.next_attempt_at)
    }
}

/// Callback deliveries that fail are retried after these waits, then given up.
pub const CALLBACK_RETRIES: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(3 * 3600),
];

pub fn rfc3339(at: UnixMillis) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The app's address for a job's completion callback. Only `http(s)`, no credentials in the URL, and (unless
/// the operator allows private targets) never a loopback, private, link-local or otherwise internal address:
/// a callback must not become a way to make the sidecar post into the platform's own network. Names are
/// checked again when they are resolved at delivery, so DNS cannot route around this check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(Url);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    #[error("callback_url must be an absolute http or https URL of at most 2,048 characters")]
    Malformed,
    #[error("callback_url may not carry a user name or password; sign-in details go in the callback secret")]
    Credentials,
    #[error("callback_url points to a loopback, private or internal address, which callbacks may not reach")]
    Internal,
}

impl CallbackUrl {
    pub fn parse(raw: &str, allow_internal: bool) -> Result<CallbackUrl, CallbackUrlError> {
        if raw.len() > 2048 {
            return Err(CallbackUrlError::Malformed);
        }
        let url = Url::parse(raw).map_err(|_| CallbackUrlError::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(CallbackUrlError::Malformed);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackUrlError::Credentials);
        }
        let internal = match url.host() {
            None => return Err(CallbackUrlError::Malformed),
            Some(Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost") || name.ends_with(".internal")
            }
        };
        if internal && !allow_internal {
            return Err(CallbackUrlError::Internal);
        }
        Ok(CallbackUrl(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918, ULA), link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, reserved or unspecified, also when an IPv4
/// address hides inside an IPv6 one (mapped, NAT64).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    let [_, _, o2, o3, o4, o5, .., a, b, c, d] = ip.octets();
    // Well-known NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) addresses carry an IPv4 address at the end;
    // 6to4 (2002::/16) carries one after the prefix.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || (segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
    {
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    if segments[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(o2, o3, o4, o5));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        // Site-local (deprecated, still routed inside some networks).
        || (segments[0] & 0xffc0) == 0xfec0
        // Local-use NAT64 (64:ff9b:1::/48) may translate to any IPv4 address, internal ones included.
        || (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1)
        // Teredo tunnels, documentation, discard-only.
        || (segments[0] == 0x2001 && (segments[1] == 0 || segments[1] == 0x0db8))
        || segments[..4] == [0x100, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_know_what_may_follow() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(JobStatus::parse("done"), None);
        assert!(JobStatus::Failed.can_retry() && JobStatus::Paused.can_retry());
        assert!(!JobStatus::Succeeded.can_retry() && !JobStatus::Queued.can_retry());
        assert!(!JobStatus::Succeeded.can_cancel() && !JobStatus::Cancelled.can_cancel());
    }

    #[test]
    fn api_names_are_the_ones_the_jobs_api_takes() {
        assert_eq!(parse_api("chat.completions"), Some(Api::ChatCompletions));
        assert_eq!(parse_api("messages"), Some(Api::Messages));
        assert_eq!(parse_api("responses"), Some(Api::Responses));
        assert_eq!(parse_api("embeddings"), Some(Api::Embeddings));
        assert_eq!(parse_api("completions"), None);
        assert_eq!(api_name(Api::Messages), "messages");
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy::default();
        let at = |attempts, unit| policy.next_attempt(attempts, None, 1_000_000, 1_000_000, unit).unwrap() - 1_000_000;
        assert_eq!(at(1, 0.0), 1_000);
        assert_eq!(at(1, 0.999_999), 1_999);
        assert_eq!(at(3, 0.0), 4_000);
        assert_eq!(at(30, 0.0), 300_000, "capped at 10 minutes, half of it fixed");
        assert_eq!(at(30, 1.0), 600_000);
    }

    #[test]
    fn the_providers_wait_is_a_floor_and_the_job_gives_up_after_a_day() {
        let policy = RetryPolicy::default();
        let asked = Some(Duration::from_secs(90));
        assert_eq!(policy.next_attempt(1, asked, 5_000, 0, 0.5), Some(95_000));
        let day = 24 * 3_600_000;
        assert_eq!(policy.next_attempt(1, None, day - 10_000, 0, 0.0), Some(day - 9_000));
        assert_eq!(policy.next_attempt(1, None, day - 500, 0, 0.0), None);
    }

    #[test]
    fn callback_urls_must_be_plain_http_without_credentials() {
        assert!(CallbackUrl::parse("https://app.example.com/hooks/jobs?x=1", false).is_ok());
        assert_eq!(CallbackUrl::parse("ftp://app.example.com/", false), Err(CallbackUrlError::Malformed));
        assert_eq!(CallbackUrl::parse("/relative", false), Err(CallbackUrlError::Malformed));
        assert_eq!(CallbackUrl::parse("mailto:a@example.com", false), Err(CallbackUrlError::Malformed));
        assert_eq!(CallbackUrl::parse("https://user:pw@app.example.com/", false), Err(CallbackUrlError::Credentials));
        let long = format!("https://app.example.com/{}", "a".repeat(2100));
        assert_eq!(CallbackUrl::parse(&long, false), Err(CallbackUrlError::Malformed));
    }

    #[test]
    fn internal_callback_targets_are_refused_unless_allowed() {
        for internal in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://api.localhost/",
            "http://metadata.google.internal/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[::a9fe:a9fe]/",
            "http://[fec0::1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert_eq!(CallbackUrl::parse(internal, false), Err(CallbackUrlError::Internal), "{internal}");
            assert!(CallbackUrl::parse(internal, true).is_ok(), "{internal}");
        }
        for public in ["http://93.184.215.14/", "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/"] {
            assert!(CallbackUrl::parse(public, false).is_ok(), "{public}");
        }
    }
}
