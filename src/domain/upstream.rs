//! Classifies a provider's error answer into what it means for the key and the caller, per provider.

use serde::Deserialize;

use super::provider::{ApiStyle, Provider};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// 401/403: the key is wrong, revoked or not allowed. Never retried with that key.
    InvalidKey,
    /// The account behind the key has no quota or credit left. Never retried.
    QuotaExhausted,
    /// 429 rate limit: retry later.
    RateLimited,
    /// 5xx, Anthropic 529 `overloaded_error`: the provider is having trouble.
    Outage,
    /// Anything else (400s about the request itself).
    Rejected,
}

impl UpstreamFailure {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::InvalidKey => "invalid_key",
            UpstreamFailure::QuotaExhausted => "quota_exhausted",
            UpstreamFailure::RateLimited => "rate_limited",
            UpstreamFailure::Outage => "outage",
            UpstreamFailure::Rejected => "rejected",
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// Classified by the provider's API style: OpenAI-compatible providers report quota as OpenAI does.
pub fn classify(provider: Provider, status: u16, body: &[u8]) -> UpstreamFailure {
    let detail = serde_json::from_slice::<ErrorBody>(body).ok().and_then(|b| b.error);
    let kind = detail.as_ref().and_then(|d| d.kind.as_deref()).unwrap_or("");
    let code = detail.as_ref().and_then(|d| d.code.as_deref()).unwrap_or("");
    let message = detail.as_ref().and_then(|d| d.message.as_deref()).unwrap_or("").to_ascii_lowercase();
    match (provider.style(), status) {
        (_, 401 | 403) => UpstreamFailure::InvalidKey,
        (_, 402) => UpstreamFailure::QuotaExhausted,
        (ApiStyle::OpenAi, 429) if code == "insufficient_quota" || kind == "insufficient_quota" => {
            UpstreamFailure::QuotaExhausted
        }
        (ApiStyle::Anthropic, 400 | 429) if message.contains("credit balance is too low") => {
            UpstreamFailure::QuotaExhausted
        }
        (_, 429) => UpstreamFailure::RateLimited,
        // A redirect is not followed (see `ProviderClient::new`): the provider cannot be reached as configured.
        (_, 300..=399 | 500..=599) => UpstreamFailure::Outage,
        _ => UpstreamFailure::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamFailure::*;

    #[test]
    fn classifies_the_documented_error_shapes() {
        let openai_quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let openai_rate =
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let anthropic_credit = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        let anthropic_rate = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#;
        let anthropic_overloaded = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let (openai, anthropic) = (Provider::openai(), Provider::anthropic());
        let cases: [(Provider, u16, &[u8], UpstreamFailure); 12] = [
            (openai, 401, b"{}", InvalidKey),
            (anthropic, 403, b"", InvalidKey),
            (openai, 429, openai_quota, QuotaExhausted),
            (openai, 429, openai_rate, RateLimited),
            (anthropic, 400, anthropic_credit, QuotaExhausted),
            (anthropic, 429, anthropic_rate, RateLimited),
            (anthropic, 529, anthropic_overloaded, Outage),
            (openai, 503, b"<html>bad gateway</html>", Outage),
            (openai, 400, b"not json", Rejected),
            (anthropic, 402, b"{}", QuotaExhausted),
            (openai, 429, b"", RateLimited),
            (anthropic, 307, b"", Outage),
        ];
        for (provider, status, body, expected) in cases {
            assert_eq!(classify(provider, status, body), expected, "{provider} {status}");
        }
    }
}
