//! Turns a finished call into a usage record and hands it to the durable outbox, off the request path, and
//! lists every call, charged or not, in the user's recent calls (see [`super::call_log`]).
//! Streams are metered as they pass through and charged when they end, including when the client leaves.
//! An internal-credit call's hold gives way to its real cost at that moment (see [`super::reservations`]).
//!
//! # Durability
//! [`Meter::record`] only queues the record for the outbox's single writer thread and returns; the call is
//! answered without waiting for the disk. The writer takes everything queued and commits it as one transaction
//! (one fsync per batch, not per record), so **a record is durable a few milliseconds after its call is
//! answered**: one commit, more only if the disk falls behind. That window is the only way a record can be
//! lost: the whole machine or the process dying inside it. On a graceful stop, what is still queued is written
//! when the last reference to the [`Meter`] goes (the runtime drops the app's tasks on exit), or by
//! [`Meter::flush`]. If the disk refuses a batch (full, gone), the writer retries for about 2.5 s, then logs
//! every record of it in full with `tracing::error!`. Once committed, a record goes to Directus at least once
//! and is stored exactly once (see [`crate::accounting`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use moka::sync::Cache;
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::call_log::CallLog;
use super::reservations::{HOLD_TTL, Hold};
use crate::accounting::OutboxWriter;
use crate::domain::call::{CallEntry, Ending};
use crate::domain::error_code::Code;
use crate::domain::llm::{Api, StreamTap};
use crate::domain::money::Cents;
use crate::domain::pricing::{PriceMatch, PriceTable};
use crate::domain::provider::Provider;
use crate::domain::routing::Source;
use crate::domain::usage::{TokenUsage, UsageRecord};
use crate::domain::user::UserId;
use crate::providers::TransportError;

/// Unknown models are logged once each; this bounds how many names are remembered (a client can send any).
const UNKNOWN_MODELS_REMEMBERED: u64 = 1_000;

/// Who pays for a call and what it was, fixed before the call is made.
#[derive(Debug)]
pub struct Charge {
    pub request_id: Uuid,
    pub user: UserId,
    pub api: Api,
    pub provider: Provider,
    pub model: String,
    /// The model asked for, when a fallback serves the call.
    pub fallback_from: Option<String>,
    pub source: Source,
    pub estimated_prompt_tokens: u64,
    /// Internal credits: the reservation the real cost replaces.
    pub hold: Option<Hold>,
}

pub struct Meter {
    outbox: OutboxWriter,
    prices: Arc<PriceTable>,
    calls: Arc<CallLog>,
    unknown_models_logged: Cache<String, ()>,
}

