//! What an LLM call costs: a versioned price table, shipped with the binary and replaceable by the operator.
//!
//! Models the table does not know are priced at a deliberately expensive per-provider rate, so a new or
//! misspelled model can only ever overcharge credits, never give calls away. [`PriceMatch`] tells the
//! caller when that happened so it can be logged and the table updated.
//!
//! Rates are held as whole billionths of a cent per token (a price of $0.075 per million tokens is 7,500),
//! so a token count times a rate is exact and no call is rounded (see [`Cents`]).

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::money::Cents;
use super::provider::{ApiStyle, PerProvider, Provider};
use super::usage::TokenUsage;

const BUILTIN: &str = include_str!("../../pricing/prices.json");

/// Billionths of a cent per token for a price of one US dollar per million tokens.
const NANOS_PER_TOKEN_PER_USD_PER_MTOK: f64 = 100_000.0;
/// Billionths of a cent per US dollar.
const NANOS_PER_USD: f64 = 1e11;
/// Anthropic bills writes to its 5-minute prompt cache at 1.25x the input price and to the 1-hour cache at 2x.
const CACHE_WRITE_MULTIPLIER: f64 = 1.25;
const CACHE_WRITE_1H_MULTIPLIER: f64 = 2.0;

/// One model's prices as the JSON table states them: US dollars per million tokens, or per call.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_mtok_usd: f64,
    output_per_mtok_usd: f64,
    /// Prompt-cache reads; without it cached input costs full price.
    cached_input_per_mtok_usd: Option<f64>,
    /// Anthropic prompt-cache writes; default 1.25x (5 minutes) and 2x (1 hour) the input price.
    cache_write_per_mtok_usd: Option<f64>,
    cache_write_1h_per_mtok_usd: Option<f64>,
    /// Audio tokens; without them, a model's audio is priced at the provider's unknown-model audio rate.
    audio_input_per_mtok_usd: Option<f64>,
    audio_output_per_mtok_usd: Option<f64>,
    /// A fee per call (e.g. the search-preview models' built-in web search).
    per_request_usd: Option<f64>,
    /// A fee per server-side web search the provider reports; default: the provider's unknown-model fee.
    web_search_per_call_usd: Option<f64>,
    /// The longest answer the model can give: the output budget of a request that names none.
    max_output_tokens: Option<u64>,
}

/// One model's prices, in billionths of a cent per token (or per call, per search).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
    pub audio_input: u64,
    pub audio_output: u64,
    pub per_request: u64,
    pub web_search: u64,
    pub max_output_tokens: u64,
}

/// The most a call can use, known before it is made (see [`crate::domain::llm::LlmRequest::budget`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallBudget {
    pub prompt_tokens: u64,
    /// Output tokens of all completions together; `None` when the request names no limit, so the model's
    /// maximum applies (times `completions`).
    pub output_tokens: Option<u64>,
    /// How many completions the request asks for (OpenAI `n`).
    pub completions: u64,
    /// The prompt may be written to Anthropic's cache (it carries `cache_control`).
    pub cache_writes: bool,
    /// The prompt may carry audio, or the answer may be audio.
    pub audio_input: bool,
    pub audio_output: bool,
    /// Server-side web searches the request allows.
    pub web_searches: u64,
}

impl ModelPrice {
    /// Exact cost of a completed call: each part of the usage at its own rate, plus per-call fees.
    pub fn cost(&self, usage: &TokenUsage) -> Cents {
        let billed_apart = usage.cached_prompt_tokens
            + usage.cache_write_tokens
            + usage.cache_write_1h_tokens
            + usage.audio_prompt_tokens;
        let plain_input = usage.prompt_tokens.saturating_sub(billed_apart);
        let plain_output = usage.completion_tokens.saturating_sub(usage.audio_completion_tokens);
        Cents::per_unit(plain_input, self.input)
            + Cents::per_unit(usage.cached_prompt_tokens, self.cached_input)
            + Cents::per_unit(usage.cache_write_tokens, self.cache_write)
            + Cents::per_unit(usage.cache_write_1h_tokens, self.cache_write_1h)
            + Cents::per_unit(usage.audio_prompt_tokens, self.audio_input)
            + Cents::per_unit(plain_output, self.output)
            + Cents::per_unit(usage.audio_completion_tokens, self.audio_output)
            + Cents::per_unit(1, self.per_request)
            + Cents::per_unit(usage.web_searches, self.web_search)
    }

