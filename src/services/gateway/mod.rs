//! The LLM gateway: decides who pays (the routing matrix), reserves credits for calls they pay, picks the
//! credentials, calls the provider with retries and a circuit breaker, learns from key failures (mark,
//! notify, fall back where the matrix allows), and hands the answer back with what is needed to charge for it.

mod key_events;
mod limits;
mod upstream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

pub use self::key_events::KeyEvents;
pub use self::limits::{CallLimits, CallSlot};
use self::upstream::CallFailure;
pub use self::upstream::{Fallbacks, InternalKeys, Upstream};
use super::circuit_breaker::{Circuit, ProviderHealth};
use super::key_vault::{KeyVault, VaultError};
use super::meter::{Charge, Meter, MeteredStream};
use super::reservations::{Hold, Reservations, ReserveError, Shortfall};
use super::standing::ContextError;
use super::standing::{Standing, Standings};
use crate::domain::budget::BudgetExceeded;
use crate::domain::call::{CallEntry, Ending};
use crate::domain::error_code::{Code, Coded};
use crate::domain::flags::RoutingMode;
use crate::domain::llm::{Api, LlmRequest, LlmRequestError, estimated_usage, parse_request, usage_from_response};
use crate::domain::model_chains::ModelChains;
use crate::domain::money::Cents;
use crate::domain::pricing::{CallBudget, PriceTable};
use crate::domain::provider::Provider;
use crate::domain::provider_key::ProviderKey;
use crate::domain::routing::{Refusal, Source};
use crate::domain::upstream::UpstreamFailure;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::metrics;
use crate::providers::{Answer, TransportError};

enum Credential {
    /// The user's key, and what the call holds of their own-key caps (when they have any).
    Byok(ProviderKey, Option<Hold>),
    /// The platform's key, and the credits reserved for the call.
    Internal(SecretString, Hold),
}

impl Credential {
    fn expose(&self) -> &str {
        match self {
            Credential::Byok(key, _) => key.expose(),
            Credential::Internal(key, _) => key.expose_secret(),
        }
    }

    fn source(&self) -> Source {
        match self {
            Credential::Byok(..) => Source::Byok,
            Credential::Internal(..) => Source::Internal,
        }
    }

    /// The circuit this credential's calls count in.
    fn circuit(&self, user: UserId, provider: Provider) -> Circuit {
        match self {
            Credential::Byok(..) => Circuit::UserKey(user, provider),
            Credential::Internal(..) => Circuit::Platform(provider),
        }
    }

    fn into_hold(self) -> Option<Hold> {
        match self {
            Credential::Byok(_, hold) => hold,
            Credential::Internal(_, hold) => Some(hold),
        }
    }
}

/// What the provider answered, ready for the HTTP layer.
pub enum Reply {
    /// 2xx: stream or read it, then charge with `charge`.
    Success(Answer),
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

/// Where a completed call's usage record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keeping {
    /// Queued for the usage outbox's writer: on disk a few milliseconds later.
    Outbox,
    /// Handed back in [`Completed::usage`]: a job writes it with its result, so a succeeded job is never
    /// without it.
    Caller,
}

/// A non-streaming call, read to the end and charged.
pub struct Completed {
    pub source: Source,
    /// Who served it: the request's provider and model, or a fallback's.
    pub served_by: (Provider, String),
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    /// The usage record and cost of a successful call; `None` when the provider refused the request (which
    /// is not charged).
    pub charged: Option<(Uuid, Cents)>,
    /// With [`Keeping::Caller`]: a successful call's usage record, for the caller to make durable.
    pub usage: Option<UsageRecord>,
    pub staleness: Option<&'static str>,
}

pub struct Forwarded {
    pub source: Source,
    /// A stream's usage chunk was asked for on the client's behalf: it is not passed on.
    pub hide_usage_chunk: bool,
    pub reply: Reply,
    pub charge: Charge,
    /// Held until the answer has been passed on.
    pub slot: CallSlot,
    /// What the decision rested on that may be out of date (see [`crate::services::standing::CallContext::staleness`]).
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
    /// The provider kept answering 429 until the deadline; `platform_key`: to the platform's key.
    #[error("provider rate limited")]
    ProviderRateLimited { provider: Provider, retry_after: Duration, platform_key: bool },
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
    /// The platform's daily budget (of all providers, or of this one: `Some`) is spent: credit calls wait for
    /// the next UTC day.
    #[error("the platform's daily budget is spent")]
    PlatformBudgetExhausted(Option<Provider>),
    /// The call could pass one of the user's spending caps.
    #[error(transparent)]
    Budget(BudgetExceeded),
}

