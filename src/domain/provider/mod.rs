//! The LLM providers the sidecar can route to, as data: each is a [`Declaration`] in the catalog
//! (`catalog/providers.json`, changed or extended by the operator's `PROVIDERS_FILE`), installed once at
//! startup. A [`Provider`] is a copyable handle to one declaration, so every message, link and rule about a
//! provider is looked up by pointer, never by a per-provider branch in code.
//!
//! Parsed from untrusted input it is still a closed set: only declared ids parse, and an id's shape
//! (`[a-z][a-z0-9_-]*`, at most 32) is checked when it is declared, so a provider name can never smuggle
//! arbitrary text into a Directus filter, an environment variable name or an upstream URL.

mod catalog;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::catalog::{Catalog, CatalogError, Declared, install};

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ApiStyle {
    /// OpenAI's: chat completions, responses, embeddings, models. Also Gemini's, Mistral's, Groq's,
    /// DeepSeek's, xAI's and OpenRouter's, and Azure OpenAI's deployments.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's: messages and count_tokens.
    #[serde(rename = "anthropic")]
    Anthropic,
}

/// How a key travels to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthScheme {
    /// `Authorization: Bearer <key>`.
    #[serde(rename = "bearer")]
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    #[serde(rename = "x-api-key")]
    XApiKey,
    /// `api-key: <key>` (Azure OpenAI).
    #[serde(rename = "api-key")]
    ApiKey,
}

/// Whether a stream reports its usage unasked, or only when the request asks (`stream_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum StreamUsage {
    /// OpenAI's default: the final usage chunk comes only with `stream_options.include_usage`, which the
    /// sidecar adds (and keeps from a client that did not ask for it).
    #[default]
    #[serde(rename = "stream_options")]
    Ask,
    /// The provider reports usage in its last chunk anyway and may refuse `stream_options`: sent as is.
    #[serde(rename = "always")]
    Always,
}

/// Everything the sidecar knows about one provider, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    index: usize,
    id: String,
    /// `MISTRAL_BASE_URL`, `INTERNAL_MISTRAL_API_KEY`, `PLATFORM_DAILY_BUDGET_CENTS_MISTRAL` for `mistral`.
    base_url_var: String,
    internal_key_var: String,
    daily_budget_var: String,
    name: String,
    style: ApiStyle,
    base_url: String,
    auth: AuthScheme,
    /// Known key prefixes, longest first; empty when the provider's keys have none.
    key_prefixes: Vec<String>,
    key_hint: String,
    verify_path: String,
    quota_model: Option<String>,
    stream_usage: StreamUsage,
    signup_url: String,
    keys_url: String,
    billing_url: String,
}

