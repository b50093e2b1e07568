//! What an LLM call costs: a versioned price table, shipped with the binary and replaceable by the operator.
//!
//! Models the table does not know are priced at a deliberately expensive per-provider rate, so a new or
//! misspelled model can only ever overcharge credits, never give calls away. [`PriceMatch`] tells the
//! caller when that happened so it can be logged and the table updated.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::provider::Provider;
use super::usage::TokenUsage;

const BUILTIN: &str = include_str!("../../pricing/prices.json");

/// List price of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok_usd: f64,
    pub output_per_mtok_usd: f64,
}

impl ModelPrice {
    /// Cost in cents (fractional), input and output priced separately.
    pub fn cost_cents(&self, usage: &TokenUsage) -> f64 {
        usd_per_mtok_to_cents(usage.prompt_tokens, self.input_per_mtok_usd)
            + usd_per_mtok_to_cents(usage.completion_tokens, self.output_per_mtok_usd)
    }
}

fn usd_per_mtok_to_cents(tokens: u64, usd_per_mtok: f64) -> f64 {
    // tokens / 1e6 * usd * 100, in one division so round numbers stay exact.
    tokens as f64 * usd_per_mtok / 10_000.0
}

/// How a requested model was found in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceMatch {
    /// The model name is in the table.
    Exact,
    /// A dated or suffixed variant of a listed model (`gpt-4o-2024-08-06` is priced as `gpt-4o`).
    Prefix,
    /// Not in the table: priced at the provider's conservative `unknown_model` rate.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceTableError {
    #[error("price table is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("price table `version` is empty; give it a version such as \"2026-11-01\"")]
    EmptyVersion,
    #[error("price table `currency` is {0:?}; only \"USD\" is supported")]
    Currency(String),
    #[error("price table has no `unknown_model.{0}`; every provider needs a conservative price for unlisted models")]
    MissingUnknownModel(Provider),
    #[error("price table lists an empty model name under `models.{0}`")]
    EmptyModelName(Provider),
    #[error("price table `{at}.{field}` must be a finite number of at least 0")]
    InvalidPrice { at: String, field: &'static str },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    version: String,
    currency: String,
    /// Free text for people editing the file; accepted and ignored.
    #[serde(default, rename = "description")]
    _description: IgnoredAny,
    models: HashMap<Provider, HashMap<String, ModelPrice>>,
    unknown_model: HashMap<Provider, ModelPrice>,
}

#[derive(Debug, Clone, PartialEq)]
struct ProviderPrices {
    models: HashMap<String, ModelPrice>,
    unknown: ModelPrice,
}

impl ProviderPrices {
    fn price(&self, model: &str) -> (ModelPrice, PriceMatch) {
        if let Some(price) = self.models.get(model) {
            return (*price, PriceMatch::Exact);
        }
        // Longest listed name wins, so `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`, not `gpt-4o`. Two different
        // names of equal length cannot both be prefixes of one model, so the result does not depend on order.
        self.models
            .iter()
            .filter(|(name, _)| model.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with('-')))
            .max_by_key(|(name, _)| name.len())
            .map_or((self.unknown, PriceMatch::Unknown), |(_, price)| (*price, PriceMatch::Prefix))
    }
}

/// The prices in force, validated. Cheap to query; build once and share.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    version: String,
    openai: ProviderPrices,
    anthropic: ProviderPrices,
}

impl PriceTable {
    /// The table shipped in `pricing/prices.json`.
    pub fn builtin() -> PriceTable {
        PriceTable::from_json(BUILTIN).expect("the embedded price table is valid: a unit test parses it")
    }