impl Coded for GatewayError {
    fn code(&self) -> Code {
        match self {
            GatewayError::Context(error) => error.code(),
            GatewayError::Refused(refusal) => refusal.code(),
            GatewayError::Vault(error) => error.code(),
            GatewayError::RateLimited { .. } | GatewayError::OwnKeyRateLimited { .. } => Code::RateLimited,
            GatewayError::TooManyCalls(_) => Code::TooManyConcurrentCalls,
            GatewayError::ProviderRateLimited { .. } => Code::ProviderRateLimited,
            GatewayError::KeyInvalid(_) => Code::ProviderKeyInvalid,
            GatewayError::KeyQuotaExhausted(_) => Code::ProviderQuotaExhausted,
            GatewayError::Busy => Code::GatewayBusy,
            GatewayError::CutOff(_) => Code::UpstreamError,
            GatewayError::Timeout(_) => Code::AiTimeout,
            GatewayError::SpecialServiceTier(_) => Code::ServiceTierNotAvailable,
            GatewayError::Unavailable { .. } => Code::AiUnavailable,
            GatewayError::PlatformBudgetExhausted(_) => Code::PlatformBudgetExhausted,
            GatewayError::Budget(exceeded) => exceeded.code(),
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            GatewayError::Context(error) => error.message(),
            GatewayError::Refused(refusal) => refusal.message(),
            GatewayError::Vault(error) => error.message(),
            GatewayError::Budget(exceeded) => exceeded.message(),
            GatewayError::RateLimited { .. } => "You are sending requests faster than your plan allows. Wait a \
                 moment and retry, or add your own API key to remove the limit."
                .into(),
            GatewayError::OwnKeyRateLimited { .. } => "You are sending requests with your own API key faster than \
                 this platform allows. Wait for the time in Retry-After, then retry."
                .into(),
            GatewayError::TooManyCalls(most) => format!(
                "You have {most} AI requests running at once, the most one account may. Wait for one to finish, \
                 then retry."
            )
            .into(),
            GatewayError::ProviderRateLimited { provider, .. } => format!(
                "{} is rate limiting these requests. Retry after the time in Retry-After.",
                provider.display_name()
            )
            .into(),
            GatewayError::KeyInvalid(provider) => format!(
                "{} rejected your API key. Create a new one at {} and save it under \"Your API keys\" on your \
                 account page.",
                provider.display_name(),
                provider.key_page_url()
            )
            .into(),
            GatewayError::KeyQuotaExhausted(provider) => format!(
                "Your {} account has no quota or credit left. Add credit at {}, then retry.",
                provider.display_name(),
                provider.billing_url()
            )
            .into(),
            GatewayError::Timeout(provider) => format!(
                "{} did not finish answering in time. It bills the generation all the same, so the call was \
                 charged its whole budget (the prompt and its max_tokens). Ask for a shorter answer (a lower \
                 max_tokens), or use streaming (\"stream\": true) for long ones.",
                provider.display_name()
            )
            .into(),
            GatewayError::SpecialServiceTier(provider) => format!(
                "Priority, flex and scale processing (service_tier) are not available on platform credits. Remove \
                 service_tier, or use your own {} API key for it.",
                provider.display_name()
            )
            .into(),
            GatewayError::Unavailable { provider, .. } => format!(
                "AI features are temporarily unavailable ({} is not responding). Everything else keeps working; \
                 retry in a little while.",
                provider.display_name()
            )
            .into(),
            GatewayError::PlatformBudgetExhausted(Some(provider)) => format!(
                "{} requests on platform credits are paused until 00:00 UTC: the platform's budget for {} today is \
                 spent. Other providers, and your own API keys, keep working.",
                provider.display_name(),
                provider.display_name()
            )
            .into(),
            GatewayError::Busy | GatewayError::CutOff(_) | GatewayError::PlatformBudgetExhausted(None) => {
                self.code().message().into()
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { retry_after }
            | GatewayError::OwnKeyRateLimited { retry_after }
            | GatewayError::ProviderRateLimited { retry_after, .. } => Some(*retry_after),
            GatewayError::TooManyCalls(_) | GatewayError::Busy => Some(Duration::from_secs(1)),
            GatewayError::Unavailable { retry_after, .. } => Some(retry_after.unwrap_or(Duration::from_secs(30))),
            GatewayError::PlatformBudgetExhausted(_) => Some(until_next_utc_day(OffsetDateTime::now_utc())),
            _ => None,
        }
    }
}

impl GatewayError {
    /// Generated, so billed by the provider and charged here, though never answered in full.
    fn was_charged(&self) -> bool {
        matches!(self, GatewayError::Timeout(_) | GatewayError::CutOff(_))
    }

