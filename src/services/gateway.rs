//! The LLM gateway: decides who pays (the routing matrix), reserves credits for calls they pay, picks the
//! credentials, calls the provider with retries and a circuit breaker, learns from key failures (mark,
//! notify, fall back where the matrix allows), and hands the answer back with what is needed to charge for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::callers::{CallContext, CallerDirectory, CallerProfile, ContextError, call_context};
use super::circuit_breaker::{Circuit, CircuitBreaker};
use super::flag_store::FlagStore;
use super::in_flight::{InFlight, Permit};
use super::key_vault::{KeyVault, VaultError};
use super::meter::{Charge, Meter};
use super::notifier::{KeyProblem, Notifier};
use super::rate_limit::RateLimiter;
use super::reservations::{Hold, Reservations, Shortfall};
use crate::config::TierLimits;
use crate::domain::flags::RoutingMode;
use crate::domain::llm::{Api, LlmRequest, estimated_usage, usage_from_response};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::provider_key::ProviderKey;
use crate::domain::retry::{backoff, requested_wait};
use crate::domain::routing::{self, Refusal, Source};
use crate::domain::upstream::{UpstreamFailure, classify};
use crate::domain::user::UserId;
use crate::metrics;
use crate::providers::{ForwardError, ProviderClient};
use crate::shared::bus::{Bus, Event};

const MAX_ATTEMPTS: u32 = 4;
const RATE_LIMIT_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(8));
const OUTAGE_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(4));
/// Error bodies are short JSON; a provider sending more is cut off here.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The platform's own provider keys (`INTERNAL_OPENAI_API_KEY`, `INTERNAL_ANTHROPIC_API_KEY`).
#[derive(Debug, Clone, Default)]
pub struct InternalKeys {
    pub openai: Option<SecretString>,
    pub anthropic: Option<SecretString>,
}

impl InternalKeys {
    fn get(&self, provider: Provider) -> Option<&SecretString> {
        match provider {
            Provider::OpenAi => self.openai.as_ref(),
            Provider::Anthropic => self.anthropic.as_ref(),
        }
    }
}

enum Credential {
    Byok(ProviderKey),
    /// The platform's key, and the credits reserved for the call.
    Internal(SecretString, Hold),
}

impl Credential {
    fn expose(&self) -> &str {
        match self {
            Credential::Byok(key) => key.expose(),
            Credential::Internal(key, _) => key.expose_secret(),
        }
    }

    fn source(&self) -> Source {
        match self {
            Credential::Byok(_) => Source::Byok,
            Credential::Internal(..) => Source::Internal,
        }
    }

    /// The circuit this credential's calls count in.
    fn circuit(&self, user: UserId, provider: Provider) -> Circuit {
        match self {
            Credential::Byok(_) => Circuit::UserKey(user, provider),
            Credential::Internal(..) => Circuit::Platform(provider),
        }
    }

    fn into_hold(self) -> Option<Hold> {
        match self {
            Credential::Byok(_) => None,
            Credential::Internal(_, hold) => Some(hold),
        }
    }
}

/// What the provider answered, ready for the HTTP layer.
pub enum Reply {
    /// 2xx: stream or read it, then charge with `charge`.
    Success(reqwest::Response),
    /// The provider refused the request itself (e.g. an unknown model): passed through as is, not charged.
    ProviderError { status: StatusCode, content_type: Option<HeaderValue>, body: Bytes },
}

/// How hard one call tries before it reports a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// A caller is waiting: retry rate limits and outages within the deadline.
    WithinDeadline,
    /// A queued job: one attempt, and the queue decides when to try again (hours, not seconds).
    None,
}

/// A non-streaming call, read to the end and charged.
pub struct Completed {
    pub source: Source,
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    /// The usage record and cost of a successful call; `None` when the provider refused the request (which
    /// is not charged).
    pub charged: Option<(Uuid, Cents)>,
    pub staleness: Option<&'static str>,
}

/// What a call holds while it runs: one of the upstream call slots, and one of its user's.
pub struct CallSlot {
    _upstream: OwnedSemaphorePermit,
    _user: Permit<UserId>,
}

