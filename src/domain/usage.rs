//! What one completed LLM call cost, as recorded for accounting.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::money::{self, Cents};
use super::provider::Provider;
use super::routing::Source;
use super::user::UserId;

/// Token counts a provider reported (or we counted) for one call. The breakdown fields are parts of the two
/// totals that are billed at other rates; records spooled before they existed read them as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Every input token, however billed (Anthropic's cache reads and writes included).
    pub prompt_tokens: u64,
    /// Every output token, reasoning and thinking included.
    pub completion_tokens: u64,
    /// Of `prompt_tokens`: read from the provider's prompt cache (OpenAI `cached_tokens`, Anthropic
    /// `cache_read_input_tokens`).
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// Of `prompt_tokens`: written to Anthropic's prompt cache for 5 minutes (billed 1.25x input) and for an
    /// hour (2x).
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub cache_write_1h_tokens: u64,
    /// Of `prompt_tokens` and `completion_tokens`: audio, billed at the model's audio rates.
    #[serde(default)]
    pub audio_prompt_tokens: u64,
    #[serde(default)]
    pub audio_completion_tokens: u64,
    /// Server-side web searches the provider ran for the call, billed per search.
    #[serde(default)]
    pub web_searches: u64,
}

impl TokenUsage {
    /// Plain text usage with no cached, audio or search parts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> TokenUsage {
        TokenUsage { prompt_tokens, completion_tokens, ..TokenUsage::default() }
    }

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
    /// The model asked for, when a fallback chain moved the call to `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
    pub source: Source,
    /// e.g. `openai.chat_completions`: the ledger's `service_type`.
    pub service_type: String,
    pub usage: TokenUsage,
    /// What the call cost by the price table, exact: this is what the ledger deducts, unrounded.
    #[serde(with = "money::exact")]
    pub cost_cents: Cents,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}