    /// Parses and validates a table, e.g. the operator's `PRICE_TABLE_FILE`.
    pub fn from_json(json: &str) -> Result<PriceTable, PriceTableError> {
        let mut raw: RawTable = serde_json::from_str(json).map_err(|e| PriceTableError::Malformed(e.to_string()))?;
        if raw.version.trim().is_empty() {
            return Err(PriceTableError::EmptyVersion);
        }
        if raw.currency != "USD" {
            return Err(PriceTableError::Currency(raw.currency));
        }
        let mut take = |provider: Provider| -> Result<ProviderPrices, PriceTableError> {
            let unknown = raw.unknown_model.remove(&provider).ok_or(PriceTableError::MissingUnknownModel(provider))?;
            validate(&unknown, || format!("unknown_model.{provider}"))?;
            let models = raw.models.remove(&provider).unwrap_or_default();
            for (name, price) in &models {
                if name.is_empty() {
                    return Err(PriceTableError::EmptyModelName(provider));
                }
                validate(price, || format!("models.{provider}.{name}"))?;
            }
            Ok(ProviderPrices { models, unknown })
        };
        let openai = take(Provider::OpenAi)?;
        let anthropic = take(Provider::Anthropic)?;
        Ok(PriceTable { version: raw.version, openai, anthropic })
    }

    /// The table's `version`, recorded with usage so a cost can be traced to the prices that produced it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The price to charge for `model`, and how it was found (log [`PriceMatch::Unknown`]: the table needs it).
    pub fn price(&self, provider: Provider, model: &str) -> (ModelPrice, PriceMatch) {
        self.for_provider(provider).price(model)
    }

    /// Cost of a completed call in cents (fractional). Use [`PriceTable::price`] to learn how the model matched.
    pub fn cost_cents(&self, provider: Provider, model: &str, usage: &TokenUsage) -> f64 {
        self.price(provider, model).0.cost_cents(usage)
    }

    /// Upper bound of a call's cost before it is made: the whole output budget is assumed to be used.
    pub fn estimate_cents(&self, provider: Provider, model: &str, prompt_tokens: u64, max_output_tokens: u64) -> f64 {
        self.cost_cents(provider, model, &TokenUsage { prompt_tokens, completion_tokens: max_output_tokens })
    }

    fn for_provider(&self, provider: Provider) -> &ProviderPrices {
        match provider {
            Provider::OpenAi => &self.openai,
            Provider::Anthropic => &self.anthropic,
        }
    }
}

fn validate(price: &ModelPrice, at: impl Fn() -> String) -> Result<(), PriceTableError> {
    let fields = [("input_per_mtok_usd", price.input_per_mtok_usd), ("output_per_mtok_usd", price.output_per_mtok_usd)];
    for (field, value) in fields {
        if !value.is_finite() || value < 0.0 {
            return Err(PriceTableError::InvalidPrice { at: at(), field });
        }
    }
    Ok(())
}

/// Cents to the four decimals Directus stores (`decimal(14,4)`) and reports show.
pub fn round_cents(cents: f64) -> f64 {
    (cents * 10_000.0).round() / 10_000.0
}

