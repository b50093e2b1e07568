//! "Which model is cheapest for this?" (the spec's "recommend cost-effective providers"): the general-purpose
//! text models a user can use now, priced by the same table and the same estimate that hold and charge a real
//! call, cheapest first.

use super::money::Cents;
use super::pricing::{CallBudget, ModelPrice, PriceTable};
use super::provider::Provider;
use super::routing::Source;

/// Answers longer than this are not a request anyone sizes by hand; it also bounds the arithmetic.
pub const MAX_OUTPUT_TOKENS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub provider: Provider,
    pub model: String,
    /// Who would pay: the user's own key or their credits.
    pub source: Source,
    pub estimated_cost: Cents,
    pub price: ModelPrice,
}

/// The `limit` cheapest models for `prompt_tokens` in and `output_tokens` out, across the providers in
/// `usable` (each with the source that would pay for it). Models that cannot give `output_tokens` in one
/// answer are left out. Ties go by provider and name, so the order never flickers between calls.
pub fn cheapest(
    table: &PriceTable,
    usable: &[(Provider, Source)],
    prompt_tokens: u64,
    output_tokens: u64,
    limit: usize,
) -> Vec<Recommendation> {
    let budget =
        CallBudget { prompt_tokens, output_tokens: Some(output_tokens), completions: 1, ..CallBudget::default() };
    let mut all: Vec<Recommendation> = usable
        .iter()
        .flat_map(|&(provider, source)| {
            table.general_models(provider).filter(|(_, price)| price.max_output_tokens >= output_tokens).map(
                move |(model, price)| Recommendation {
                    provider,
                    model: model.to_owned(),
                    source,
                    estimated_cost: price.estimate(&budget),
                    price,
                },
            )
        })
        .collect();
    all.sort_by(|a, b| {
        (a.estimated_cost, a.provider.as_str(), &a.model).cmp(&(b.estimated_cost, b.provider.as_str(), &b.model))
    });
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        PriceTable::from_json(
            r#"{
              "version": "t", "currency": "USD",
              "models": {
                "openai": {
                  "big": {"input_per_mtok_usd": 10.0, "output_per_mtok_usd": 30.0, "max_output_tokens": 4096},
                  "small": {"input_per_mtok_usd": 0.1, "output_per_mtok_usd": 0.4, "max_output_tokens": 16384},
                  "small-2024-07-18": {"input_per_mtok_usd": 0.1, "output_per_mtok_usd": 0.4, "max_output_tokens": 16384},
                  "small-audio-preview": {"input_per_mtok_usd": 0.01, "output_per_mtok_usd": 0.01, "audio_input_per_mtok_usd": 10.0, "max_output_tokens": 16384},
                  "small-search-preview": {"input_per_mtok_usd": 0.01, "output_per_mtok_usd": 0.01, "per_request_usd": 0.03, "max_output_tokens": 16384},
                  "short": {"input_per_mtok_usd": 0.01, "output_per_mtok_usd": 0.01, "max_output_tokens": 100}
                },
                "anthropic": {
                  "haiku": {"input_per_mtok_usd": 0.8, "output_per_mtok_usd": 4.0, "max_output_tokens": 8192}
                }
              },
              "unknown_model": {
                "openai": {"input_per_mtok_usd": 200.0, "output_per_mtok_usd": 800.0, "max_output_tokens": 100000},
                "anthropic": {"input_per_mtok_usd": 200.0, "output_per_mtok_usd": 800.0, "max_output_tokens": 100000}
              }
            }"#,
        )
        .unwrap()
    }

    fn names(list: &[Recommendation]) -> Vec<&str> {
        list.iter().map(|r| r.model.as_str()).collect()
    }

    #[test]
    fn cheapest_first_across_the_usable_providers_with_the_same_estimate_as_a_call() {
        let both = [(Provider::openai(), Source::Byok), (Provider::anthropic(), Source::Internal)];
        let list = cheapest(&table(), &both, 1_000, 500, 10);
        assert_eq!(names(&list), ["small", "haiku", "big"]);
        let budget =
            CallBudget { prompt_tokens: 1_000, output_tokens: Some(500), completions: 1, ..Default::default() };
        assert_eq!(list[0].estimated_cost, table().estimate(Provider::openai(), "small", &budget));
        assert_eq!((list[1].provider, list[1].source), (Provider::anthropic(), Source::Internal));
        assert!(list.windows(2).all(|w| w[0].estimated_cost <= w[1].estimated_cost));
    }

    #[test]
    fn leaves_out_specialised_models_dated_copies_too_short_answers_and_unusable_providers() {
        let list = cheapest(&table(), &[(Provider::openai(), Source::Internal)], 1_000, 500, 10);
        assert_eq!(names(&list), ["small", "big"], "audio, search, a dated copy and a 100-token model are not advice");
        assert!(list.iter().all(|r| r.provider == Provider::openai()));
        assert!(cheapest(&table(), &[], 1_000, 500, 10).is_empty(), "no usable provider, no advice");
    }

    #[test]
    fn limit_keeps_the_cheapest() {
        let both = [(Provider::openai(), Source::Byok), (Provider::anthropic(), Source::Byok)];
        assert_eq!(names(&cheapest(&table(), &both, 1_000, 500, 1)), ["small"]);
        assert_eq!(names(&cheapest(&table(), &both, 10, 10, 1)), ["short"], "a short answer: the 100-token model fits");
    }
}
