use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::provider::Provider;

const MIN_LEN: usize = 20;
const MAX_LEN: usize = 512;

/// A user's plaintext provider API key. Only exists between parsing a request (or opening an envelope) and
/// sealing it or sending it upstream; zeroized on drop and never printed.
#[derive(Clone)]
pub struct ProviderKey(SecretString);

/// What is wrong with a submitted key. Never contains the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("The API key is empty.")]
    Empty,
    #[error("The API key must be between 20 and 512 characters long.")]
    Length,
    #[error("The API key may only contain letters, digits, '-' and '_'.")]
    Characters,
    #[error("This does not look like an {expected} API key: {expected} keys start with \"{prefix}\".", expected = .provider.display_name(), prefix = key_prefix(*.provider))]
    WrongPrefix { provider: Provider },
    #[error("This looks like an Anthropic key, but it was submitted for OpenAI.")]
    AnthropicKeyForOpenAi,
}

fn key_prefix(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "sk-",
        Provider::Anthropic => "sk-ant-",
    }
}

impl ProviderKey {
    /// Checks the shape of a key for `provider`. Surrounding whitespace (a common paste artefact) is dropped.
    pub fn parse(provider: Provider, raw: &str) -> Result<Self, KeyFormatError> {
        let key = raw.trim();
        if key.is_empty() {
            return Err(KeyFormatError::Empty);
        }
        if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
            return Err(KeyFormatError::Length);
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(KeyFormatError::Characters);
        }
        if provider == Provider::OpenAi && key.starts_with("sk-ant-") {
            return Err(KeyFormatError::AnthropicKeyForOpenAi);
        }
        if !key.starts_with(key_prefix(provider)) {
            return Err(KeyFormatError::WrongPrefix { provider });
        }
        Ok(ProviderKey(SecretString::from(key)))
    }

    /// Rebuilds a key opened from the vault (already checked when it was stored).
    pub fn from_opened(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(|s| ProviderKey(SecretString::from(s)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A masked form users recognise their key by, e.g. `sk-proj-...AbCd`: the public prefix and the last 4.
    pub fn hint(&self) -> String {
        let key = self.expose();
        let prefix =
            ["sk-ant-", "sk-proj-", "sk-svcacct-", "sk-"].into_iter().find(|p| key.starts_with(p)).unwrap_or("");
        format!("{prefix}...{}", &key[key.len() - 4..])
    }
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123AbCd";
    const ANTHROPIC: &str = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz-WxYz";

    #[test]
    fn accepts_real_shaped_keys_and_masks_them() {
        let key = ProviderKey::parse(Provider::OpenAi, &format!("  {OPENAI}\n")).unwrap();
        assert_eq!(key.expose(), OPENAI);
        assert_eq!(key.hint(), "sk-proj-...AbCd");
        let key = ProviderKey::parse(Provider::Anthropic, ANTHROPIC).unwrap();
        assert_eq!(key.hint(), "sk-ant-...WxYz");
        assert!(key.hint().len() <= 24, "the hook refuses longer hints");
        assert_eq!(format!("{key:?}"), "ProviderKey([REDACTED])");
    }

    #[test]
    fn refuses_malformed_keys_without_quoting_them() {
        use KeyFormatError::*;
        let cases = [
            (Provider::OpenAi, "   ", Empty),
            (Provider::OpenAi, "sk-short", Length),
            (Provider::OpenAi, &format!("sk-{}", "a".repeat(600)), Length),
            (Provider::OpenAi, "sk-proj-abc def ghi jkl mno pqr", Characters),
            (Provider::OpenAi, "sk-proj-abcdefghijklmnop\"}", Characters),
            (Provider::OpenAi, "pk-proj-abcdefghijklmnopqrstuvwxyz", WrongPrefix { provider: Provider::OpenAi }),
            (Provider::OpenAi, ANTHROPIC, AnthropicKeyForOpenAi),
            (Provider::Anthropic, OPENAI, WrongPrefix { provider: Provider::Anthropic }),
        ];
        for (provider, raw, expected) in cases {
            let err = ProviderKey::parse(provider, raw).unwrap_err();
            assert_eq!(err, expected, "{raw:?}");
            assert!(!err.to_string().contains(raw.trim()) || raw.trim().is_empty());
        }
    }
}
