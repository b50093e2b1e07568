//! Usage as the providers report it, with the parts billed at other rates (cache, audio, searches).

use serde_json::Value;

use super::Api;
use crate::domain::usage::TokenUsage;

/// Usage from a complete (non-streaming) response body; `None` when it has none or is not JSON. Only `usage` is
/// built: the rest of the answer (the generated text, however long) is checked and skipped.
pub fn usage_from_response(api: Api, body: &[u8]) -> Option<TokenUsage> {
    #[derive(serde::Deserialize)]
    struct Answer {
        usage: Option<Value>,
    }
    let usage = serde_json::from_slice::<Answer>(body).ok()?.usage?;
    match api {
        Api::ChatCompletions | Api::Embeddings => openai_usage(&usage),
        Api::Messages => anthropic_usage(&usage),
        Api::Responses => responses_usage(&usage),
        Api::CountTokens => None,
    }
}

/// The whole number at `path` (keys of nested objects), or 0. By key, not `Value::pointer`, which allocates
/// two strings a segment: this runs on every call's answer.
fn field(value: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(value, |value, key| value.get(key)).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI's `usage`: `prompt_tokens` includes cached and audio tokens, `completion_tokens` includes
/// reasoning and audio tokens.
pub(super) fn openai_usage(usage: &Value) -> Option<TokenUsage> {
    Some(TokenUsage {
        prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
        completion_tokens: field(usage, &["completion_tokens"]),
        cached_prompt_tokens: field(usage, &["prompt_tokens_details", "cached_tokens"]),
        audio_prompt_tokens: field(usage, &["prompt_tokens_details", "audio_tokens"]),
        audio_completion_tokens: field(usage, &["completion_tokens_details", "audio_tokens"]),
        ..TokenUsage::default()
    })
}

/// The Responses API's `usage`: `input_tokens` includes cached tokens, `output_tokens` includes reasoning
/// tokens (billed as output).
pub(super) fn responses_usage(usage: &Value) -> Option<TokenUsage> {
    Some(TokenUsage {
        prompt_tokens: usage.get("input_tokens")?.as_u64()?,
        completion_tokens: field(usage, &["output_tokens"]),
        cached_prompt_tokens: field(usage, &["input_tokens_details", "cached_tokens"]),
        ..TokenUsage::default()
    })
}

/// Anthropic's `usage`: `input_tokens` excludes cache reads and writes, which are billed as input too.
/// Writes are split by cache lifetime when the response says so (`cache_creation`), else all 5-minute.
pub(super) fn anthropic_usage(usage: &Value) -> Option<TokenUsage> {
    let input = usage.get("input_tokens")?.as_u64()?;
    let reads = field(usage, &["cache_read_input_tokens"]);
    let writes = field(usage, &["cache_creation_input_tokens"]);
    let (writes_5m, writes_1h) = match usage.get("cache_creation") {
        Some(split @ Value::Object(_)) => {
            (field(split, &["ephemeral_5m_input_tokens"]), field(split, &["ephemeral_1h_input_tokens"]))
        }
        _ => (writes, 0),
    };
    Some(TokenUsage {
        prompt_tokens: input + reads + writes_5m + writes_1h,
        completion_tokens: field(usage, &["output_tokens"]),
        cached_prompt_tokens: reads,
        cache_write_tokens: writes_5m,
        cache_write_1h_tokens: writes_1h,
        web_searches: field(usage, &["server_tool_use", "web_search_requests"]),
        ..TokenUsage::default()
    })
}

/// Usage for an answer whose provider reported none: the prompt estimate, and one token per 3 units of
/// generated text (an overestimate for English), so such a call is never free.
pub fn estimated_usage(estimated_prompt_tokens: u64, generated_len: usize) -> TokenUsage {
    TokenUsage::new(estimated_prompt_tokens.max(1), (generated_len as u64).div_ceil(3))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_openai_usage_with_cached_and_audio_parts() {
        let body = json!({"usage": {"prompt_tokens": 1200, "completion_tokens": 34, "total_tokens": 1234,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 5}}});
        let usage = usage_from_response(Api::ChatCompletions, body.to_string().as_bytes()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1200, 34));
        assert_eq!((usage.cached_prompt_tokens, usage.audio_completion_tokens), (1024, 5));
        assert_eq!(
            usage_from_response(
                Api::ChatCompletions,
                br#"{"id": "x", "choices": [{"message": {"content": "..."}}], "usage": {"prompt_tokens": 12, "completion_tokens": 34}}"#
            ),
            Some(TokenUsage::new(12, 34))
        );
    }

    #[test]
    fn reads_anthropic_usage_with_cache_reads_writes_and_searches() {
        let simple = json!({"usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 3, "output_tokens": 7}});
        let usage = usage_from_response(Api::Messages, simple.to_string().as_bytes()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.cached_prompt_tokens, usage.cache_write_tokens), (18, 5, 3));
        let split = json!({"usage": {"input_tokens": 10, "cache_creation_input_tokens": 30, "output_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            "server_tool_use": {"web_search_requests": 2}}});
        let usage = usage_from_response(Api::Messages, split.to_string().as_bytes()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens), (40, 10, 20));
        assert_eq!(usage.web_searches, 2);
        assert_eq!(usage_from_response(Api::Messages, b"{}"), None);
        assert_eq!(usage_from_response(Api::Messages, b"not json"), None);
    }
}