    /// The most a call within `budget` can cost: every prompt token at the dearest input rate the request can
    /// trigger, the whole output budget at the dearest output rate, every allowed search.
    pub fn estimate(&self, budget: &CallBudget) -> Cents {
        let mut input = self.input;
        if budget.cache_writes {
            input = input.max(self.cache_write).max(self.cache_write_1h);
        }
        if budget.audio_input {
            input = input.max(self.audio_input);
        }
        let output = if budget.audio_output { self.output.max(self.audio_output) } else { self.output };
        Cents::per_unit(budget.prompt_tokens, input)
            + Cents::per_unit(self.output_budget(budget), output)
            + Cents::per_unit(1, self.per_request)
            + Cents::per_unit(budget.web_searches, self.web_search)
    }

    /// The usage of a call that used its whole budget: the prompt as estimated, every output token it may
    /// use, every search it allows. What a call is charged when its answer never arrived, since the provider
    /// bills the generation all the same.
    pub fn whole_budget(&self, budget: &CallBudget) -> TokenUsage {
        TokenUsage {
            prompt_tokens: budget.prompt_tokens.max(1),
            completion_tokens: self.output_budget(budget),
            web_searches: budget.web_searches,
            ..TokenUsage::default()
        }
    }

    /// Output tokens a request may use in all: its own limit, or the model's maximum per completion.
    pub fn output_budget(&self, budget: &CallBudget) -> u64 {
        budget.output_tokens.unwrap_or_else(|| self.max_output_tokens.saturating_mul(budget.completions.max(1)))
    }

    /// Input price in US dollars per million tokens, for people.
    pub fn input_per_mtok_usd(&self) -> f64 {
        self.input as f64 / NANOS_PER_TOKEN_PER_USD_PER_MTOK
    }

    pub fn output_per_mtok_usd(&self) -> f64 {
        self.output as f64 / NANOS_PER_TOKEN_PER_USD_PER_MTOK
    }
}

/// How a requested model was found in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceMatch {
    /// The model name is in the table.
    Exact,
    /// A dated or versioned variant of a listed model (`gpt-4o-2024-08-06` is priced as `gpt-4o`).
    Prefix,
    /// Not in the table: priced at the provider's conservative `unknown_model` rate.
    Unknown,
}

impl PriceMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceMatch::Exact => "listed",
            PriceMatch::Prefix => "listed_family",
            PriceMatch::Unknown => "unknown_model_conservative",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceTableError {
    #[error("price table is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("price table `version` is empty; give it a version such as \"2026-11-01\"")]
    EmptyVersion,
    #[error("price table `currency` is {0:?}; only \"USD\" is supported")]
    Currency(String),
    #[error("price table names provider {0:?}, which is not declared (see PROVIDERS_FILE)")]
    UndeclaredProvider(String),
    #[error(
        "no `unknown_model` price for provider {0}; every provider needs a conservative price for unlisted models \
         (in PRICE_TABLE_FILE, or as `unknown_model` in its PROVIDERS_FILE entry)"
    )]
    MissingUnknownModel(Provider),
    #[error("price table `unknown_model.{0}` needs `max_output_tokens`: the output budget of requests that name none")]
    MissingMaxOutput(Provider),
    #[error("price table lists an empty model name under `models.{0}`")]
    EmptyModelName(Provider),
    #[error("price table `{at}.{field}` must be a finite number from 0 to 100000")]
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
    models: HashMap<String, HashMap<String, RawPrice>>,
    unknown_model: HashMap<String, RawPrice>,
}

impl RawTable {
    /// The operator's table must name only declared providers; the shipped one's prices of providers the
    /// operator took out are dropped.
    fn parse(json: &str, shipped: bool) -> Result<RawTable, PriceTableError> {
        let mut raw: RawTable = serde_json::from_str(json).map_err(|e| PriceTableError::Malformed(e.to_string()))?;
        if raw.version.trim().is_empty() {
            return Err(PriceTableError::EmptyVersion);
        }
        if raw.currency != "USD" {
            return Err(PriceTableError::Currency(raw.currency));
        }
        let declared = |id: &String| id.parse::<Provider>().is_ok();
        if shipped {
            raw.models.retain(|id, _| declared(id));
            raw.unknown_model.retain(|id, _| declared(id));
        } else if let Some(id) = raw.models.keys().chain(raw.unknown_model.keys()).find(|id| !declared(id)) {
            return Err(PriceTableError::UndeclaredProvider(id.clone()));
        }
        Ok(raw)
    }
}