impl Meter {
    /// Records go to the outbox through `outbox`, its one writer; each charged call is also listed in `calls`.
    pub fn new(outbox: OutboxWriter, prices: Arc<PriceTable>, calls: Arc<CallLog>) -> Self {
        Meter {
            outbox,
            prices,
            calls,
            unknown_models_logged: Cache::builder().max_capacity(UNKNOWN_MODELS_REMEMBERED).build(),
        }
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Records a completed call and returns its cost. Returns at once, without blocking: the record is queued
    /// for the outbox's writer and is durable a few milliseconds later (see the module documentation).
    pub fn record(&self, charge: Charge, usage: TokenUsage, ending: Ending) -> Cents {
        let record = self.charge(charge, usage, ending);
        let cost = record.cost_cents;
        self.keep(record);
        cost
    }

    /// [`Meter::record`] without the outbox: the call is priced, its hold settled and the call listed; its
    /// usage record is the caller's to make durable (a job writes it with its result) or to [`Meter::keep`].
    pub fn charge(&self, charge: Charge, usage: TokenUsage, ending: Ending) -> UsageRecord {
        let provider = charge.provider;
        let (price, matched) = self.prices.price(provider, &charge.model);
        if matched == PriceMatch::Unknown && !self.unknown_models_logged.contains_key(&charge.model) {
            self.unknown_models_logged.insert(charge.model.clone(), ());
            tracing::warn!(%provider, model = %charge.model, version = self.prices.version(),
                "model not in the price table; charged at the conservative unknown-model rate");
        }
        let cost = price.cost(&usage);
        if let Some(hold) = charge.hold {
            if cost > hold.amount() {
                tracing::warn!(request_id = %charge.request_id, hold = %hold.amount(), %cost,
                    "call cost more than its hold; charged in full");
            }
            hold.settle(charge.request_id, cost);
        }
        let record = UsageRecord {
            request_id: charge.request_id,
            user: charge.user,
            provider,
            model: charge.model,
            fallback_from: charge.fallback_from,
            source: charge.source,
            service_type: format!("{provider}.{}", charge.api.service_type()),
            usage,
            cost_cents: cost,
            occurred_at: OffsetDateTime::now_utc(),
        };
        self.calls.record(record.user, CallEntry::charged(&record, ending));
        record
    }

    /// Queues a record from [`Meter::charge`] for the outbox's writer, as [`Meter::record`] does.
    pub fn keep(&self, record: UsageRecord) {
        self.outbox.submit(record);
    }

    /// Lists a call that cost nothing (refused here or by the provider) among the user's calls.
    pub fn uncharged(&self, user: UserId, call: CallEntry) {
        self.calls.record(user, call);
    }

    /// Resolves once every record recorded before the call is on disk (or, if the disk refused it, logged).
    pub async fn flush(&self) {
        self.outbox.flush().await;
    }

    /// Wraps a provider's SSE stream: passes it on (less what the client did not ask for), charges when it
    /// ends, and holds `slot` (the call's upstream slots) until then.
    pub fn metered_stream<S>(
        self: &Arc<Self>,
        charge: Charge,
        hide_usage_chunk: bool,
        slot: impl Send + 'static,
        upstream: S,
    ) -> MeteredStream
    where
        S: Stream<Item = Result<Bytes, TransportError>> + Send + 'static,
    {
        let (price, _) = self.prices.price(charge.provider, &charge.model);
        MeteredStream {
            tap: Some(StreamTap::new(charge.api, hide_usage_chunk, price)),
            api: charge.api,
            inner: Box::pin(upstream),
            pending: Some((Arc::clone(self), charge)),
            kept_alive: Instant::now(),
            done: false,
            _slot: Box::new(slot),
        }
    }
}

pub struct MeteredStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>,
    tap: Option<StreamTap>,
    api: Api,
    pending: Option<(Arc<Meter>, Charge)>,
    /// When the hold was last told the call is still running.
    kept_alive: Instant,
    done: bool,
    _slot: Box<dyn Send>,
}

impl MeteredStream {
    /// Charges for what passed: the provider's final usage, or an estimate of everything generated.
    fn settle(&mut self, ending: Ending) {
        let (Some((meter, charge)), Some(tap)) = (self.pending.take(), self.tap.take()) else { return };
        let (usage, reported) = tap.finish(charge.estimated_prompt_tokens);
        if !reported {
            tracing::info!(request_id = %charge.request_id, "stream ended without final usage; charged by estimate");
        }
        meter.record(charge, usage, ending);
    }

    fn keep_hold_alive(&mut self) {
        if self.kept_alive.elapsed() < HOLD_TTL / 4 {
            return;
        }
        self.kept_alive = Instant::now();
        if let Some(hold) = self.pending.as_ref().and_then(|(_, charge)| charge.hold.as_ref()) {
            hold.keep_alive();
        }
    }
}