    /// The provider cannot serve the call now (an outage, an open circuit, the platform's key missing,
    /// refused or rate limited): the next model of the call's chain may. Its reason, for metrics.
    fn fallback_reason(&self) -> Option<&'static str> {
        match self {
            GatewayError::Unavailable { .. } => Some("outage"),
            GatewayError::ProviderRateLimited { platform_key: true, .. } => Some("platform_key_rate_limited"),
            _ => None,
        }
    }
}

/// Why no credential could be had for a source.
enum CredentialError {
    /// The stored key cannot be opened or is gone: it counts as refused.
    KeyUnusable,
    /// The credits left do not cover the call's estimate.
    Shortfall(Shortfall),
    /// A platform's daily budget is spent (all providers', or this provider's: `Some`).
    PlatformBudget(Option<Provider>),
    Other(GatewayError),
}

pub struct Gateway {
    standings: Arc<Standings>,
    reservations: Arc<Reservations>,
    vault: Arc<KeyVault>,
    meter: Arc<Meter>,
    upstream: Upstream,
    limits: CallLimits,
    key_events: Arc<KeyEvents>,
}

impl Gateway {
    pub fn new(
        standings: Arc<Standings>,
        reservations: Arc<Reservations>,
        vault: Arc<KeyVault>,
        meter: Arc<Meter>,
        upstream: Upstream,
        limits: CallLimits,
        key_events: Arc<KeyEvents>,
    ) -> Self {
        Gateway { standings, reservations, vault, meter, upstream, limits, key_events }
    }

    /// The price table calls are estimated and charged by.
    pub fn prices(&self) -> &PriceTable {
        self.meter.prices()
    }

    /// What the platform's circuit for `provider` says, and when it may close.
    pub fn provider_health(&self, provider: Provider, now: Instant) -> (ProviderHealth, Option<Duration>) {
        self.upstream.health(provider, now)
    }

    pub fn circuit_open(&self, provider: Provider, now: Instant) -> bool {
        self.upstream.is_open(provider, now)
    }

    /// A streamed answer, passed on chunk by chunk and charged from its usage when it ends, holding the call's
    /// slots until then; `hide_usage_chunk` drops the usage chunk asked for on the client's behalf.
    pub fn metered_stream<S>(
        &self,
        charge: Charge,
        slot: CallSlot,
        hide_usage_chunk: bool,
        upstream: S,
    ) -> MeteredStream
    where
        S: Stream<Item = Result<Bytes, TransportError>> + Send + 'static,
    {
        self.meter.metered_stream(charge, hide_usage_chunk, slot, upstream)
    }

    /// A usage record from [`Keeping::Caller`] that its caller could not make durable: queued for the outbox.
    pub fn keep(&self, record: UsageRecord) {
        self.meter.keep(record);
    }

    /// Usage recorded by the calls before this one is on disk when it returns (at shutdown).
    pub async fn flush(&self) {
        self.meter.flush().await;
    }

