//! Model aliases and fallback chains, as the operator declares them (`aliases` and `fallbacks` in
//! `PROVIDERS_FILE`): the models a request may be served by, in the order they are tried.

use std::collections::HashMap;

/// Longest chain: each model tried costs the caller a round trip when the ones before it are down.
const MAX_CHAIN: usize = 8;
const MAX_NAME: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChains {
    /// A name clients send (`fast`) and the models it stands for, in order of preference.
    aliases: HashMap<String, Vec<String>>,
    /// A model and the models that serve its calls while it cannot.
    fallbacks: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("`{0}` names an empty or over-long model (1-200 characters)")]
    Name(String),
    #[error("`{0}` needs 1 to 8 models")]
    Length(String),
}

impl ModelChains {
    pub fn new(aliases: HashMap<String, Vec<String>>, fallbacks: HashMap<String, Vec<String>>) -> Self {
        ModelChains { aliases, fallbacks }
    }

    /// Every name within bounds, every chain 1-8 models long.
    pub fn validate(&self) -> Result<(), ChainError> {
        let lists = self.aliases.iter().map(|(n, c)| (format!("aliases.{n}"), n, c));
        let lists = lists.chain(self.fallbacks.iter().map(|(n, c)| (format!("fallbacks.{n}"), n, c)));
        for (at, name, chain) in lists {
            let bad = |model: &String| model.trim().is_empty() || model.chars().count() > MAX_NAME;
            if bad(name) || chain.iter().any(bad) {
                return Err(ChainError::Name(at));
            }
            if !(1..=MAX_CHAIN).contains(&chain.len()) {
                return Err(ChainError::Length(at));
            }
        }
        Ok(())
    }

    /// The models to try for a request naming `asked`, in order: an alias's models, else `asked` and its
    /// fallbacks. Nothing declared: `asked` alone.
    pub fn chain<'a>(&'a self, asked: &'a str) -> Vec<&'a str> {
        if let Some(models) = self.aliases.get(asked) {
            return models.iter().map(String::as_str).collect();
        }
        let fallbacks = self.fallbacks.get(asked).into_iter().flatten().map(String::as_str);
        std::iter::once(asked).chain(fallbacks).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.fallbacks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(json: serde_json::Value) -> ModelChains {
        let part = |name: &str| serde_json::from_value(json.get(name).cloned().unwrap_or_default()).unwrap_or_default();
        ModelChains::new(part("aliases"), part("fallbacks"))
    }

    #[test]
    fn an_alias_stands_for_its_models_and_a_model_is_followed_by_its_fallbacks() {
        let chains = chains(serde_json::json!({
            "aliases": {"fast": ["gpt-4o-mini", "gemini-2.0-flash"]},
            "fallbacks": {"gpt-4o": ["mistral-large-latest"]}
        }));
        assert_eq!(chains.chain("fast"), ["gpt-4o-mini", "gemini-2.0-flash"]);
        assert_eq!(chains.chain("gpt-4o"), ["gpt-4o", "mistral-large-latest"]);
        assert_eq!(chains.chain("o3"), ["o3"]);
        assert!(chains.validate().is_ok() && !chains.is_empty());
    }

    #[test]
    fn empty_or_overlong_chains_and_names_are_refused() {
        let cases = [
            (serde_json::json!({"aliases": {"fast": []}}), ChainError::Length("aliases.fast".into())),
            (serde_json::json!({"fallbacks": {"gpt-4o": vec!["a"; 9]}}), ChainError::Length("fallbacks.gpt-4o".into())),
            (serde_json::json!({"fallbacks": {"gpt-4o": [" "]}}), ChainError::Name("fallbacks.gpt-4o".into())),
            (serde_json::json!({"aliases": {"": ["gpt-4o"]}}), ChainError::Name("aliases.".into())),
        ];
        for (json, expected) in cases {
            assert_eq!(chains(json).validate(), Err(expected));
        }
    }
}
