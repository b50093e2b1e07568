use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An LLM provider the sidecar can route to. Parsed from untrusted input, so it is a closed set:
/// a provider name can never smuggle arbitrary text into a Directus filter or an upstream URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::OpenAi, Provider::Anthropic];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The name users know the provider by, for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Provider::OpenAi => "OpenAI",
            Provider::Anthropic => "Anthropic",
        }
    }

    /// Where a user creates an API key; every "add your key" message links here.
    pub fn key_page_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://platform.openai.com/api-keys",
            Provider::Anthropic => "https://console.anthropic.com/settings/keys",
        }
    }
}

impl Provider {
    /// Where a new user creates an account.
    pub fn signup_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://platform.openai.com/signup",
            Provider::Anthropic => "https://console.anthropic.com/",
        }
    }

    /// What a key looks like, for people pasting one.
    pub fn key_format_hint(self) -> &'static str {
        match self {
            Provider::OpenAi => "Starts with \"sk-\" (project keys: \"sk-proj-\"); letters, digits, - and _.",
            Provider::Anthropic => "Starts with \"sk-ant-\"; letters, digits, - and _.",
        }
    }

    /// Where a user adds credit or raises quota; quota messages link here.
    pub fn billing_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://platform.openai.com/settings/organization/billing",
            Provider::Anthropic => "https://console.anthropic.com/settings/billing",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider; expected one of: openai, anthropic")]
pub struct UnknownProvider;

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            _ => Err(UnknownProvider),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_provider_through_its_name() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
        }
    }

    #[test]
    fn rejects_names_that_are_not_exact() {
        for bad in ["", "OpenAI", "openai ", "../openai", "%2e%2e", "azure", "openai\0"] {
            assert_eq!(bad.parse::<Provider>(), Err(UnknownProvider), "{bad:?}");
        }
    }
}