/// Tokens a prompt may use, estimated before the call from its length. Pass the UTF-8 length in bytes
/// (`str::len`): English averages about 4 bytes per token, and a CJK character is 3 bytes and about one token,
/// so one token per 3 bytes overestimates both. Never 0, since every request costs something.
pub fn estimate_prompt_tokens(text_bytes: usize) -> u64 {
    (text_bytes as u64).div_ceil(3).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Provider::*;

    fn builtin_price(provider: Provider, model: &str) -> (ModelPrice, PriceMatch) {
        PriceTable::builtin().price(provider, model)
    }

    fn price(input: f64, output: f64) -> ModelPrice {
        ModelPrice { input_per_mtok_usd: input, output_per_mtok_usd: output }
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    const MINIMAL: &str = r#"{
        "version": "test-1",
        "currency": "USD",
        "models": {"openai": {"gpt-4o": {"input_per_mtok_usd": 2.5, "output_per_mtok_usd": 10}}},
        "unknown_model": {
            "openai": {"input_per_mtok_usd": 30, "output_per_mtok_usd": 120},
            "anthropic": {"input_per_mtok_usd": 15, "output_per_mtok_usd": 75}
        }
    }"#;

    #[test]
    fn the_builtin_table_parses_and_prices_every_model_the_spec_names() {
        let table = PriceTable::builtin();
        assert_eq!(table.version(), "2026-11-01");
        let required = [
            (OpenAi, &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini"][..]),
            (OpenAi, &["gpt-3.5-turbo"]),
            (Anthropic, &["claude-3-5-haiku", "claude-3-5-sonnet", "claude-3-7-sonnet", "claude-sonnet-4"]),
            (Anthropic, &["claude-opus-4", "claude-3-opus", "claude-3-haiku"]),
        ];
        for (provider, models) in required {
            for model in models {
                assert_eq!(table.price(provider, model).1, PriceMatch::Exact, "{provider} {model}");
            }
        }
    }

    #[test]
    fn unknown_models_cost_at_least_as_much_as_every_common_listed_model() {
        let table = PriceTable::builtin();
        for provider in Provider::ALL {
            let prices = table.for_provider(provider);
            // o1-pro is the one listed model priced above the fallback; it is listed so it is never a fallback.
            for (name, p) in prices.models.iter().filter(|(name, _)| name.as_str() != "o1-pro") {
                assert!(p.input_per_mtok_usd <= prices.unknown.input_per_mtok_usd, "{provider} {name}");
                assert!(p.output_per_mtok_usd <= prices.unknown.output_per_mtok_usd, "{provider} {name}");
            }
        }
    }

    #[test]
    fn exact_names_match_exactly() {
        assert_eq!(builtin_price(OpenAi, "gpt-4o"), (price(2.5, 10.0), PriceMatch::Exact));
        assert_eq!(builtin_price(Anthropic, "claude-opus-4"), (price(15.0, 75.0), PriceMatch::Exact));
        assert_eq!(builtin_price(OpenAi, "gpt-4o-2024-05-13"), (price(5.0, 15.0), PriceMatch::Exact));
    }

    #[test]
    fn dated_variants_match_the_longest_listed_prefix() {
        let cases = [
            (OpenAi, "gpt-4o-2024-08-06", price(2.5, 10.0)),
            (OpenAi, "gpt-4o-mini-2024-07-18", price(0.15, 0.6)),
            (OpenAi, "gpt-4.1-mini-2025-04-14", price(0.4, 1.6)),
            (OpenAi, "gpt-4.1-2025-04-14", price(2.0, 8.0)),
            (OpenAi, "o3-pro-2025-06-10", price(20.0, 80.0)),
            (OpenAi, "o4-mini-2025-04-16", price(1.1, 4.4)),
            (Anthropic, "claude-3-5-sonnet-20241022", price(3.0, 15.0)),
            (Anthropic, "claude-3-5-haiku-latest", price(0.8, 4.0)),
            (Anthropic, "claude-opus-4-1-20250805", price(15.0, 75.0)),
            (Anthropic, "claude-opus-4-5-20251101", price(5.0, 25.0)),
        ];
        for (provider, model, expected) in cases {
            assert_eq!(builtin_price(provider, model), (expected, PriceMatch::Prefix), "{provider} {model}");
        }
    }

    #[test]
    fn a_prefix_only_counts_up_to_a_dash() {
        let unknown_openai = price(30.0, 120.0);
        for model in ["gpt-4oo", "gpt-4o_mini", "o3x", "gpt-4", "gpt-5.1", "", "-"] {
            assert_eq!(builtin_price(OpenAi, model), (unknown_openai, PriceMatch::Unknown), "{model:?}");
        }
    }

    #[test]
    fn models_are_only_looked_up_under_their_own_provider() {
        assert_eq!(builtin_price(Anthropic, "gpt-4o"), (price(15.0, 75.0), PriceMatch::Unknown));
        assert_eq!(builtin_price(OpenAi, "claude-3-haiku"), (price(30.0, 120.0), PriceMatch::Unknown));
    }

    #[test]
    fn costs_price_input_and_output_separately_in_cents() {
        let table = PriceTable::builtin();
        let usage = TokenUsage { prompt_tokens: 1_000, completion_tokens: 500 };
        // gpt-4o: 1000 * $2.50/M = 0.25 c, 500 * $10/M = 0.5 c.
        assert_close(table.cost_cents(OpenAi, "gpt-4o-2024-11-20", &usage), 0.75);
        // claude-sonnet-4: 1000 * $3/M = 0.3 c, 500 * $15/M = 0.75 c.
        assert_close(table.cost_cents(Anthropic, "claude-sonnet-4-20250514", &usage), 1.05);
        // A million output tokens of claude-opus-4 is $75.
        let million_out = TokenUsage { prompt_tokens: 0, completion_tokens: 1_000_000 };
        assert_close(table.cost_cents(Anthropic, "claude-opus-4", &million_out), 7_500.0);
        assert_close(table.cost_cents(OpenAi, "gpt-4o", &TokenUsage::default()), 0.0);
    }

    #[test]
    fn estimates_assume_the_whole_output_budget_and_unknown_models_are_expensive() {
        let table = PriceTable::builtin();
        // gpt-4o-mini: 2000 * $0.15/M = 0.03 c, 4000 * $0.60/M = 0.24 c.
        assert_close(table.estimate_cents(OpenAi, "gpt-4o-mini", 2_000, 4_000), 0.27);
        // Unknown OpenAI model: 2000 * $30/M = 6 c, 4000 * $120/M = 48 c.
        assert_close(table.estimate_cents(OpenAi, "gpt-9-turbo", 2_000, 4_000), 54.0);
    }

    #[test]
    fn prompt_tokens_are_estimated_at_one_per_three_bytes_rounded_up_and_never_zero() {
        assert_eq!(estimate_prompt_tokens(0), 1);
        assert_eq!(estimate_prompt_tokens(1), 1);
        assert_eq!(estimate_prompt_tokens(3), 1);
        assert_eq!(estimate_prompt_tokens(4), 2);
        assert_eq!(estimate_prompt_tokens(3_000), 1_000);
        assert_eq!(estimate_prompt_tokens("日本語".len()), 3);
    }

    #[test]
    fn a_valid_override_replaces_the_builtin_table() {
        let table = PriceTable::from_json(MINIMAL).unwrap();
        assert_eq!(table.version(), "test-1");
        assert_eq!(table.price(OpenAi, "gpt-4o-2024-08-06"), (price(2.5, 10.0), PriceMatch::Prefix));
        // A provider with no `models` entry prices everything at its fallback.
        assert_eq!(table.price(Anthropic, "claude-3-haiku"), (price(15.0, 75.0), PriceMatch::Unknown));
    }

    #[test]
    fn bad_override_files_are_refused_with_a_clear_error() {
        let edit = |from: &str, to: &str| {
            assert!(MINIMAL.contains(from), "{from}");
            PriceTable::from_json(&MINIMAL.replacen(from, to, 1)).unwrap_err()
        };
        let invalid = |at: &str, field| PriceTableError::InvalidPrice { at: at.into(), field };

        assert_eq!(edit(r#""test-1""#, r#"" ""#), PriceTableError::EmptyVersion);
        assert_eq!(edit(r#""USD""#, r#""EUR""#), PriceTableError::Currency("EUR".into()));
        assert_eq!(edit("2.5,", "-2.5,"), invalid("models.openai.gpt-4o", "input_per_mtok_usd"));
        assert_eq!(
            edit("\"output_per_mtok_usd\": 75", "\"output_per_mtok_usd\": -0.01"),
            invalid("unknown_model.anthropic", "output_per_mtok_usd")
        );
        assert_eq!(edit(r#""gpt-4o": "#, r#""": "#), PriceTableError::EmptyModelName(OpenAi));
        let no_anthropic_fallback = r#"{"version": "1", "currency": "USD", "models": {},
            "unknown_model": {"openai": {"input_per_mtok_usd": 30, "output_per_mtok_usd": 120}}}"#;
        assert_eq!(PriceTable::from_json(no_anthropic_fallback), Err(PriceTableError::MissingUnknownModel(Anthropic)));
        let message = PriceTableError::MissingUnknownModel(Anthropic).to_string();
        assert!(message.contains("unknown_model.anthropic"), "{message}");

        for (from, to, mentions) in [
            ("\"currency\"", "\"curency\"", "curency"),
            ("output_per_mtok_usd\": 10", "output_per_mtok\": 10", "output_per_mtok"),
            ("\"openai\": {\"gpt", "\"azure\": {\"gpt", "azure"),
            ("2.5,", "\"2.5\",", "invalid type"),
            ("2.5,", "1e999,", "out of range"),
        ] {
            let error = edit(from, to);
            assert!(matches!(error, PriceTableError::Malformed(_)), "{error:?}");
            assert!(error.to_string().contains(mentions), "{error}");
        }
        assert!(matches!(PriceTable::from_json("not json"), Err(PriceTableError::Malformed(_))));
    }
}