    /// A non-streaming call from start to end: decided, paid, answered in full and charged. The live
    /// gateway's JSON answers and the job workers both come through here.
    pub async fn complete(
        &self,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
        keeping: Keeping,
    ) -> Result<Completed, GatewayError> {
        let forwarded = self.call(user, api, request, retries).await?;
        let (source, staleness) = (forwarded.source, forwarded.staleness);
        let served_by = (forwarded.charge.provider, forwarded.charge.model.clone());
        let completed = |status, content_type, body, charged, usage| Completed {
            source,
            served_by,
            status,
            content_type,
            body,
            charged,
            usage,
            staleness,
        };
        match forwarded.reply {
            Reply::ProviderError { status, content_type, body } => {
                Ok(completed(status, content_type, body, None, None))
            }
            Reply::Success(upstream) => {
                let (status, content_type) =
                    (upstream.status(), upstream.headers().get(hyper::header::CONTENT_TYPE).cloned());
                let body = match upstream.bytes().await {
                    // Not billed: its hold (of nothing) is let go, and nothing is recorded.
                    Ok(body) if !api.is_billed() => return Ok(completed(status, content_type, body, None, None)),
                    Ok(body) => body,
                    Err(_) if !api.is_billed() => return Err(GatewayError::CutOff(forwarded.charge.provider)),
                    Err(_) => {
                        // The answer was generated (its headers come last) and broke off on the way.
                        let error = GatewayError::CutOff(forwarded.charge.provider);
                        self.charge_unanswered(forwarded.charge, &request.budget, error.code());
                        return Err(error);
                    }
                };
                let usage = usage_from_response(api, &body).unwrap_or_else(|| {
                    tracing::info!("response without usage; charged by estimate");
                    estimated_usage(forwarded.charge.estimated_prompt_tokens, body.len())
                });
                let record = self.meter.charge(forwarded.charge, usage, Ending::Answered { status: status.as_u16() });
                let charged = Some((record.request_id, record.cost_cents));
                let usage = match keeping {
                    Keeping::Outbox => {
                        self.meter.keep(record);
                        None
                    }
                    Keeping::Caller => Some(record),
                };
                Ok(completed(status, content_type, body, charged, usage))
            }
        }
    }

    /// A call whose answer never arrived whole (the generation timeout, an answer broken off) was generated
    /// all the same, and the provider bills it: it is charged its whole budget (see
    /// [`crate::domain::pricing::ModelPrice::whole_budget`]), at most what its hold reserved, never nothing.
    fn charge_unanswered(&self, charge: Charge, budget: &CallBudget, answered: Code) {
        let provider = charge.provider;
        let (price, _) = self.meter.prices().price(provider, &charge.model);
        let cost = self.meter.record(charge, price.whole_budget(budget), Ending::Unanswered(answered));
        tracing::info!(%provider, %cost, "no complete answer; the call is charged its whole budget");
    }

    /// A client's body for `api`, with the provider and the chain of models that may serve it.
    pub fn parse(&self, api: Api, raw: &Bytes) -> Result<LlmRequest, LlmRequestError> {
        parse_request(api, raw, self.prices(), self.chains())
    }

    fn chains(&self) -> &ModelChains {
        &self.upstream.fallbacks().chains
    }

