//! Turns a finished call into a usage record and hands it to the durable spool, off the request path.
//! Streams are metered as they pass through and charged when they end, including when the client leaves.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounting::Spool;
use crate::domain::llm::{Api, StreamUsage};
use crate::domain::pricing::{PriceMatch, PriceTable};
use crate::domain::routing::Source;
use crate::domain::usage::{TokenUsage, UsageRecord};
use crate::domain::user::UserId;

/// Who pays for a call and what it was, fixed before the call is made.
#[derive(Debug, Clone)]
pub struct Charge {
    pub request_id: Uuid,
    pub user: UserId,
    pub api: Api,
    pub model: String,
    pub source: Source,
    pub estimated_prompt_tokens: u64,
}

pub struct Meter {
    spool: Arc<Spool>,
    prices: Arc<PriceTable>,
    unknown_models_logged: Mutex<HashSet<String>>,
}

impl Meter {
    pub fn new(spool: Arc<Spool>, prices: Arc<PriceTable>) -> Self {
        Meter { spool, prices, unknown_models_logged: Mutex::new(HashSet::new()) }
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Records a completed call. Returns at once; the record is made durable on a blocking thread.
    pub fn record(&self, charge: Charge, usage: TokenUsage) {
        let provider = charge.api.provider();
        let (price, matched) = self.prices.price(provider, &charge.model);
        if matched == PriceMatch::Unknown
            && self.unknown_models_logged.lock().expect("lock poisoned").insert(charge.model.clone())
        {
            tracing::warn!(%provider, model = %charge.model, version = self.prices.version(),
                "model not in the price table; charged at the conservative unknown-model rate");
        }
        let record = UsageRecord {
            request_id: charge.request_id,
            user: charge.user,
            provider,
            model: charge.model,
            source: charge.source,
            service_type: format!("{provider}.{}", charge.api.service_type()),
            usage,
            cost_cents: price.cost_cents(&usage),
            occurred_at: OffsetDateTime::now_utc(),
        };
        let spool = Arc::clone(&self.spool);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = spool.enqueue(&record) {
                // The disk is full or gone: the one case where a record can be lost, so shout.
                tracing::error!(%error, request_id = %record.request_id, "usage record could not be spooled");
            }
        });
    }

    /// Wraps a provider's SSE stream: passes every chunk through unchanged, and charges when it ends.
    pub fn metered_stream<S>(self: &Arc<Self>, charge: Charge, upstream: S) -> MeteredStream
    where
        S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    {
        MeteredStream {
            tap: StreamUsage::new(charge.api),
            api: charge.api,
            inner: Box::pin(upstream),
            pending: Some((Arc::clone(self), charge)),
            failed: false,
            done: false,
        }
    }
}

pub struct MeteredStream {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    tap: StreamUsage,
    api: Api,
    pending: Option<(Arc<Meter>, Charge)>,
    failed: bool,
    done: bool,
}

impl MeteredStream {
    fn settle(&mut self) {
        let Some((meter, charge)) = self.pending.take() else { return };
        if self.failed {
            tracing::warn!(request_id = %charge.request_id, "provider stream broke off; the call is not charged");
            return;
        }
        let tap = std::mem::replace(&mut self.tap, StreamUsage::new(self.api));
        let (usage, reported) = tap.finish(charge.estimated_prompt_tokens);
        if !reported {
            tracing::info!(request_id = %charge.request_id, "stream ended without usage; charged by estimate");
        }
        meter.record(charge, usage);
    }
}

/// The coded error a client sees in place of the rest of a stream the provider broke off.
fn interrupted_event(api: Api) -> Bytes {
    let message = "The AI provider stopped answering mid-way. Nothing was charged; please retry.";
    Bytes::from(match api {
        Api::ChatCompletions => format!(
            "data: {{\"error\":{{\"code\":\"upstream_stream_interrupted\",\"type\":\"upstream_error\",\"message\":\"{message}\"}}}}\n\n"
        ),
        Api::Messages => format!(
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"{message}\"}}}}\n\n"
        ),
    })
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.tap.observe(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(error = %error.without_url(), "provider stream failed");
                self.failed = true;
                self.done = true;
                self.settle();
                Poll::Ready(Some(Ok(interrupted_event(self.api))))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.settle();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for MeteredStream {
    /// The client went away mid-stream: what was generated so far is charged.
    fn drop(&mut self) {
        self.settle();
    }
}
