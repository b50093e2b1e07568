//! A worker: takes the next due job, runs it through the gateway (one attempt; the queue decides when to try
//! again), and records what the attempt came to. Callbacks go out from their own loop.

use std::sync::Arc;

use serde_json::Value;

use super::{Claimed, DueCallback, Jobs};
use crate::domain::error_code::Code;
use crate::domain::jobs::{Attempt, CallbackState, JobError, JobStatus, parse_api};
use crate::domain::llm::Api;
use crate::domain::provider::Provider;
use crate::domain::routing::Refusal;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::services::callers::CallerError;
use crate::services::gateway::{GatewayError, Keeping, Retries};
use crate::services::key_vault::VaultError;
use crate::services::standing::ContextError;

impl Jobs {
    pub(super) async fn work(self: Arc<Self>) {
        loop {
            let claimed = self.queue.claim().await;
            self.run(claimed).await;
        }
    }

    async fn run(&self, claimed: Claimed) {
        let Claimed { mut record, request, lease, renewal } = claimed;
        let attempt = async {
            match parse_api(&record.api) {
                Some(api) => self.attempt(record.user, api, request).await,
                None => {
                    let error = JobError::new(Code::InvalidRequest, "The job names an API this version does not run.");
                    (Attempt::Fail { error }, None)
                }
            }
        };
        let lease_lost = async {
            match &renewal {
                Some(renewal) => renewal.lost().await,
                None => std::future::pending().await,
            }
        };
        let (attempt, usage) = tokio::select! {
            attempt = attempt => attempt,
            // Another replica may take the job over: stop here (the call is dropped, its credit hold released).
            () = lease_lost => return,
        };
        let outcome = match &attempt {
            Attempt::Succeeded { .. } => "succeeded",
            Attempt::Retry { .. } => "retry",
            Attempt::Pause { .. } => "paused",
            Attempt::Fail { .. } => "failed",
        };
        crate::metrics::job_attempt(outcome);
        record.settle(attempt, self.clock.now(), &self.config.retry, fastrand::f64());
        // A succeeded job is never run again, so its usage record is written with its result (or before it):
        // a crash in between cannot leave a served, uncharged call.
        let finished = self.queue.finish(&record, lease.as_deref(), usage.as_ref()).await;
        if finished.is_err()
            && let Some(usage) = usage
        {
            // The call was served all the same: its record goes the usual way.
            self.gateway.keep(usage);
        }
        drop(renewal);
        match finished {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(job = %record.id, "job cancelled (or taken over) while it ran; its result is not kept");
                return;
            }
            Err(error) => {
                // Still queued where it is kept: it runs again after a restart (one replica) or once its lease
                // lapses (Redis).
                tracing::error!(job = %record.id, %error, "cannot record a job's attempt; it will run again later");
                return;
            }
        }
        tracing::info!(job = %record.id, user = %record.user, status = record.status.as_str(), attempts = record.attempts,
            code = record.error.as_ref().map(|e| e.code.as_str()), "job attempt recorded");
        if record.status == JobStatus::Failed && record.notify_on_failure {
            self.notifier.job_failed(record.user, record.id, &record.model, record.error.as_ref()).await;
        }
    }

    /// One call through the gateway, what it means for the job, and a succeeded call's usage record (for the
    /// queue to write with the job's result).
    async fn attempt(&self, user: UserId, api: Api, body: bytes::Bytes) -> (Attempt, Option<UsageRecord>) {
        let request = match self.gateway.parse(api, &body) {
            Ok(request) => request,
            Err(error) => {
                return (Attempt::Fail { error: JobError::new(Code::InvalidRequest, error.to_string()) }, None);
            }
        };
        match self.gateway.complete(user, api, &request, Retries::None, Keeping::Caller).await {
            Ok(completed) => {
                let answer = serde_json::from_slice(&completed.body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&completed.body).into_owned()));
                match completed.charged {
                    Some((usage_id, cost)) => (
                        Attempt::Succeeded { result: answer, source: completed.source, cost, usage_id },
                        completed.usage,
                    ),
                    None => (
                        Attempt::Fail {
                            error: JobError {
                                code: Code::ProviderRefusedRequest.as_str().into(),
                                message: format!(
                                    "{} refused the request itself (HTTP {}); its answer is in provider_answer. \
                                 Nothing was charged.",
                                    request.provider.display_name(),
                                    completed.status.as_u16()
                                ),
                                provider_status: Some(completed.status.as_u16()),
                                provider_answer: Some(answer),
                            },
                        },
                        None,
                    ),
                }
            }
            Err(error) => (self.judge(user, request.provider, error).await, None),
        }
    }

    /// Whether a failed call is worth another attempt, waits for the user's key, or cannot succeed.
    async fn judge(&self, user: UserId, provider: Provider, error: GatewayError) -> Attempt {
        use GatewayError as G;
        let asked = match &error {
            G::RateLimited { retry_after }
            | G::OwnKeyRateLimited { retry_after }
            | G::ProviderRateLimited { retry_after, .. } => Some(Some(*retry_after)),
            G::TooManyCalls(_) => Some(None),
            G::Unavailable { retry_after, .. } => Some(*retry_after),
            // A timeout is charged and would most likely time out again: not retried (a broken-off answer is,
            // once the backoff has passed).
            G::Busy | G::CutOff(_) => Some(None),
            G::Context(ContextError::Flags(_)) => Some(None),
            G::Context(ContextError::Caller(CallerError::Directus(e))) if e.is_outage() => Some(None),
            G::Vault(VaultError::Directus(e)) if e.is_outage() => Some(None),
            _ => None,
        };
        let blocked = match &error {
            G::KeyInvalid(_) | G::KeyQuotaExhausted(_) => None,
            // Routing refuses before calling once the key is marked: the job waits for the key all the same.
            G::Refused(
                Refusal::ByokKeyRequired { .. } | Refusal::NoCreditsOrKey { .. } | Refusal::InsufficientCredits { .. },
            ) => self.blocking_key(user, provider).await,
            _ => None,
        };
        let pause = blocked.is_some() || matches!(error, G::KeyInvalid(_) | G::KeyQuotaExhausted(_));
        let error = JobError::of(&blocked.unwrap_or(error));
        match (asked, pause) {
            (_, true) => Attempt::Pause { error },
            (Some(asked), false) => Attempt::Retry { error, asked },
            (None, false) => Attempt::Fail { error },
        }
    }

    /// The problem of the user's key for `provider`, if the provider refused it or found it out of quota.
    async fn blocking_key(&self, user: UserId, provider: Provider) -> Option<GatewayError> {
        use crate::domain::api_key::KeyStatus;
        let read = self.callers.profile(user).await.ok()?;
        read.profile.keys.iter().filter(|k| k.provider == provider).find_map(|k| match k.status {
            KeyStatus::Invalid => Some(GatewayError::KeyInvalid(provider)),
            KeyStatus::QuotaExceeded => Some(GatewayError::KeyQuotaExhausted(provider)),
            _ => None,
        })
    }

    /// Sends due callbacks, several at once, and records each outcome. Users take turns, and a user or a host
    /// with as many callbacks in flight as it may have waits, so one slow receiver cannot hold every sender.
    pub(super) async fn send_callbacks(self: Arc<Self>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.callbacks_at_once));
        loop {
            // A slot first: a callback taken (with Redis, leased) is sent at once, not after others.
            let slot = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
            let gate = &self.callback_gate;
            let due = self.queue.due_callback(gate).await;
            let (user, id) = (due.record.user, due.record.id);
            let host = due.record.callback.as_ref().map(|c| c.host()).unwrap_or_default();
            let in_flight = gate.enter(user, &host);
            let jobs = Arc::clone(&self);
            tokio::spawn(async move {
                jobs.send_callback(due).await;
                drop((in_flight, slot));
                jobs.callback_done(user, id);
            });
        }
    }

    async fn send_callback(&self, due: DueCallback) {
        let DueCallback { mut record, secret } = due;
        let Some(signer) = self.signing_secret(&record, secret) else {
            // Only if JOB_CALLBACK_SECRET (or FLOWS_TOKEN) was removed after the job was submitted.
            tracing::error!(job = %record.id, "a callback has no signing secret; it is not sent");
            record.callback_abandoned("no signing secret is configured for this callback");
            if let Err(error) = self.queue.update(&record, record.status).await {
                tracing::warn!(job = %record.id, %error, "cannot record an abandoned callback");
            }
            return;
        };
        let outcome = self.callbacks.deliver(&record, &signer).await;
        let expected = record.status;
        record.callback_attempted(outcome, self.clock.now());
        let state = record.callback.as_ref().map(|c| c.state);
        let label = match state {
            Some(CallbackState::Delivered) => "delivered",
            Some(CallbackState::Failed) => "failed",
            _ => "retry",
        };
        crate::metrics::job_callback(label);
        tracing::info!(job = %record.id, outcome = label, "job callback sent");
        if let Err(error) = self.queue.update(&record, expected).await {
            tracing::warn!(job = %record.id, %error, "cannot record a callback's outcome; it may be sent again");
        }
    }
}
