//! The providers: which are declared (`PROVIDERS_FILE` over the shipped catalog), where each one's API is,
//! the platform's key for it, and the prices calls are charged at.

use std::sync::Arc;

use reqwest::Url;
use secrecy::SecretString;

use super::reader::Reader;
use crate::domain::model_chains::ModelChains;
use crate::domain::pricing::{DeclaredPrices, PriceTable};
use crate::domain::provider::{Catalog, PerProvider, Provider, install};

/// Per declared provider: its API root and the platform's key.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// `<ID>_BASE_URL`, else the declared one. OpenAI-style roots include `/v1` (SDK convention);
    /// Anthropic's does not.
    pub base_urls: PerProvider<Url>,
    /// `INTERNAL_<ID>_API_KEY`: calls paid with credits use it; without it the provider serves own keys only.
    pub internal_keys: PerProvider<Option<SecretString>>,
    /// The operator's `aliases` and `fallbacks`.
    pub model_chains: Arc<ModelChains>,
    /// `OWN_KEY_RATE_LIMIT_FALLBACK`: in BYOK-first mode, a user's key the provider rate limits falls back to
    /// credits, as an invalid or exhausted one does.
    pub rate_limited_own_keys_fall_back: bool,
}

/// Reads and installs the catalog first: every per-provider variable is named after a declared provider.
/// The price table is `None` when it could not be built (a problem says why).
pub(super) fn read<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> (ProviderSettings, Option<Arc<PriceTable>>) {
    let file = r.get("PROVIDERS_FILE").and_then(|path| {
        std::fs::read_to_string(path.trim())
            .map_err(|e| r.problem("PROVIDERS_FILE", format!("cannot be read: {e}"), FIX_PROVIDERS))
            .ok()
    });
    let declared = match Catalog::declare(file.as_deref()) {
        Ok(declared) => declared,
        Err(error) => {
            r.problem("PROVIDERS_FILE", error.to_string(), FIX_PROVIDERS);
            Catalog::declare(None).expect("the shipped catalog is valid")
        }
    };
    if let Err(error) = install(declared.catalog) {
        r.problem("PROVIDERS_FILE", error.to_string(), "Start one process per catalog");
    }
    let base_urls = PerProvider::from_fn(|provider| r.url(provider.base_url_var(), provider.declared_base_url()));
    let internal_keys = PerProvider::from_fn(|provider: Provider| {
        r.get(provider.internal_key_var()).map(|key| SecretString::from(key.trim()))
    });
    let prices = price_table(r, &declared.prices);
    let rate_limited_own_keys_fall_back = r.boolean(
        "OWN_KEY_RATE_LIMIT_FALLBACK",
        false,
        "Use true to serve a BYOK-first user on credits while their own key is rate limited",
    );
    let settings = ProviderSettings {
        base_urls,
        internal_keys,
        model_chains: Arc::new(declared.chains),
        rate_limited_own_keys_fall_back,
    };
    (settings, prices)
}

const FIX_PROVIDERS: &str =
    "Point it at a JSON file shaped like catalog/providers.json (see the README, \"Providers\")";

/// The shipped price table, the operator's `PRICE_TABLE_FILE` over it, and the prices providers declare.
fn price_table<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>, declared: &DeclaredPrices) -> Option<Arc<PriceTable>> {
    let operator = match r.get("PRICE_TABLE_FILE") {
        None => None,
        Some(path) => match std::fs::read_to_string(path.trim()) {
            Ok(text) => Some(text),
            Err(e) => {
                r.problem("PRICE_TABLE_FILE", format!("cannot be read: {e}"), FIX_PRICES);
                None
            }
        },
    };
    match PriceTable::load(operator.as_deref(), declared) {
        Ok(table) => Some(Arc::new(table)),
        Err(problem) => {
            let var = if operator.is_some() { "PRICE_TABLE_FILE" } else { "PROVIDERS_FILE" };
            r.problem(var, problem.to_string(), FIX_PRICES);
            None
        }
    }
}

const FIX_PRICES: &str = "Point it at a JSON price table like pricing/prices.json; every provider needs an \
                          `unknown_model` price";
