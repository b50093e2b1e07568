//! What one completed LLM call cost, as recorded for accounting.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::provider::Provider;
use super::routing::Source;
use super::user::UserId;

/// Token counts a provider reported (or we counted) for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// One usage record. BYOK calls become an `api_key_usage` row, internal calls a `credit_transactions`
/// deduction. `request_id` is unique in Directus, which makes delivery idempotent: a record sent twice
/// (retry after a timeout, replay after a crash) is stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: Uuid,
    pub user: UserId,
    pub provider: Provider,
    pub model: String,
    pub source: Source,
    /// e.g. `chat_completions`, `messages`: the ledger's `service_type`.
    pub service_type: String,
    pub usage: TokenUsage,
    /// Estimated cost in cents, from the price table (fractional; the ledger rounds deductions up).
    pub cost_cents: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}