pub struct Forwarded {
    pub source: Source,
    pub reply: Reply,
    pub charge: Charge,
    /// Held until the answer has been passed on.
    pub slot: CallSlot,
    /// What the decision rested on that may be out of date (see [`CallContext::staleness`]).
    pub staleness: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Our own per-tier limit on internal-credit calls.
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    /// Our own per-tier limit on calls with the user's own keys.
    #[error("own-key calls rate limited")]
    OwnKeyRateLimited { retry_after: Duration },
    /// The user has as many calls running as one user may.
    #[error("the user has {0} calls running")]
    TooManyCalls(u32),
    /// The provider kept answering 429 until the deadline.
    #[error("provider rate limited")]
    ProviderRateLimited { provider: Provider, retry_after: Duration },
    #[error("the user's key was refused by the provider")]
    KeyInvalid(Provider),
    #[error("the user's provider account is out of quota")]
    KeyQuotaExhausted(Provider),
    /// Outage, circuit open, or the platform key missing or refused: AI is unavailable, the rest of the app is not.
    #[error("{provider} unavailable: {reason}")]
    Unavailable { provider: Provider, retry_after: Option<Duration>, reason: &'static str },
    /// Every upstream call slot stayed taken for the whole slot wait.
    #[error("all upstream call slots are busy")]
    Busy,
    /// A non-streaming call was still generating when the generation timeout hit.
    #[error("{0} did not finish answering in time")]
    Timeout(Provider),
    /// Priority, flex or scale processing asked of a call that credits would pay: priced apart from the
    /// standard rates the price table has.
    #[error("{0} special service tier on credits")]
    SpecialServiceTier(Provider),
    /// The provider's answer broke off before it was complete.
    #[error("{0}'s answer was cut off")]
    CutOff(Provider),
    #[error(transparent)]
    Vault(VaultError),
}

enum CallFailure {
    Key(UpstreamFailure),
    RateLimited(Duration),
    Outage(Option<Duration>, &'static str),
    Timeout,
}

/// Why no credential could be had for a source.
enum CredentialError {
    /// The stored key cannot be opened or is gone: it counts as refused.
    KeyUnusable,
    /// The credits left do not cover the call's estimate.
    Shortfall(Shortfall),
    Other(GatewayError),
}

pub struct Gateway {
    pub flags: Arc<FlagStore>,
    pub callers: Arc<CallerDirectory>,
    pub vault: Arc<KeyVault>,
    pub providers: ProviderClient,
    pub internal_keys: InternalKeys,
    pub meter: Arc<Meter>,
    pub reservations: Arc<Reservations>,
    pub notifier: Notifier,
    /// Tells the other replicas when a key failed, so they stop routing to it too.
    pub bus: Arc<Bus>,
    pub breaker: CircuitBreaker,
    pub limiter: RateLimiter,
    /// Calls with the user's own keys: limited too (high by default), apart from credit calls.
    pub own_key_limiter: RateLimiter,
    pub tier_limits: TierLimits,
    pub upstream_slots: Arc<Semaphore>,
    /// Calls running per user, so one user cannot take every upstream slot.
    pub user_calls: Arc<InFlight<UserId>>,
    /// How long a call waits for an upstream slot before it is refused as busy.
    pub slot_wait: Duration,
    pub vault_configured: bool,
    /// Retries of one call stop here, so a caller is never kept waiting much longer.
    pub deadline: Duration,
}

impl Gateway {
    /// A non-streaming call from start to end: decided, paid, answered in full and charged. The live
    /// gateway's JSON answers and the job workers both come through here.
    pub async fn complete(
        &self,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Completed, GatewayError> {
        let forwarded = self.call(user, api, request, retries).await?;
        let (source, staleness) = (forwarded.source, forwarded.staleness);
        let completed =
            |status, content_type, body, charged| Completed { source, status, content_type, body, charged, staleness };
        match forwarded.reply {
            Reply::ProviderError { status, content_type, body } => Ok(completed(status, content_type, body, None)),
            Reply::Success(upstream) => {
                let (status, content_type) =
                    (upstream.status(), upstream.headers().get(reqwest::header::CONTENT_TYPE).cloned());
                let body = match upstream.bytes().await {
                    Ok(body) => body,
                    Err(_) => {
                        // The answer was generated (its headers come last) and broke off on the way.
                        self.charge_unanswered(forwarded.charge, request);
                        return Err(GatewayError::CutOff(api.provider()));
                    }
                };
                let usage = usage_from_response(api, &body).unwrap_or_else(|| {
                    tracing::info!("response without usage; charged by estimate");
                    estimated_usage(forwarded.charge.estimated_prompt_tokens, body.len())
                });
                let request_id = forwarded.charge.request_id;
                let cost = self.meter.record(forwarded.charge, usage);
                Ok(completed(status, content_type, body, Some((request_id, cost))))
            }
        }
    }

    /// A call whose answer never arrived whole (the generation timeout, an answer broken off) was generated
    /// all the same, and the provider bills it: it is charged its whole budget (see
    /// [`crate::domain::pricing::ModelPrice::whole_budget`]), at most what its hold reserved, never nothing.
    fn charge_unanswered(&self, charge: Charge, request: &LlmRequest) {
        let provider = charge.api.provider();
        let (price, _) = self.meter.prices().price(provider, &request.model);
        let cost = self.meter.record(charge, price.whole_budget(&request.budget));
        tracing::info!(%provider, %cost, "no complete answer; the call is charged its whole budget");
    }

    /// Decides, pays and calls; the answer is left for the caller to stream or read ([`Gateway::complete`]).
    pub async fn call(
        &self,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Forwarded, GatewayError> {
        let provider = api.provider();
        let context = call_context(&self.flags, &self.callers, user).await?;
        let staleness = context.staleness();
        let CallContext { flags, caller } = context;
        let (flags, caller) = (flags.snapshot.flags, caller.profile);
        let estimate = self.meter.prices().estimate(provider, &request.model, &request.budget);
        let available = self.reservations.available(user, caller.ledger).await;
        let mut view = caller.for_provider(provider, available, estimate);
        let decision = routing::decide(&flags, &view, provider, self.vault_configured)?;
        // BYOK-first falls back to credits when the key fails mid-call, exactly as if it had been unusable.
        let can_fall_back = decision.mode == RoutingMode::ByokFirst && view.can_pay();
        let slot = self.call_slot(user).await?;

        let mut source = decision.source;
        let mut key_failure = None;
        loop {
            if source == Source::Internal && request.special_service_tier {
                return Err(GatewayError::SpecialServiceTier(provider));
            }
            let credential = match self.credential(user, &caller, provider, source, estimate).await {
                Ok(credential) => credential,
                Err(CredentialError::KeyUnusable) => {
                    self.key_failed(user, provider, UpstreamFailure::InvalidKey).await;
                    if can_fall_back {
                        key_failure = Some(UpstreamFailure::InvalidKey);
                        source = Source::Internal;
                        continue;
                    }
                    return Err(GatewayError::KeyInvalid(provider));
                }
                Err(CredentialError::Shortfall(shortfall)) => {
                    if let Some(failure) = key_failure {
                        return Err(key_error(provider, failure));
                    }
                    // Concurrent calls took what routing counted on: decide again with what is left.
                    view.available = shortfall.available;
                    let again = routing::decide(&flags, &view, provider, self.vault_configured)?;
                    if again.source == source {
                        return Err(Refusal::InsufficientCredits { needed: estimate, available: view.available }.into());
                    }
                    source = again.source;
                    continue;
                }
                Err(CredentialError::Other(error)) => return Err(error),
            };
            let charge = |credential: Credential| Charge {
                // Time-ordered: the outbox's and Directus's unique indexes grow at one end.
                request_id: Uuid::now_v7(),
                user,
                api,
                model: request.model.clone(),
                source: credential.source(),
                estimated_prompt_tokens: request.budget.prompt_tokens,
                hold: credential.into_hold(),
            };
            match self.send_with_retries(api, &credential, user, request, retries).await {
                Ok(reply) => {
                    let charge = charge(credential);
                    return Ok(Forwarded { source: charge.source, reply, charge, slot, staleness });
                }
                Err(CallFailure::Key(failure)) if source == Source::Byok => {
                    self.key_failed(user, provider, failure).await;
                    if can_fall_back {
                        tracing::info!(%user, %provider, ?failure, "user's key failed; falling back to credits");
                        key_failure = Some(failure);
                        source = Source::Internal;
                        continue;
                    }
                    return Err(key_error(provider, failure));
                }
                Err(CallFailure::Key(failure)) => {
                    tracing::error!(%provider, ?failure, "the platform's internal key was refused by the provider");
                    return Err(GatewayError::Unavailable {
                        provider,
                        retry_after: None,
                        reason: "platform key refused",
                    });
                }
                Err(CallFailure::RateLimited(retry_after)) => {
                    return Err(GatewayError::ProviderRateLimited { provider, retry_after });
                }
                Err(CallFailure::Outage(retry_after, reason)) => {
                    return Err(GatewayError::Unavailable { provider, retry_after, reason });
                }
                Err(CallFailure::Timeout) => {
                    // Still generating when the wait ended: billed by the provider all the same.
                    self.charge_unanswered(charge(credential), request);
                    return Err(GatewayError::Timeout(provider));
                }
            }
        }
    }

    /// One of the user's call slots (refused at once past their cap), then one of the bounded upstream call
    /// slots; waiting is bounded too, so a flood of slow calls turns into quick, clear refusals instead of a
    /// growing queue.
    async fn call_slot(&self, user: UserId) -> Result<CallSlot, GatewayError> {
        let mine = self.user_calls.try_acquire(&user).ok_or_else(|| {
            metrics::rate_limited("calls_in_flight");
            GatewayError::TooManyCalls(self.user_calls.cap())
        })?;
        let slots = Arc::clone(&self.upstream_slots);
        match tokio::time::timeout(self.slot_wait, slots.acquire_owned()).await {
            Ok(permit) => Ok(CallSlot { _upstream: permit.expect("the semaphore is never closed"), _user: mine }),
            Err(_) => {
                tracing::warn!(wait_secs = self.slot_wait.as_secs(), "no upstream call slot became free");
                Err(GatewayError::Busy)
            }
        }
    }

    /// BYOK: the caller's cached envelope, opened in memory (no Directus round trip per call). Internal: the
    /// platform's key within the tier's rate limit, with the call's estimate reserved from the user's credits.
    async fn credential(
        &self,
        user: UserId,
        caller: &CallerProfile,
        provider: Provider,
        source: Source,
        estimate: Cents,
    ) -> Result<Credential, CredentialError> {
        match source {
            Source::Byok => {
                let stored = caller.usable_key(provider).ok_or(CredentialError::KeyUnusable)?;
                let per_minute = self.tier_limits.own_keys_per_minute(caller.tier);
                self.own_key_limiter.acquire(user, per_minute).await.map_err(|retry_after| {
                    metrics::rate_limited("own_keys");
                    CredentialError::Other(GatewayError::OwnKeyRateLimited { retry_after })
                })?;
                self.vault.open_sealed(user, provider, &stored.envelope).map(Credential::Byok).map_err(|error| {
                    match error {
                        VaultError::Unusable(_) | VaultError::NotFound => CredentialError::KeyUnusable,
                        other => CredentialError::Other(GatewayError::Vault(other)),
                    }
                })
            }
            Source::Internal => {
                let key = self.internal_keys.get(provider).ok_or_else(|| {
                    tracing::error!(%provider, "no internal key configured for the provider");
                    CredentialError::Other(GatewayError::Unavailable {
                        provider,
                        retry_after: None,
                        reason: "no platform key configured",
                    })
                })?;
                self.limiter.acquire(user, self.tier_limits.per_minute(caller.tier)).await.map_err(|retry_after| {
                    metrics::rate_limited("tier");
                    CredentialError::Other(GatewayError::RateLimited { retry_after })
                })?;
                let hold = self
                    .reservations
                    .reserve(user, caller.ledger, estimate)
                    .await
                    .map_err(CredentialError::Shortfall)?;
                Ok(Credential::Internal(key.clone(), hold))
            }
        }
    }

    /// Marks the key, tells the user once per incident, and makes routing stop picking the key at once.
    async fn key_failed(&self, user: UserId, provider: Provider, failure: UpstreamFailure) {
        if let Err(error) = self.vault.mark(user, provider, failure).await {
            tracing::warn!(%user, %provider, %error, "could not record the key's failure");
        }
        let problem = match failure {
            UpstreamFailure::QuotaExhausted => KeyProblem::QuotaExhausted,
            _ => KeyProblem::Invalid,
        };
        self.notifier.key_problem(user, provider, problem).await;
        self.callers.forget(user).await;
        self.bus.publish(Event::CallerChanged(user)).await;
    }

    /// Calls the provider, retrying rate limits (honouring the provider's wait) and outages with full-jitter
    /// backoff, all within the deadline. Nothing has reached the client yet, so retrying is always safe here.
    async fn send_with_retries(
        &self,
        api: Api,
        credential: &Credential,
        user: UserId,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Reply, CallFailure> {
        let (body, stream) = (&request.body, request.stream);
        let provider = api.provider();
        let circuit = credential.circuit(user, provider);
        let started = Instant::now();
        let mut last_wait = None;
        let attempts = if retries == Retries::WithinDeadline { MAX_ATTEMPTS } else { 1 };
        for attempt in 0..attempts {
            if let Err(remaining) = self.breaker.admit(circuit, Instant::now()) {
                return Err(CallFailure::Outage(Some(remaining), "circuit open"));
            }
            let sent = Instant::now();
            let answer = self.providers.forward(api, credential.expose(), body.clone(), stream).await;
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
                    let content_type = response.headers().get(reqwest::header::CONTENT_TYPE).cloned();
                    let body = read_capped(response).await;
                    let failure = classify(provider, status.as_u16(), &body);
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

fn key_error(provider: Provider, failure: UpstreamFailure) -> GatewayError {
    match failure {
        UpstreamFailure::QuotaExhausted => GatewayError::KeyQuotaExhausted(provider),
        _ => GatewayError::KeyInvalid(provider),
    }
}

fn jitter(attempt: u32, (base, cap): (Duration, Duration)) -> Duration {
    backoff(attempt, base, cap, fastrand::f64())
}

async fn read_capped(mut response: reqwest::Response) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    Bytes::from(body)
}