/// Prices a provider's declaration carries (`models`, `unknown_model` in its `PROVIDERS_FILE` entry).
pub type DeclaredPrices = [(String, Option<serde_json::Value>, Option<serde_json::Value>)];

#[derive(Debug, Clone, PartialEq)]
struct ProviderPrices {
    models: HashMap<String, ModelPrice>,
    unknown: ModelPrice,
    /// Listed models worth recommending for plain text: not a dated copy of another listed model, and
    /// without audio rates or a per-call fee of their own (audio, realtime and search products), sorted.
    general: Vec<String>,
}

impl ProviderPrices {
    fn resolve(
        provider: Provider,
        raw_unknown: &RawPrice,
        raw_models: HashMap<String, RawPrice>,
    ) -> Result<ProviderPrices, PriceTableError> {
        if raw_unknown.max_output_tokens.is_none() {
            return Err(PriceTableError::MissingMaxOutput(provider));
        }
        let unknown = resolve(raw_unknown, None, &format!("unknown_model.{provider}"))?;
        let mut models = HashMap::new();
        let mut specialised = Vec::new();
        for (name, price) in raw_models {
            if name.is_empty() {
                return Err(PriceTableError::EmptyModelName(provider));
            }
            if price.audio_input_per_mtok_usd.is_some()
                || price.audio_output_per_mtok_usd.is_some()
                || price.per_request_usd.is_some()
                || price.output_per_mtok_usd == 0.0
            {
                specialised.push(name.clone());
            }
            let price = resolve(&price, Some(&unknown), &format!("models.{provider}.{name}"))?;
            models.insert(name, price);
        }
        let mut general: Vec<String> = models
            .keys()
            .filter(|name| !specialised.contains(name))
            .filter(|name| !models.keys().any(|other| name.strip_prefix(other.as_str()).is_some_and(is_version_suffix)))
            .cloned()
            .collect();
        general.sort();
        Ok(ProviderPrices { models, unknown, general })
    }

    fn price(&self, model: &str) -> (ModelPrice, PriceMatch) {
        if let Some(price) = self.models.get(model) {
            return (*price, PriceMatch::Exact);
        }
        // Longest listed name wins, so `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`, not `gpt-4o`. Two different
        // names of equal length cannot both be prefixes of one model, so the result does not depend on order.
        self.models
            .iter()
            .filter(|(name, _)| model.strip_prefix(name.as_str()).is_some_and(is_version_suffix))
            .max_by_key(|(name, _)| name.len())
            .map_or((self.unknown, PriceMatch::Unknown), |(_, price)| (*price, PriceMatch::Prefix))
    }
}

/// `-2024-08-06`, `-20241022`, `-1-20250805`, `-latest`: a date or version of the same model. Anything else
/// (`-audio-preview`, `-search-preview`, `-realtime`) is a different product with its own prices, so it must
/// not inherit its cheaper text family's.
fn is_version_suffix(rest: &str) -> bool {
    rest.strip_prefix('-').is_some_and(|rest| {
        rest.split('-').all(|part| part == "latest" || (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())))
    })
}

/// The prices in force, validated. Cheap to query; build once and share.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    version: String,
    providers: PerProvider<ProviderPrices>,
    /// Which providers list a model, in catalog order: how a request's model finds its provider.
    listed_by: HashMap<String, Vec<Provider>>,
}

impl PriceTable {
    /// The table shipped in `pricing/prices.json`.
    pub fn builtin() -> PriceTable {
        PriceTable::load(None, &[]).expect("the embedded price table is valid: a unit test parses it")
    }

    /// Parses and validates an operator's table over the shipped one (see [`PriceTable::load`]).
    pub fn from_json(json: &str) -> Result<PriceTable, PriceTableError> {
        PriceTable::load(Some(json), &[])
    }