    /// Decides, pays and calls; the answer is left for the caller to stream or read ([`Gateway::complete`]).
    /// While the provider cannot serve it (an outage, an open circuit, the platform's key rate limited), the
    /// call moves to the next model of its chain, decided, held and priced as that model's own call.
    pub async fn call(
        &self,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Forwarded, GatewayError> {
        let mut outcome = self.attempt(user, api, request, retries).await;
        let mut from = request.provider;
        for (provider, model) in &request.fallbacks {
            let Some(reason) = outcome.as_ref().err().and_then(GatewayError::fallback_reason) else { break };
            tracing::info!(%user, %from, to = %provider, model, reason, "falling back to the next model of the chain");
            metrics::fallback(from, *provider, reason);
            // Boxed: inline, this second try and what it keeps alive would make every call's future larger.
            let next = Box::pin(self.attempt(user, api, &request.for_fallback(api, *provider, model), retries)).await;
            // A model routing will not serve this user (no key for its provider, no credits for it) is passed
            // over: the unavailability before it is still the answer.
            if !matches!(next, Err(GatewayError::Refused(_))) {
                outcome = next;
                from = *provider;
            }
        }
        outcome
    }

    /// One model's try. One that ends here uncharged (refused, or refused by the provider) is listed among the
    /// user's calls; a charged one is listed by the meter when it is charged.
    async fn attempt(
        &self,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Forwarded, GatewayError> {
        let outcome = self.decide_and_call(user, api, request, retries).await;
        let uncharged =
            |source, status, code| CallEntry::uncharged(request.provider, &request.model, source, status, code);
        match &outcome {
            Ok(Forwarded { source, reply: Reply::ProviderError { status, .. }, .. }) => {
                self.meter.uncharged(user, uncharged(Some(*source), status.as_u16(), Code::ProviderRefusedRequest))
            }
            // The meter listed the call when it charged it.
            Err(error) if !error.was_charged() => {
                let code = error.code();
                self.meter.uncharged(user, uncharged(None, code.status(), code));
            }
            _ => {}
        }
        outcome
    }

    async fn decide_and_call(
        &self,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Forwarded, GatewayError> {
        let standing = self.standings.of(user).await?;
        let capped_by = standing.capped_by;
        match self.call_on(standing, user, api, request, retries).await {
            // Credits fell short because a spending cap left less than the balance: the cap is the reason.
            Err(GatewayError::Refused(Refusal::InsufficientCredits { .. } | Refusal::NoCreditsOrKey { .. }))
                if let Some(exceeded) = capped_by =>
            {
                self.standings.refused_at_cap(user, exceeded).await;
                Err(GatewayError::Budget(exceeded))
            }
            Err(GatewayError::Budget(exceeded)) => {
                self.standings.refused_at_cap(user, exceeded).await;
                Err(GatewayError::Budget(exceeded))
            }
            outcome => outcome,
        }
    }

    async fn call_on(
        &self,
        standing: Standing,
        user: UserId,
        api: Api,
        request: &LlmRequest,
        retries: Retries,
    ) -> Result<Forwarded, GatewayError> {
        let provider = request.provider;
        let staleness = standing.context.staleness();
        let estimate = self.meter.prices().estimate(provider, &request.model, &request.budget);
        let mut view = standing.view(provider, estimate);
        let decision = standing.decide(&view, provider)?;
        // BYOK-first falls back to credits when the key fails mid-call, exactly as if it had been unusable.
        let can_fall_back = decision.mode == RoutingMode::ByokFirst && view.can_pay();
        let slot = self.limits.call_slot(user).await?;

        let mut source = decision.source;
        // Why the user's key was left for credits: the answer if credits cannot take over after all.
        let mut left_key: Option<GatewayError> = None;
        loop {
            if source == Source::Internal && request.special_service_tier {
                return Err(GatewayError::SpecialServiceTier(provider));
            }
            let credential = match self.credential(user, &standing, provider, source, estimate).await {
                Ok(credential) => {
                    if source == Source::Internal {
                        let last_grant = standing.context.caller.profile.last_grant;
                        self.standings.credits_left(user, view.available - estimate, last_grant).await;
                    }
                    credential
                }
                Err(CredentialError::KeyUnusable) => {
                    self.key_events.failed(user, provider, UpstreamFailure::InvalidKey).await;
                    if can_fall_back {
                        left_key = Some(GatewayError::KeyInvalid(provider));
                        source = Source::Internal;
                        continue;
                    }
                    return Err(GatewayError::KeyInvalid(provider));
                }
                Err(CredentialError::Shortfall(shortfall)) => {
                    if let Some(error) = left_key {
                        return Err(error);
                    }
                    // Concurrent calls took what routing counted on: decide again with what is left.
                    view.available = shortfall.available;
                    let again = standing.decide(&view, provider)?;
                    if again.source == source {
                        return Err(Refusal::InsufficientCredits { needed: estimate, available: view.available }.into());
                    }
                    source = again.source;
                    continue;
                }
                Err(CredentialError::PlatformBudget(scope)) => {
                    if let Some(error) = left_key {
                        return Err(error);
                    }
                    // Credits cannot be spent today: the user's own key, where routing allows one.
                    view.available = Cents::ZERO;
                    match standing.decide(&view, provider) {
                        Ok(again) if again.source == Source::Byok => {
                            source = Source::Byok;
                            continue;
                        }
                        _ => return Err(GatewayError::PlatformBudgetExhausted(scope)),
                    }
                }
                Err(CredentialError::Other(error)) => return Err(error),
            };
            let charge = |credential: Credential| Charge {
                // Time-ordered: the outbox's and Directus's unique indexes grow at one end.
                request_id: Uuid::now_v7(),
                user,
                api,
                provider,
                model: request.model.clone(),
                fallback_from: request.fallback_from.clone(),
                source: credential.source(),
                estimated_prompt_tokens: request.budget.prompt_tokens,
                hold: credential.into_hold(),
            };
            let circuit = credential.circuit(user, provider);
            match self.upstream.send(api, credential.expose(), circuit, user, request, retries).await {
                Ok(reply) => {
                    let charge = charge(credential);
                    let hide_usage_chunk = api == Api::ChatCompletions && !request.client_wants_usage_chunk;
                    return Ok(Forwarded { source: charge.source, hide_usage_chunk, reply, charge, slot, staleness });
                }
                Err(CallFailure::Key(failure)) if source == Source::Byok => {
                    self.key_events.failed(user, provider, failure).await;
                    if can_fall_back {
                        tracing::info!(%user, %provider, ?failure, "user's key failed; falling back to credits");
                        left_key = Some(key_error(provider, failure));
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
                    let error = GatewayError::ProviderRateLimited {
                        provider,
                        retry_after,
                        platform_key: source == Source::Internal,
                    };
                    if source == Source::Byok && can_fall_back && self.upstream.fallbacks().rate_limited_own_keys {
                        tracing::info!(%user, %provider, "user's key rate limited; falling back to credits");
                        metrics::fallback(provider, provider, "own_key_rate_limited");
                        left_key = Some(error);
                        source = Source::Internal;
                        continue;
                    }
                    return Err(error);
                }
                Err(CallFailure::Outage(retry_after, reason)) => {
                    return Err(GatewayError::Unavailable { provider, retry_after, reason });
                }
                Err(CallFailure::Timeout) => {
                    // Still generating when the wait ended: billed by the provider all the same.
                    let error = GatewayError::Timeout(provider);
                    self.charge_unanswered(charge(credential), &request.budget, error.code());
                    return Err(error);
                }
            }
        }
    }

    /// BYOK: the caller's cached envelope, opened in memory (no Directus round trip per call), with the call's
    /// estimate reserved from what the user's own-key caps leave (when they have any). Internal: the
    /// platform's key within the tier's rate limit, with the call's estimate reserved from the user's credits.
    async fn credential(
        &self,
        user: UserId,
        standing: &Standing,
        provider: Provider,
        source: Source,
        estimate: Cents,
    ) -> Result<Credential, CredentialError> {
        let caller = &standing.context.caller.profile;
        match source {
            Source::Byok => {
                let stored = caller.usable_key(provider).ok_or(CredentialError::KeyUnusable)?;
                self.limits.own_key_call(user, caller.tier).await.map_err(CredentialError::Other)?;
                let key = self.vault.open_sealed(user, provider, &stored.envelope).map_err(|error| match error {
                    VaultError::Unusable(_) | VaultError::NotFound => CredentialError::KeyUnusable,
                    other => CredentialError::Other(GatewayError::Vault(other)),
                })?;
                // A cap on own-key spending is the user's brake on a runaway script: reached, the call is
                // refused, never moved to credits.
                let hold = match standing.own_keys {
                    None => None,
                    Some((reading, exceeded)) => {
                        let held = self.reservations.reserve_own_keys(user, reading, estimate).await;
                        Some(held.map_err(|_| CredentialError::Other(GatewayError::Budget(exceeded)))?)
                    }
                };
                Ok(Credential::Byok(key, hold))
            }
            Source::Internal => {
                let key = self.upstream.internal_key(provider).ok_or_else(|| {
                    tracing::error!(%provider, "no internal key configured for the provider");
                    CredentialError::Other(GatewayError::Unavailable {
                        provider,
                        retry_after: None,
                        reason: "no platform key configured",
                    })
                })?;
                self.limits.credit_call(user, caller.tier).await.map_err(CredentialError::Other)?;
                let reserved = self.reservations.reserve(user, standing.credits, estimate, provider).await;
                let hold = reserved.map_err(|error| match error {
                    ReserveError::Credits(shortfall) => CredentialError::Shortfall(shortfall),
                    ReserveError::PlatformBudget(scope) => CredentialError::PlatformBudget(scope),
                })?;
                Ok(Credential::Internal(key.clone(), hold))
            }
        }
    }
}

/// The platform's day ends at 00:00 UTC.
fn until_next_utc_day(now: OffsetDateTime) -> Duration {
    let midnight = now.date().next_day().map(|day| day.with_time(time::Time::MIDNIGHT).assume_utc());
    midnight.map_or(Duration::from_secs(3_600), |midnight| (midnight - now).unsigned_abs())
}

fn key_error(provider: Provider, failure: UpstreamFailure) -> GatewayError {
    match failure {
        UpstreamFailure::QuotaExhausted => GatewayError::KeyQuotaExhausted(provider),
        _ => GatewayError::KeyInvalid(provider),
    }
}
