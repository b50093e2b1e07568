//! Reads, merges and validates provider declarations, and holds the one catalog a process uses.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::{ApiStyle, AuthScheme, Declaration, Provider, StreamUsage, is_key_byte};
use crate::domain::model_chains::{ChainError, ModelChains};

const SHIPPED: &str = include_str!("../../../catalog/providers.json");
const MAX_ID_LEN: usize = 32;
/// The providers of requests whose model no declared provider lists: always declared.
const DEFAULTS: [&str; 2] = ["openai", "anthropic"];

static INSTALLED: OnceLock<Catalog> = OnceLock::new();

/// The catalog in use: the one [`install`]ed at startup, else the shipped one.
pub(super) fn installed() -> &'static Catalog {
    INSTALLED.get_or_init(Catalog::shipped)
}

/// Makes `catalog` the process's catalog. Call it once at startup, before anything reads a provider; a
/// process cannot serve two catalogs, so installing a different one later fails.
pub fn install(catalog: Catalog) -> Result<(), CatalogError> {
    if *INSTALLED.get_or_init(|| catalog.clone()) == catalog { Ok(()) } else { Err(CatalogError::AlreadyInstalled) }
}

/// Every declared provider, validated, in order: shipped ones first, then the operator's new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    providers: Vec<Declaration>,
}

