//! The provider side of a call: the platform's keys, the circuit breaker, and sending with retries within
//! the deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use secrecy::SecretString;

use super::{Reply, Retries};
use crate::domain::llm::{Api, LlmRequest};
use crate::domain::model_chains::ModelChains;
use crate::domain::provider::{PerProvider, Provider};
use crate::domain::retry::{backoff, requested_wait};
use crate::domain::upstream::{UpstreamFailure, classify};
use crate::domain::user::UserId;
use crate::metrics;
use crate::providers::{Answer, ForwardError, ProviderClient};
use crate::services::circuit_breaker::{Circuit, CircuitBreaker, ProviderHealth};

const MAX_ATTEMPTS: u32 = 4;
const RATE_LIMIT_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(8));
const OUTAGE_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(4));
/// Error bodies are short JSON; a provider sending more is cut off here.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The platform's own provider keys (`INTERNAL_<ID>_API_KEY`).
pub type InternalKeys = PerProvider<Option<SecretString>>;

/// Why a call to the provider failed, for the gateway to act on.
pub(super) enum CallFailure {
    Key(UpstreamFailure),
    RateLimited(Duration),
    Outage(Option<Duration>, &'static str),
    Timeout,
}

pub struct Upstream {
    providers: ProviderClient,
    internal_keys: InternalKeys,
    breaker: CircuitBreaker,
    /// Retries of one call stop here, so a caller is never kept waiting much longer.
    deadline: Duration,
    fallbacks: Fallbacks,
}

/// What is tried when a provider cannot serve a call.
#[derive(Debug, Clone, Default)]
pub struct Fallbacks {
    /// The operator's aliases and fallback chains: the next model.
    pub chains: Arc<ModelChains>,
    /// In BYOK-first mode, a user's key the provider rate limits falls back to credits.
    pub rate_limited_own_keys: bool,
}

impl Upstream {
    pub fn new(
        providers: ProviderClient,
        internal_keys: InternalKeys,
        breaker: CircuitBreaker,
        deadline: Duration,
        fallbacks: Fallbacks,
    ) -> Self {
        Upstream { providers, internal_keys, breaker, deadline, fallbacks }
    }

    pub(super) fn fallbacks(&self) -> &Fallbacks {
        &self.fallbacks
    }

    pub(super) fn internal_key(&self, provider: Provider) -> Option<&SecretString> {
        self.internal_keys.get(provider).as_ref()
    }

    /// What the platform's circuit for `provider` says, and when it may close.
    pub fn health(&self, provider: Provider, now: Instant) -> (ProviderHealth, Option<Duration>) {
        self.breaker.health(provider, now)
    }

    pub fn is_open(&self, provider: Provider, now: Instant) -> bool {
        self.breaker.is_open(provider, now)
    }

    /// Calls the provider, retrying rate limits (honouring the provider's wait) and outages with full-jitter
    /// backoff, all within the deadline. Nothing has reached the client yet, so retrying is always safe here.
    pub(super) async fn send(
        &self,
        api: Api,
        key: &str,
        circuit: Circuit,
        user: UserId,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Reply, CallFailure> {
        let (body, stream) = (&request.body, request.stream);
        let provider = request.provider;
        let started = Instant::now();
        let mut last_wait = None;
        let attempts = if retries == Retries::WithinDeadline { MAX_ATTEMPTS } else { 1 };
        for attempt in 0..attempts {
            if let Err(remaining) = self.breaker.admit(circuit, Instant::now()) {
                return Err(CallFailure::Outage(Some(remaining), "circuit open"));
            }
            let sent = Instant::now();
            let answer = self.providers.forward(provider, api, key, body.clone(), stream).await;
            let attempt_took = sent.elapsed();
            let failure = match answer {
                Ok(response) if response.status().is_success() => {
                    metrics::upstream_attempt(provider, "ok", attempt_took);
                    self.breaker.record_success(circuit);
                    return Ok(Reply::Success(response));
                }
                Ok(response) => {
                    let status = response.status();
                    let now = time::OffsetDateTime::now_utc();
                    let wait = requested_wait(|name| response.headers().get(name).and_then(|v| v.to_str().ok()), now);
                    let content_type = response.headers().get(CONTENT_TYPE).cloned();
                    let body = read_capped(response).await;
                    let failure = classify(provider, status.as_u16(), &body);
                    if status.is_redirection() {
                        tracing::warn!(%provider, status = status.as_u16(),
                            "the provider answered a redirect, which is never followed: check its base URL");
                    }
                    metrics::upstream_attempt(provider, failure.as_str(), attempt_took);
                    match failure {
                        UpstreamFailure::Rejected => {
                            self.breaker.record_success(circuit);
                            return Ok(Reply::ProviderError { status, content_type, body });
                        }
                        UpstreamFailure::RateLimited => {
                            self.breaker.record_success(circuit);
                            let wait = wait.unwrap_or_else(|| jitter(attempt, RATE_LIMIT_BACKOFF));
                            last_wait = Some(wait);
                            if attempt + 1 == attempts || started.elapsed() + wait > self.deadline {
                                return Err(CallFailure::RateLimited(wait));
                            }
                            tracing::info!(%provider, attempt, wait_ms = wait.as_millis() as u64, "provider rate limited; retrying");
                            metrics::upstream_retry(provider, "rate_limited");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        UpstreamFailure::Outage => "provider error",
                        key_failure => {
                            self.breaker.record_success(circuit);
                            return Err(CallFailure::Key(key_failure));
                        }
                    }
                }
                Err(ForwardError::Timeout) if !stream => {
                    // Still generating, most likely: says nothing about the provider, and retrying would only
                    // start the same long generation again.
                    metrics::upstream_attempt(provider, "generation_timeout", attempt_took);
                    self.breaker.record_inconclusive(circuit);
                    tracing::warn!(%provider, "non-streaming call timed out while the provider generated");
                    return Err(CallFailure::Timeout);
                }
                Err(error) => {
                    metrics::upstream_attempt(provider, "unreachable", attempt_took);
                    tracing::warn!(%provider, %error, "provider call failed");
                    "provider unreachable"
                }
            };
            self.breaker.record_outage(circuit, user, Instant::now());
            let wait = jitter(attempt, OUTAGE_BACKOFF);
            if attempt + 1 == attempts || started.elapsed() + wait > self.deadline {
                return Err(CallFailure::Outage(None, failure));
            }
            tracing::info!(%provider, attempt, reason = failure, "provider failed; retrying");
            metrics::upstream_retry(provider, "outage");
            tokio::time::sleep(wait).await;
        }
        Err(CallFailure::RateLimited(last_wait.unwrap_or(RATE_LIMIT_BACKOFF.0)))
    }
}

fn jitter(attempt: u32, (base, cap): (Duration, Duration)) -> Duration {
    backoff(attempt, base, cap, fastrand::f64())
}

async fn read_capped(answer: Answer) -> Bytes {
    let mut body = Vec::new();
    let mut chunks = answer.into_stream();
    while let Ok(Some(chunk)) = chunks.next().await {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    Bytes::from(body)
}