/// The coded error a client sees in place of the rest of a stream the provider broke off.
fn interrupted_event(api: Api) -> Bytes {
    let (code, message) = (Code::UpstreamStreamInterrupted.as_str(), Code::UpstreamStreamInterrupted.message());
    Bytes::from(match api {
        Api::ChatCompletions | Api::Embeddings => format!(
            "data: {{\"error\":{{\"code\":\"{code}\",\"type\":\"upstream_error\",\"message\":\"{message}\"}}}}\n\n"
        ),
        // The Responses API's own error event, which the SDKs raise.
        Api::Responses => format!(
            "event: error\ndata: {{\"type\":\"error\",\"code\":\"{code}\",\"message\":\"{message}\",\"param\":null,\"sequence_number\":0}}\n\n"
        ),
        Api::Messages | Api::CountTokens => format!(
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"{message}\"}}}}\n\n"
        ),
    })
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.keep_hold_alive();
                    let Some(tap) = self.tap.as_mut() else { return Poll::Ready(None) };
                    let passed = tap.pass(chunk);
                    // A chunk that only held part of an event the client must not see yet: read on.
                    if !passed.is_empty() {
                        return Poll::Ready(Some(Ok(passed)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(%error, "provider stream failed");
                    self.done = true;
                    let mut rest = self.tap.as_mut().map(StreamTap::end).unwrap_or_default().to_vec();
                    self.settle(Ending::StreamBrokenOff);
                    rest.extend_from_slice(&interrupted_event(self.api));
                    return Poll::Ready(Some(Ok(Bytes::from(rest))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let rest = self.tap.as_mut().map(StreamTap::end).unwrap_or_default();
                    self.settle(Ending::Answered { status: 200 });
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for MeteredStream {
    /// The client went away mid-stream: what was generated so far is charged.
    fn drop(&mut self) {
        self.settle(Ending::Answered { status: 200 });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::accounting::Outbox;
    use crate::domain::provider::Provider;
    use crate::services::call_log;
    use crate::store::Store;
    use crate::store::tests::TempDir;

    struct Parts {
        _dir: TempDir,
        outbox: Arc<Outbox>,
        calls: Arc<CallLog>,
    }

    fn parts() -> Parts {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(&dir.store_path()).unwrap());
        let calls = Arc::new(call_log::tests::embedded(Arc::clone(&store)));
        Parts { _dir: dir, outbox: Arc::new(Outbox::open(store).unwrap()), calls }
    }

    fn meter(parts: &Parts) -> Meter {
        let outbox = OutboxWriter::start(Arc::clone(&parts.outbox)).unwrap();
        Meter::new(outbox, Arc::new(PriceTable::builtin()), Arc::clone(&parts.calls))
    }

    const ANSWERED: Ending = Ending::Answered { status: 200 };

    fn charge(model: &str) -> Charge {
        Charge {
            request_id: Uuid::new_v4(),
            user: UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap(),
            api: Api::ChatCompletions,
            provider: Provider::openai(),
            model: model.into(),
            fallback_from: None,
            source: Source::Internal,
            estimated_prompt_tokens: 10,
            hold: None,
        }
    }

    #[tokio::test]
    async fn a_recorded_call_is_stored_with_its_exact_price_and_listed_with_its_ending() {
        let parts = parts();
        parts.calls.start();
        let meter = meter(&parts);
        let charge = charge("gpt-4o-2024-08-06");
        let (request_id, user) = (charge.request_id, charge.user);
        let usage = TokenUsage::new(1_000, 500);
        meter.record(charge, usage, Ending::Unanswered(Code::AiTimeout));
        meter.flush().await;

        let waiting = parts.outbox.page(0, 10).unwrap();
        assert_eq!(waiting.len(), 1);
        let record = &waiting[0].record;
        assert_eq!((record.request_id, record.provider, record.usage), (request_id, Provider::openai(), usage));
        assert_eq!(record.service_type, "openai.chat_completions");
        assert_eq!(record.cost_cents.to_string(), "0.750000000");

        let listed = call_log::tests::listed(&parts.calls, user, 1).await;
        assert_eq!(
            (listed[0].id, listed[0].cost_cents, listed[0].prompt_tokens),
            (request_id, record.cost_cents, 1_000)
        );
        assert_eq!((listed[0].status, listed[0].error_code.as_deref()), (504, Some("ai_timeout")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_recorded_from_many_tasks_at_once_are_all_stored() {
        let parts = parts();
        let meter = Arc::new(meter(&parts));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let meter = Arc::clone(&meter);
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..100 {
                        let charge = charge("gpt-4o-mini");
                        ids.push(charge.request_id);
                        meter.record(charge, TokenUsage::new(3, 4), ANSWERED);
                        tokio::task::yield_now().await;
                    }
                    ids
                })
            })
            .collect();
        let mut recorded = HashSet::new();
        for task in tasks {
            recorded.extend(task.await.unwrap());
        }
        meter.flush().await;
        assert_eq!(parts.outbox.len(), 3_200);
        let stored: HashSet<_> =
            parts.outbox.page(0, 10_000).unwrap().into_iter().map(|w| w.record.request_id).collect();
        assert_eq!(stored, recorded);
    }

    #[test]
    fn dropping_the_meter_stores_what_is_still_queued() {
        let parts = parts();
        let meter = meter(&parts);
        for _ in 0..500 {
            meter.record(charge("gpt-4o-mini"), TokenUsage::default(), ANSWERED);
        }
        drop(meter);
        assert_eq!(parts.outbox.len(), 500);
    }

    #[test]
    fn unknown_model_names_are_remembered_in_bounded_memory() {
        let parts = parts();
        let meter = meter(&parts);
        for i in 0..5_000 {
            meter.record(charge(&format!("made-up-model-{i}")), TokenUsage::default(), ANSWERED);
        }
        meter.unknown_models_logged.run_pending_tasks();
        assert!(meter.unknown_models_logged.entry_count() <= UNKNOWN_MODELS_REMEMBERED);
    }
}
