use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::provider::{Provider, is_key_byte};

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
    #[error("This does not look like an {expected} API key: {hint}", expected = .provider.display_name(), hint = .provider.key_format_hint())]
    WrongPrefix { provider: Provider },
    #[error("This looks like {} key, but it was submitted for {}.", article(.looks_like.display_name()), .submitted_for.display_name())]
    OtherProvidersKey { looks_like: Provider, submitted_for: Provider },
}

fn article(name: &str) -> String {
    let an = name.starts_with(['A', 'E', 'I', 'O', 'U']);
    format!("{} {name}", if an { "an" } else { "a" })
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
        if !key.bytes().all(is_key_byte) {
            return Err(KeyFormatError::Characters);
        }
        // Another provider's more specific prefix (`sk-ant-` or `sk-or-` where `sk-` is expected) says whose
        // key it is better than "wrong prefix" would.
        let own = longest_prefix(provider, key).map_or(0, str::len);
        if let Some(other) = Provider::all()
            .filter(|other| *other != provider)
            .find(|other| longest_prefix(*other, key).is_some_and(|prefix| prefix.len() > own))
        {
            return Err(KeyFormatError::OtherProvidersKey { looks_like: other, submitted_for: provider });
        }
        if !provider.key_prefixes().is_empty() && own == 0 {
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

    /// A masked form users recognise their key by, e.g. `sk-proj-...AbCd`: the provider's public prefix and
    /// the last 4.
    pub fn hint(&self, provider: Provider) -> String {
        let key = self.expose();
        let prefix = longest_prefix(provider, key).unwrap_or("");
        format!("{prefix}...{}", &key[key.len() - 4..])
    }
}

/// The longest of `provider`'s declared key prefixes that `key` starts with.
fn longest_prefix(provider: Provider, key: &str) -> Option<&'static str> {
    provider.key_prefixes().iter().map(String::as_str).find(|prefix| key.starts_with(prefix))
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
        let key = ProviderKey::parse(Provider::openai(), &format!("  {OPENAI}\n")).unwrap();
        assert_eq!(key.expose(), OPENAI);
        assert_eq!(key.hint(Provider::openai()), "sk-proj-...AbCd");
        let key = ProviderKey::parse(Provider::anthropic(), ANTHROPIC).unwrap();
        assert_eq!(key.hint(Provider::anthropic()), "sk-ant-...WxYz");
        assert!(key.hint(Provider::anthropic()).len() <= 24, "the hook refuses longer hints");
        let mistral: Provider = "mistral".parse().unwrap();
        let key = ProviderKey::parse(mistral, "FAKEnotArealMistralKey0000002345").unwrap();
        assert_eq!(key.hint(mistral), "...2345", "no declared prefix: only the last 4");
        assert_eq!(format!("{key:?}"), "ProviderKey([REDACTED])");
    }

    #[test]
    fn refuses_malformed_keys_without_quoting_them() {
        use KeyFormatError::*;
        let cases = [
            (Provider::openai(), "   ", Empty),
            (Provider::openai(), "sk-short", Length),
            (Provider::openai(), &format!("sk-{}", "a".repeat(600)), Length),
            (Provider::openai(), "sk-proj-abc def ghi jkl mno pqr", Characters),
            (Provider::openai(), "sk-proj-abcdefghijklmnop\"}", Characters),
            (Provider::openai(), "pk-proj-abcdefghijklmnopqrstuvwxyz", WrongPrefix { provider: Provider::openai() }),
            (
                Provider::openai(),
                ANTHROPIC,
                OtherProvidersKey { looks_like: Provider::anthropic(), submitted_for: Provider::openai() },
            ),
            (
                Provider::openai(),
                "sk-or-v1-FAKE-not-a-real-key-0000",
                OtherProvidersKey { looks_like: "openrouter".parse().unwrap(), submitted_for: Provider::openai() },
            ),
            (
                Provider::anthropic(),
                OPENAI,
                OtherProvidersKey { looks_like: Provider::openai(), submitted_for: Provider::anthropic() },
            ),
            (
                Provider::anthropic(),
                "ak-ant-FAKE-not-a-real-key-00000",
                WrongPrefix { provider: Provider::anthropic() },
            ),
        ];
        for (provider, raw, expected) in cases {
            let expected: KeyFormatError = expected;
            let err = ProviderKey::parse(provider, raw).unwrap_err();
            assert_eq!(err, expected, "{raw:?}");
            assert!(!err.to_string().contains(raw.trim()) || raw.trim().is_empty());
        }
    }
}