    /// The shipped table, with the operator's `PRICE_TABLE_FILE` replacing the providers it names (its
    /// `version` then stands for the whole), and the prices declared with providers laid over both: their
    /// `models` added or replaced one by one, their `unknown_model` replaced.
    pub fn load(operator: Option<&str>, declared: &DeclaredPrices) -> Result<PriceTable, PriceTableError> {
        let mut raw = RawTable::parse(BUILTIN, true)?;
        if let Some(json) = operator {
            let mut operator = RawTable::parse(json, false)?;
            raw.version = operator.version;
            let mut named: Vec<String> = operator.models.keys().chain(operator.unknown_model.keys()).cloned().collect();
            named.sort();
            named.dedup();
            for id in named {
                raw.models.insert(id.clone(), operator.models.remove(&id).unwrap_or_default());
                match operator.unknown_model.remove(&id) {
                    Some(unknown) => raw.unknown_model.insert(id, unknown),
                    None => raw.unknown_model.remove(&id),
                };
            }
        }
        for (id, models, unknown) in declared {
            let at = |field: &str| format!("PROVIDERS_FILE providers.{id}.{field}");
            let malformed =
                |field: &str, error: serde_json::Error| PriceTableError::Malformed(format!("{}: {error}", at(field)));
            if let Some(models) = models {
                let models: HashMap<String, RawPrice> =
                    serde_json::from_value(models.clone()).map_err(|error| malformed("models", error))?;
                raw.models.entry(id.clone()).or_default().extend(models);
            }
            if let Some(unknown) = unknown {
                let unknown =
                    serde_json::from_value(unknown.clone()).map_err(|error| malformed("unknown_model", error))?;
                raw.unknown_model.insert(id.clone(), unknown);
            }
        }
        let mut listed_by: HashMap<String, Vec<Provider>> = HashMap::new();
        let providers = PerProvider::try_from_fn(|provider| {
            let id = provider.as_str();
            let raw_unknown = raw.unknown_model.remove(id).ok_or(PriceTableError::MissingUnknownModel(provider))?;
            let prices = ProviderPrices::resolve(provider, &raw_unknown, raw.models.remove(id).unwrap_or_default())?;
            for name in prices.models.keys() {
                listed_by.entry(name.clone()).or_default().push(provider);
            }
            Ok(prices)
        })?;
        Ok(PriceTable { version: raw.version, providers, listed_by })
    }

    /// The table's `version`, recorded with usage so a cost can be traced to the prices that produced it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The price to charge for `model`, and how it was found (log [`PriceMatch::Unknown`]: the table needs it).
    pub fn price(&self, provider: Provider, model: &str) -> (ModelPrice, PriceMatch) {
        self.for_provider(provider).price(model)
    }

    /// Exact cost of a completed call. Use [`PriceTable::price`] to learn how the model matched.
    pub fn cost(&self, provider: Provider, model: &str, usage: &TokenUsage) -> Cents {
        self.price(provider, model).0.cost(usage)
    }

    /// Upper bound of a call's cost before it is made.
    pub fn estimate(&self, provider: Provider, model: &str, budget: &CallBudget) -> Cents {
        self.price(provider, model).0.estimate(budget)
    }