/// A declared provider: a copyable handle into the installed catalog.
#[derive(Clone, Copy)]
pub struct Provider(&'static Declaration);

impl Provider {
    /// Every declared provider, in catalog order (shipped ones first).
    pub fn all() -> impl ExactSizeIterator<Item = Provider> + Clone {
        catalog::installed().providers()
    }

    /// OpenAI, the provider of an OpenAI-style request whose model no declared provider lists.
    pub fn openai() -> Provider {
        catalog::installed().builtin("openai")
    }

    /// Anthropic, the provider of a messages request whose model no declared provider lists.
    pub fn anthropic() -> Provider {
        catalog::installed().builtin("anthropic")
    }

    /// The provider of a request in `style` whose model no declared provider lists.
    pub fn default_for(style: ApiStyle) -> Provider {
        match style {
            ApiStyle::OpenAi => Provider::openai(),
            ApiStyle::Anthropic => Provider::anthropic(),
        }
    }

    /// Position in the catalog: per-provider state is kept in tables indexed by it.
    fn index(self) -> usize {
        self.0.index
    }

    pub fn as_str(self) -> &'static str {
        &self.0.id
    }

    /// `<ID>_BASE_URL`: the operator's API root for the provider.
    pub fn base_url_var(self) -> &'static str {
        &self.0.base_url_var
    }

    /// `INTERNAL_<ID>_API_KEY`: the platform's key, for calls paid with credits.
    pub fn internal_key_var(self) -> &'static str {
        &self.0.internal_key_var
    }

    /// `PLATFORM_DAILY_BUDGET_CENTS_<ID>`: the platform's daily budget on this provider's key.
    pub fn daily_budget_var(self) -> &'static str {
        &self.0.daily_budget_var
    }

    /// The name users know the provider by, for messages.
    pub fn display_name(self) -> &'static str {
        &self.0.name
    }

    pub fn style(self) -> ApiStyle {
        self.0.style
    }

    pub fn auth(self) -> AuthScheme {
        self.0.auth
    }

    pub fn stream_usage(self) -> StreamUsage {
        self.0.stream_usage
    }

    /// The declared API root, unless the operator sets `<ID>_BASE_URL`.
    pub fn declared_base_url(self) -> &'static str {
        &self.0.base_url
    }

    /// An authenticated GET, relative to the base URL, that answers 2xx exactly when the key is accepted.
    pub fn verify_path(self) -> &'static str {
        &self.0.verify_path
    }

    /// A cheap model for a one-token answer, which proves the key's account can pay (see
    /// [`crate::providers::ProviderClient::check_quota`]); `None`: the key check is all there is.
    pub fn quota_model(self) -> Option<&'static str> {
        self.0.quota_model.as_deref()
    }

    /// The declared prefixes of this provider's keys, longest first.
    pub fn key_prefixes(self) -> &'static [String] {
        &self.0.key_prefixes
    }

    /// Where a user creates an API key; every "add your key" message links here.
    pub fn key_page_url(self) -> &'static str {
        &self.0.keys_url
    }

    /// Where a new user creates an account.
    pub fn signup_url(self) -> &'static str {
        &self.0.signup_url
    }

    /// What a key looks like, for people pasting one.
    pub fn key_format_hint(self) -> &'static str {
        &self.0.key_hint
    }

    /// Where a user adds credit or raises quota; quota messages link here.
    pub fn billing_url(self) -> &'static str {
        &self.0.billing_url
    }
}

impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.0.index == other.0.index
    }
}

impl Eq for Provider {}

impl Hash for Provider {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.index.hash(state);
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What provider keys are made of (letters, digits, `-`, `_`): a key is checked against it when it is pasted,
/// a declared key prefix when it is declared.
pub fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// One value per declared provider, found by the provider's index: per-provider state without a map.
#[derive(Debug, Clone, PartialEq)]
pub struct PerProvider<T>(Vec<T>);

impl<T> PerProvider<T> {
    pub fn from_fn(value: impl FnMut(Provider) -> T) -> Self {
        PerProvider(Provider::all().map(value).collect())
    }

    /// [`PerProvider::from_fn`] for values that can fail: the first error, if any.
    pub fn try_from_fn<E>(value: impl FnMut(Provider) -> Result<T, E>) -> Result<Self, E> {
        Provider::all().map(value).collect::<Result<_, _>>().map(PerProvider)
    }

    pub fn get(&self, provider: Provider) -> &T {
        &self.0[provider.index()]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider; expected one of: {}", catalog::installed().ids())]
pub struct UnknownProvider;

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        catalog::installed().get(s).ok_or(UnknownProvider)
    }
}

impl Serialize for Provider {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        id.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_provider_through_its_name() {
        for p in Provider::all() {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            assert_eq!(serde_json::from_value::<Provider>(serde_json::to_value(p).unwrap()).unwrap(), p);
        }
    }

    #[test]
    fn ships_the_providers_apps_bring_keys_for() {
        let ids: Vec<&str> = Provider::all().map(Provider::as_str).collect();
        assert_eq!(ids, ["openai", "anthropic", "gemini", "mistral", "groq", "deepseek", "xai", "openrouter"]);
        let mistral: Provider = "mistral".parse().unwrap();
        assert_eq!((mistral.style(), mistral.base_url_var()), (ApiStyle::OpenAi, "MISTRAL_BASE_URL"));
        assert_eq!(mistral.internal_key_var(), "INTERNAL_MISTRAL_API_KEY");
        assert_eq!(Provider::anthropic().auth(), AuthScheme::XApiKey);
    }

    #[test]
    fn rejects_names_that_are_not_exact() {
        for bad in ["", "OpenAI", "openai ", "../openai", "%2e%2e", "azure", "openai\0", "MISTRAL"] {
            assert_eq!(bad.parse::<Provider>(), Err(UnknownProvider), "{bad:?}");
        }
    }
}