/// A catalog, the prices its declarations carry (for the price table), and the operator's model chains.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub catalog: Catalog,
    /// Per provider id: its declared `models` and `unknown_model` prices, in the price table's shape.
    pub prices: Vec<(String, Option<Value>, Option<Value>)>,
    /// `aliases` and `fallbacks`.
    pub chains: ModelChains,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("PROVIDERS_FILE is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("PROVIDERS_FILE declares provider {0:?}: an id is 1-32 of a-z, 0-9, '-' and '_', starting with a letter")]
    InvalidId(String),
    #[error("PROVIDERS_FILE declares provider {0:?} twice")]
    Duplicate(String),
    #[error("PROVIDERS_FILE: new provider {id:?} needs `{field}`")]
    Missing { id: String, field: &'static str },
    #[error("PROVIDERS_FILE: provider {id:?} has an invalid `{field}`: {reason}")]
    Invalid { id: String, field: &'static str, reason: &'static str },
    #[error("a different provider catalog is already in use by this process")]
    AlreadyInstalled,
    #[error("PROVIDERS_FILE: {0}")]
    Chain(#[from] ChainError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Free text for people editing the file; accepted and ignored.
    #[serde(default, rename = "description")]
    _description: IgnoredAny,
    #[serde(default)]
    providers: Vec<RawDeclaration>,
    #[serde(default)]
    aliases: HashMap<String, Vec<String>>,
    #[serde(default)]
    fallbacks: HashMap<String, Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    id: String,
    name: Option<String>,
    api: Option<ApiStyle>,
    base_url: Option<String>,
    auth: Option<AuthScheme>,
    key: Option<RawKey>,
    verify: Option<RawVerify>,
    stream_usage: Option<StreamUsage>,
    links: Option<RawLinks>,
    models: Option<Value>,
    unknown_model: Option<Value>,
    /// `false` takes a shipped provider out: users cannot save keys for it, no model routes to it.
    enabled: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawKey {
    prefixes: Vec<String>,
    hint: String,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    path: String,
    /// A cheap model for a one-token answer: the check that proves an account can pay, which listing models
    /// does not.
    quota_model: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawLinks {
    signup: String,
    keys: String,
    billing: String,
}

impl Catalog {
    /// The providers shipped in `catalog/providers.json`.
    pub fn shipped() -> Catalog {
        Catalog::declare(None).expect("the shipped catalog is valid: a unit test reads it").catalog
    }

    /// The shipped providers with the operator's file (`PROVIDERS_FILE`) laid over them: an entry with a
    /// shipped id changes the fields it gives (`"enabled": false` takes it out); a new id declares a
    /// provider and must give every field.
    pub fn declare(operator_file: Option<&str>) -> Result<Declared, CatalogError> {
        let (mut entries, _) = parse(SHIPPED)?;
        let (operator, chains) = operator_file.map(parse).transpose()?.unwrap_or_default();
        chains.validate()?;
        for entry in operator {
            match entries.iter_mut().find(|shipped| shipped.id == entry.id) {
                Some(shipped) => shipped.overlay(entry),
                None => entries.push(entry),
            }
        }
        if let Some(default) = entries.iter().find(|e| e.enabled == Some(false) && DEFAULTS.contains(&e.id.as_str())) {
            return Err(CatalogError::Invalid {
                id: default.id.clone(),
                field: "enabled",
                reason: "openai and anthropic serve the models no other provider lists; they cannot be disabled",
            });
        }
        entries.retain(|entry| entry.enabled != Some(false));
        let mut providers = Vec::with_capacity(entries.len());
        let mut prices = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            prices.push((entry.id.clone(), entry.models.clone(), entry.unknown_model.clone()));
            providers.push(entry.validate(index)?);
        }
        Ok(Declared { catalog: Catalog { providers }, prices, chains })
    }

    pub(super) fn providers(&'static self) -> impl ExactSizeIterator<Item = Provider> + Clone {
        self.providers.iter().map(Provider)
    }

    pub(super) fn get(&'static self, id: &str) -> Option<Provider> {
        self.providers.iter().find(|declaration| declaration.id == id).map(Provider)
    }

    /// `openai` or `anthropic`: an operator's file can change them but never take them out.
    pub(super) fn builtin(&'static self, id: &str) -> Provider {
        self.get(id).expect("shipped providers are always declared")
    }

    pub(super) fn ids(&self) -> String {
        self.providers.iter().map(|declaration| declaration.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn parse(json: &str) -> Result<(Vec<RawDeclaration>, ModelChains), CatalogError> {
    let file: RawFile = serde_json::from_str(json).map_err(|error| CatalogError::Malformed(error.to_string()))?;
    let mut seen = Vec::new();
    for entry in &file.providers {
        if !valid_id(&entry.id) {
            return Err(CatalogError::InvalidId(entry.id.clone()));
        }
        if seen.contains(&entry.id.as_str()) {
            return Err(CatalogError::Duplicate(entry.id.clone()));
        }
        seen.push(&entry.id);
    }
    Ok((file.providers, ModelChains::new(file.aliases, file.fallbacks)))
}

fn valid_id(id: &str) -> bool {
    id.len() <= MAX_ID_LEN
        && id.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl RawDeclaration {
    fn overlay(&mut self, entry: RawDeclaration) {
        let RawDeclaration {
            id: _,
            name,
            api,
            base_url,
            auth,
            key,
            verify,
            stream_usage,
            links,
            models,
            unknown_model,
            enabled,
        } = entry;
        self.enabled = enabled.or(self.enabled);
        self.name = name.or(self.name.take());
        self.api = api.or(self.api);
        self.base_url = base_url.or(self.base_url.take());
        self.auth = auth.or(self.auth);
        self.key = key.or(self.key.take());
        self.verify = verify.or(self.verify.take());
        self.stream_usage = stream_usage.or(self.stream_usage);
        self.links = links.or(self.links.take());
        self.models = models.or(self.models.take());
        self.unknown_model = unknown_model.or(self.unknown_model.take());
    }

    fn validate(self, index: usize) -> Result<Declaration, CatalogError> {
        let id = self.id;
        let missing = |field| CatalogError::Missing { id: id.clone(), field };
        let invalid = |field, reason| CatalogError::Invalid { id: id.clone(), field, reason };
        let name = self.name.ok_or_else(|| missing("name"))?;
        if name.trim().is_empty() || name.len() > 64 {
            return Err(invalid("name", "1 to 64 characters"));
        }
        let base_url = self.base_url.ok_or_else(|| missing("base_url"))?;
        web_url(&base_url, false).ok_or_else(|| invalid("base_url", "an http or https URL without query"))?;
        let key = self.key.ok_or_else(|| missing("key"))?;
        let mut key_prefixes = key.prefixes;
        if key_prefixes.iter().any(|p| p.is_empty() || p.len() > 16 || !p.bytes().all(is_key_byte)) {
            return Err(invalid("key.prefixes", "each 1-16 of letters, digits, '-' and '_'"));
        }
        key_prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let RawVerify { path: verify_path, quota_model } = self.verify.ok_or_else(|| missing("verify"))?;
        let model_ok = |model: &String| {
            (1..=100).contains(&model.len()) && model.bytes().all(|b| is_key_byte(b) || b"./:".contains(&b))
        };
        if quota_model.as_ref().is_some_and(|model| !model_ok(model)) {
            return Err(invalid("verify.quota_model", "a model name such as \"gpt-4o-mini\""));
        }
        let path_ok = !verify_path.is_empty()
            && !verify_path.starts_with('/')
            && verify_path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
            && verify_path.bytes().all(|b| is_key_byte(b) || b == b'/' || b == b'.');
        if !path_ok {
            return Err(invalid("verify.path", "a relative path such as \"models\""));
        }
        let links = self.links.ok_or_else(|| missing("links"))?;
        for (field, url) in
            [("links.signup", &links.signup), ("links.keys", &links.keys), ("links.billing", &links.billing)]
        {
            web_url(url, true).ok_or_else(|| invalid(field, "an https URL"))?;
        }
        Ok(Declaration {
            index,
            base_url_var: format!("{}_BASE_URL", env_name(&id)),
            internal_key_var: format!("INTERNAL_{}_API_KEY", env_name(&id)),
            daily_budget_var: format!("PLATFORM_DAILY_BUDGET_CENTS_{}", env_name(&id)),
            name,
            style: self.api.ok_or_else(|| missing("api"))?,
            base_url,
            auth: self.auth.ok_or_else(|| missing("auth"))?,
            key_prefixes,
            key_hint: key.hint,
            verify_path,
            quota_model,
            stream_usage: self.stream_usage.unwrap_or_default(),
            signup_url: links.signup,
            keys_url: links.keys,
            billing_url: links.billing,
            id,
        })
    }
}

/// `MY_PROXY` for `my-proxy`: how the id appears in environment variable names.
fn env_name(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}

/// Links shown to users must be https; an API root may be plain http (a local proxy, a test double).
fn web_url(text: &str, https_only: bool) -> Option<url::Url> {
    let url = url::Url::parse(text).ok()?;
    let scheme_ok = url.scheme() == "https" || (!https_only && url.scheme() == "http");
    (scheme_ok && url.has_host() && url.query().is_none() && url.username().is_empty()).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(file: &str) -> Result<Declared, CatalogError> {
        Catalog::declare(Some(file))
    }

    const ACME: &str = r#"{"providers":[{"id":"acme","name":"Acme AI","api":"openai","base_url":"http://127.0.0.1:9/v1",
        "auth":"api-key","key":{"prefixes":["acme-"],"hint":"Starts with acme-."},"verify":{"path":"models"},
        "links":{"signup":"https://acme.example/","keys":"https://acme.example/keys","billing":"https://acme.example/billing"},
        "unknown_model":{"input_per_mtok_usd":1,"output_per_mtok_usd":2,"max_output_tokens":4096}}]}"#;

    #[test]
    fn the_operator_adds_a_provider_after_the_shipped_ones() {
        let declared = declare(ACME).unwrap();
        let acme = declared.catalog.providers.last().unwrap();
        assert_eq!((acme.index, acme.id.as_str(), acme.auth), (8, "acme", AuthScheme::ApiKey));
        assert_eq!(acme.stream_usage, StreamUsage::Ask);
        let (_, models, unknown) = declared.prices.last().unwrap();
        assert!(models.is_none() && unknown.is_some());
    }

    #[test]
    fn the_operator_changes_only_the_fields_given_for_a_shipped_provider() {
        let declared =
            declare(r#"{"providers":[{"id":"mistral","name":"Mistral (EU)","base_url":"https://eu.example/v1"}]}"#)
                .unwrap();
        let mistral = &declared.catalog.providers[3];
        assert_eq!((mistral.name.as_str(), mistral.base_url.as_str()), ("Mistral (EU)", "https://eu.example/v1"));
        assert_eq!(mistral.keys_url, "https://console.mistral.ai/api-keys", "kept from the shipped declaration");
        assert_eq!(declared.catalog.providers.len(), 8);
    }

    #[test]
    fn the_operator_takes_shipped_providers_out_but_never_the_defaults() {
        let declared =
            declare(r#"{"providers":[{"id":"xai","enabled":false},{"id":"groq","enabled":false}]}"#).unwrap();
        let ids: Vec<&str> = declared.catalog.providers.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["openai", "anthropic", "gemini", "mistral", "deepseek", "openrouter"]);
        assert_eq!(declared.catalog.providers.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        let refused = declare(r#"{"providers":[{"id":"anthropic","enabled":false}]}"#).unwrap_err();
        assert!(matches!(refused, CatalogError::Invalid { field: "enabled", .. }), "{refused:?}");
    }

    #[test]
    fn refuses_declarations_that_could_smuggle_text_or_are_incomplete() {
        let cases = [
            (r#"{"providers":[{"id":"../x"}]}"#, CatalogError::InvalidId("../x".into())),
            (r#"{"providers":[{"id":"Acme"}]}"#, CatalogError::InvalidId("Acme".into())),
            (r#"{"providers":[{"id":"a"},{"id":"a"}]}"#, CatalogError::Duplicate("a".into())),
            (
                r#"{"providers":[{"id":"acme","name":"Acme"}]}"#,
                CatalogError::Missing { id: "acme".into(), field: "base_url" },
            ),
            (
                r#"{"providers":[{"id":"openai","verify":{"path":"../admin"}}]}"#,
                CatalogError::Invalid {
                    id: "openai".into(),
                    field: "verify.path",
                    reason: "a relative path such as \"models\"",
                },
            ),
            (
                r#"{"providers":[{"id":"openai","base_url":"file:///etc/passwd"}]}"#,
                CatalogError::Invalid {
                    id: "openai".into(),
                    field: "base_url",
                    reason: "an http or https URL without query",
                },
            ),
            (
                r#"{"providers":[{"id":"openai","links":{"signup":"http://x.example","keys":"https://x.example","billing":"https://x.example"}}]}"#,
                CatalogError::Invalid { id: "openai".into(), field: "links.signup", reason: "an https URL" },
            ),
        ];
        for (file, expected) in cases {
            assert_eq!(declare(file).unwrap_err(), expected, "{file}");
        }
        assert!(matches!(declare(r#"{"providers":[{"id":"x","colour":"red"}]}"#), Err(CatalogError::Malformed(_))));
    }

    #[test]
    fn the_shipped_catalog_is_valid_and_keys_prefixes_are_longest_first() {
        let catalog = Catalog::shipped();
        let openai = &catalog.providers[0];
        assert_eq!(openai.key_prefixes.first().map(String::as_str), Some("sk-svcacct-"));
        assert_eq!(openai.key_prefixes.last().map(String::as_str), Some("sk-"));
    }
}