    /// Every model the table lists for `provider`, by name.
    pub fn listed_models(&self, provider: Provider) -> Vec<&str> {
        let mut names: Vec<&str> = self.for_provider(provider).models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The provider's general-purpose text models (see [`crate::domain::recommend`]), by name.
    pub fn general_models(&self, provider: Provider) -> impl Iterator<Item = (&str, ModelPrice)> {
        let prices = self.for_provider(provider);
        prices.general.iter().filter_map(|name| Some((name.as_str(), *prices.models.get(name)?)))
    }

    fn for_provider(&self, provider: Provider) -> &ProviderPrices {
        self.providers.get(provider)
    }

    /// The first declared provider of `style` that lists `model`, or a dated or versioned variant of it
    /// (`mistral-large-2411` is Mistral's `mistral-large`); `None` when none does.
    pub fn provider_of(&self, style: ApiStyle, model: &str) -> Option<Provider> {
        let listing = |name: &str| self.listed_by.get(name)?.iter().copied().find(|p| p.style() == style);
        listing(model).or_else(|| {
            model
                .char_indices()
                .filter(|&(at, c)| c == '-' && is_version_suffix(&model[at..]))
                .find_map(|(at, _)| listing(&model[..at]))
        })
    }
}

/// Converts one table entry to rates, filling what it leaves out: cache prices from its own input price,
/// audio and search from the provider's (expensive) unknown-model entry.
fn resolve(raw: &RawPrice, unknown: Option<&ModelPrice>, at: &str) -> Result<ModelPrice, PriceTableError> {
    let rate = |field: &'static str, usd: f64| -> Result<u64, PriceTableError> {
        if usd.is_finite() && (0.0..=100_000.0).contains(&usd) {
            Ok((usd * NANOS_PER_TOKEN_PER_USD_PER_MTOK).round() as u64)
        } else {
            Err(PriceTableError::InvalidPrice { at: at.to_owned(), field })
        }
    };
    let fee = |field: &'static str, usd: Option<f64>, default: u64| -> Result<u64, PriceTableError> {
        match usd {
            None => Ok(default),
            Some(usd) if usd.is_finite() && (0.0..=100_000.0).contains(&usd) => {
                Ok((usd * NANOS_PER_USD).round() as u64)
            }
            Some(_) => Err(PriceTableError::InvalidPrice { at: at.to_owned(), field }),
        }
    };
    let optional = |field: &'static str, usd: Option<f64>, default: u64| usd.map_or(Ok(default), |u| rate(field, u));
    let input = rate("input_per_mtok_usd", raw.input_per_mtok_usd)?;
    let output = rate("output_per_mtok_usd", raw.output_per_mtok_usd)?;
    let scaled = |multiplier: f64| (input as f64 * multiplier).round() as u64;
    Ok(ModelPrice {
        input,
        output,
        cached_input: optional("cached_input_per_mtok_usd", raw.cached_input_per_mtok_usd, input)?,
        cache_write: optional(
            "cache_write_per_mtok_usd",
            raw.cache_write_per_mtok_usd,
            scaled(CACHE_WRITE_MULTIPLIER),
        )?,
        cache_write_1h: optional(
            "cache_write_1h_per_mtok_usd",
            raw.cache_write_1h_per_mtok_usd,
            scaled(CACHE_WRITE_1H_MULTIPLIER),
        )?,
        audio_input: optional(
            "audio_input_per_mtok_usd",
            raw.audio_input_per_mtok_usd,
            unknown.map_or(input, |u| u.audio_input),
        )?,
        audio_output: optional(
            "audio_output_per_mtok_usd",
            raw.audio_output_per_mtok_usd,
            unknown.map_or(output, |u| u.audio_output),
        )?,
        per_request: fee("per_request_usd", raw.per_request_usd, 0)?,
        web_search: fee("web_search_per_call_usd", raw.web_search_per_call_usd, unknown.map_or(0, |u| u.web_search))?,
        max_output_tokens: raw.max_output_tokens.or(unknown.map(|u| u.max_output_tokens)).unwrap_or(0),
    })
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

    fn openai() -> Provider {
        Provider::openai()
    }

    fn anthropic() -> Provider {
        Provider::anthropic()
    }

    fn builtin_price(provider: Provider, model: &str) -> (ModelPrice, PriceMatch) {
        PriceTable::builtin().price(provider, model)
    }

    /// Input and output rates in US dollars per million tokens, as the table states them.
    fn usd(price: ModelPrice) -> (f64, f64) {
        (price.input_per_mtok_usd(), price.output_per_mtok_usd())
    }

    fn text(prompt: u64, completion: u64) -> TokenUsage {
        TokenUsage::new(prompt, completion)
    }

    const MINIMAL: &str = r#"{
        "version": "test-1",
        "currency": "USD",
        "models": {"openai": {"gpt-4o": {"input_per_mtok_usd": 2.5, "output_per_mtok_usd": 10}}},
        "unknown_model": {
            "openai": {"input_per_mtok_usd": 30, "output_per_mtok_usd": 120, "max_output_tokens": 128000},
            "anthropic": {"input_per_mtok_usd": 15, "output_per_mtok_usd": 75, "max_output_tokens": 128000}
        }
    }"#;

    #[test]
    fn the_builtin_table_parses_and_prices_every_model_the_spec_names() {
        let table = PriceTable::builtin();
        assert_eq!(table.version(), "2026-12-05");
        let required = [
            (openai(), &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini"][..]),
            (openai(), &["gpt-3.5-turbo"]),
            (anthropic(), &["claude-3-5-haiku", "claude-3-5-sonnet", "claude-3-7-sonnet", "claude-sonnet-4"]),
            (anthropic(), &["claude-opus-4", "claude-3-opus", "claude-3-haiku"]),
        ];
        for (provider, models) in required {
            for model in models {
                let (price, matched) = table.price(provider, model);
                assert_eq!(matched, PriceMatch::Exact, "{provider} {model}");
                assert!(price.max_output_tokens >= 4096, "{provider} {model} has an output budget");
            }
        }
    }

    #[test]
    fn unknown_models_cost_at_least_as_much_as_every_common_listed_model() {
        let table = PriceTable::builtin();
        for provider in Provider::all() {
            let prices = table.for_provider(provider);
            // The two pro models are priced above the fallback; they are listed so they are never a fallback.
            for (name, p) in prices.models.iter().filter(|(name, _)| !["o1-pro", "gpt-5-pro"].contains(&name.as_str()))
            {
                assert!(p.input <= prices.unknown.input, "{provider} {name}");
                assert!(p.output <= prices.unknown.output, "{provider} {name}");
                assert!(p.audio_input <= prices.unknown.audio_input, "{provider} {name}");
                assert!(p.audio_output <= prices.unknown.audio_output, "{provider} {name}");
            }
        }
    }

    #[test]
    fn exact_names_match_exactly() {
        assert_eq!(usd(builtin_price(openai(), "gpt-4o").0), (2.5, 10.0));
        assert_eq!(builtin_price(openai(), "gpt-4o").1, PriceMatch::Exact);
        assert_eq!(usd(builtin_price(anthropic(), "claude-opus-4").0), (15.0, 75.0));
        assert_eq!(usd(builtin_price(openai(), "gpt-4o-2024-05-13").0), (5.0, 15.0));
    }

    #[test]
    fn dated_and_versioned_variants_match_the_longest_listed_name() {
        let cases = [
            (openai(), "gpt-4o-2024-08-06", (2.5, 10.0)),
            (openai(), "gpt-4o-mini-2024-07-18", (0.15, 0.6)),
            (openai(), "gpt-4.1-mini-2025-04-14", (0.4, 1.6)),
            (openai(), "gpt-4.1-2025-04-14", (2.0, 8.0)),
            (openai(), "o3-pro-2025-06-10", (20.0, 80.0)),
            (openai(), "o4-mini-2025-04-16", (1.1, 4.4)),
            (openai(), "gpt-4o-audio-preview-2024-12-17", (2.5, 10.0)),
            (anthropic(), "claude-3-5-sonnet-20241022", (3.0, 15.0)),
            (anthropic(), "claude-3-5-haiku-latest", (0.8, 4.0)),
            (anthropic(), "claude-opus-4-1-20250805", (15.0, 75.0)),
            (anthropic(), "claude-opus-4-5-20251101", (5.0, 25.0)),
        ];
        for (provider, model, expected) in cases {
            let (price, matched) = builtin_price(provider, model);
            assert_eq!((usd(price), matched), (expected, PriceMatch::Prefix), "{provider} {model}");
        }
    }

    #[test]
    fn other_products_of_a_family_are_not_priced_as_the_cheaper_text_model() {
        for model in ["gpt-4o-transcribe", "gpt-4o-mini-tts", "gpt-4o-audio", "gpt-4o-mini-search", "gpt-5-codex"] {
            let (price, matched) = builtin_price(openai(), model);
            assert_eq!((usd(price), matched), ((30.0, 120.0), PriceMatch::Unknown), "{model}");
        }
        let (audio, _) = builtin_price(openai(), "gpt-4o-audio-preview");
        assert!(audio.audio_output > audio.output, "audio output is priced as audio");
        let (search, _) = builtin_price(openai(), "gpt-4o-search-preview");
        assert!(search.per_request > 0, "search models carry their per-call fee");
    }

    #[test]
    fn a_suffix_is_only_a_version_after_a_dash() {
        for model in ["gpt-4oo", "gpt-4o_mini", "o3x", "gpt-4o-", "gpt-4o--1", "gpt-5.1", "", "-"] {
            assert_eq!(builtin_price(openai(), model).1, PriceMatch::Unknown, "{model:?}");
        }
    }

    #[test]
    fn models_are_only_looked_up_under_their_own_provider() {
        assert_eq!(builtin_price(anthropic(), "gpt-4o").1, PriceMatch::Unknown);
        assert_eq!(usd(builtin_price(openai(), "claude-3-haiku").0), (30.0, 120.0));
    }

    #[test]
    fn costs_are_exact_fractions_of_a_cent() {
        let table = PriceTable::builtin();
        // gpt-4o-mini, 11 prompt + 3 completion tokens: 11 * 15,000 + 3 * 60,000 billionths of a cent.
        assert_eq!(table.cost(openai(), "gpt-4o-mini", &text(11, 3)), Cents::from_nanos(345_000));
        // gpt-4o: 1000 * $2.50/M = 0.25 c, 500 * $10/M = 0.5 c.
        assert_eq!(table.cost(openai(), "gpt-4o-2024-11-20", &text(1_000, 500)), Cents::parse("0.75").unwrap());
        // claude-sonnet-4: 1000 * $3/M = 0.3 c, 500 * $15/M = 0.75 c.
        assert_eq!(
            table.cost(anthropic(), "claude-sonnet-4-20250514", &text(1_000, 500)),
            Cents::parse("1.05").unwrap()
        );
        assert_eq!(table.cost(anthropic(), "claude-opus-4", &text(0, 1_000_000)), Cents::whole(7_500));
        assert_eq!(table.cost(openai(), "gpt-4o", &TokenUsage::default()), Cents::ZERO);
    }

    #[test]
    fn cached_input_cache_writes_audio_and_searches_have_their_own_rates() {
        let table = PriceTable::builtin();
        // OpenAI: 1,000 prompt tokens of which 800 cached at half price ($1.25/M): 200 * 250,000 + 800 * 125,000.
        let cached = TokenUsage { cached_prompt_tokens: 800, ..text(1_000, 0) };
        assert_eq!(table.cost(openai(), "gpt-4o", &cached), Cents::from_nanos(50_000_000 + 100_000_000));
        // anthropic() sonnet ($3/M): 100 plain, 1,000 cache reads at $0.30, 1,000 5-minute writes at 1.25x ($3.75),
        // 1,000 1-hour writes at 2x ($6).
        let cache_usage = TokenUsage {
            cached_prompt_tokens: 1_000,
            cache_write_tokens: 1_000,
            cache_write_1h_tokens: 1_000,
            ..text(3_100, 0)
        };
        let expected = 100 * 300_000 + 1_000 * 30_000 + 1_000 * 375_000 + 1_000 * 600_000;
        assert_eq!(table.cost(anthropic(), "claude-sonnet-4", &cache_usage), Cents::from_nanos(expected));
        // Audio output of gpt-4o-audio-preview at $80/M, its text at $10/M.
        let audio = TokenUsage { audio_completion_tokens: 100, ..text(0, 150) };
        assert_eq!(
            table.cost(openai(), "gpt-4o-audio-preview", &audio),
            Cents::from_nanos(100 * 8_000_000 + 50 * 1_000_000)
        );
        // A search model's per-call fee, and anthropic()'s $10 per thousand searches.
        assert_eq!(table.cost(openai(), "gpt-4o-search-preview", &TokenUsage::default()), Cents::whole(5));
        let searches = TokenUsage { web_searches: 3, ..TokenUsage::default() };
        assert_eq!(table.cost(anthropic(), "claude-sonnet-4", &searches), Cents::whole(3));
    }

    #[test]
    fn estimates_assume_the_whole_output_budget_at_the_dearest_rate_the_request_can_trigger() {
        let table = PriceTable::builtin();
        let budget =
            CallBudget { prompt_tokens: 2_000, output_tokens: Some(4_000), completions: 1, ..CallBudget::default() };
        // gpt-4o-mini: 2000 * $0.15/M = 0.03 c, 4000 * $0.60/M = 0.24 c.
        assert_eq!(table.estimate(openai(), "gpt-4o-mini", &budget), Cents::parse("0.27").unwrap());
        // Unknown OpenAI model: 2000 * $30/M = 6 c, 4000 * $120/M = 48 c.
        assert_eq!(table.estimate(openai(), "gpt-9-turbo", &budget), Cents::whole(54));
        // No output limit: the model's maximum (16,384 for gpt-4o-mini), per completion.
        let open = CallBudget { output_tokens: None, completions: 2, ..budget };
        assert_eq!(
            table.estimate(openai(), "gpt-4o-mini", &open),
            Cents::per_unit(2_000, 15_000) + Cents::per_unit(2 * 16_384, 60_000)
        );
        // A prompt that may be written to anthropic()'s 1-hour cache is priced at 2x input.
        let cached = CallBudget { cache_writes: true, ..budget };
        assert_eq!(
            table.estimate(anthropic(), "claude-sonnet-4", &cached),
            Cents::per_unit(2_000, 600_000) + Cents::per_unit(4_000, 1_500_000)
        );
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
    fn a_valid_override_replaces_the_builtin_table_and_fills_what_entries_leave_out() {
        let table = PriceTable::from_json(MINIMAL).unwrap();
        assert_eq!(table.version(), "test-1");
        let (gpt4o, matched) = table.price(openai(), "gpt-4o-2024-08-06");
        assert_eq!((usd(gpt4o), matched), ((2.5, 10.0), PriceMatch::Prefix));
        assert_eq!(gpt4o.cached_input, gpt4o.input, "no cache discount unless the table states one");
        assert_eq!(gpt4o.max_output_tokens, 128_000, "the unknown model's output budget");
        assert_eq!((gpt4o.audio_input, gpt4o.audio_output), (3_000_000, 12_000_000), "the unknown model's rates");
        // A provider with no `models` entry prices everything at its fallback.
        assert_eq!(usd(table.price(anthropic(), "claude-3-haiku").0), (15.0, 75.0));
    }

    #[test]
    fn providers_an_override_does_not_name_keep_the_shipped_prices() {
        let table = PriceTable::from_json(MINIMAL).unwrap();
        let mistral = "mistral".parse().unwrap();
        assert_eq!(
            table.price(mistral, "mistral-large-2411").0,
            PriceTable::builtin().price(mistral, "mistral-large").0
        );
    }

    #[test]
    fn a_model_finds_the_provider_that_lists_it_or_a_dated_variant_of_it() {
        let table = PriceTable::builtin();
        let id = |model| table.provider_of(ApiStyle::OpenAi, model).map(Provider::as_str);
        assert_eq!(id("gpt-4o-mini"), Some("openai"));
        assert_eq!(id("mistral-large-latest"), Some("mistral"));
        assert_eq!(id("mistral-small-2506"), Some("mistral"));
        assert_eq!(id("openai/gpt-oss-120b"), Some("groq"), "a listed name with a slash is that provider's model");
        assert_eq!(id("deepseek-chat"), Some("deepseek"));
        assert_eq!(id("gemini-2.0-flash"), Some("gemini"));
        assert_eq!(id("claude-3-5-haiku"), None, "anthropic is not of the openai style");
        assert_eq!(id("gpt-9"), None);
        assert_eq!(
            table.provider_of(ApiStyle::Anthropic, "claude-3-5-haiku-20241022").map(Provider::as_str),
            Some("anthropic")
        );
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
        assert_eq!(edit(r#""gpt-4o": "#, r#""": "#), PriceTableError::EmptyModelName(openai()));
        assert_eq!(
            edit(", \"max_output_tokens\": 128000}\n        }", "}\n        }"),
            PriceTableError::MissingMaxOutput(anthropic())
        );
        let no_anthropic_fallback = r#"{"version": "1", "currency": "USD", "models": {"anthropic": {}},
            "unknown_model": {"openai": {"input_per_mtok_usd": 30, "output_per_mtok_usd": 120, "max_output_tokens": 1}}}"#;
        assert_eq!(
            PriceTable::from_json(no_anthropic_fallback),
            Err(PriceTableError::MissingUnknownModel(anthropic()))
        );
        let message = PriceTableError::MissingUnknownModel(anthropic()).to_string();
        assert!(message.contains("unknown_model"), "{message}");
        let undeclared = MINIMAL.replacen("\"anthropic\": {\"input", "\"acme\": {\"input", 1);
        assert_eq!(PriceTable::from_json(&undeclared), Err(PriceTableError::UndeclaredProvider("acme".into())));

        for (from, to, mentions) in [
            ("\"currency\"", "\"curency\"", "curency"),
            ("output_per_mtok_usd\": 10", "output_per_mtok\": 10", "output_per_mtok"),
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
