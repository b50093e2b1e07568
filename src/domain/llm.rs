//! The two wire formats the gateway speaks, reduced to what routing and accounting need: which model,
//! streaming or not, how big the prompt is, and how many tokens the answer used.

use serde_json::Value;

use super::provider::Provider;
use super::usage::TokenUsage;

/// The API a request came in on. Each is passed through to its own provider unchanged, apart from asking
/// OpenAI to report usage in streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions: `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic Messages: `POST /v1/messages`.
    Messages,
}

impl Api {
    pub fn provider(self) -> Provider {
        match self {
            Api::ChatCompletions => Provider::OpenAi,
            Api::Messages => Provider::Anthropic,
        }
    }

    /// The ledger's `service_type`.
    pub fn service_type(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Messages => "messages",
        }
    }
}

/// A parsed request: the original JSON (possibly amended) plus the facts we route and price by.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub model: String,
    pub stream: bool,
    pub max_output_tokens: Option<u64>,
    /// Characters of the whole request body: the basis of a conservative prompt estimate.
    pub prompt_chars: usize,
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmRequestError {
    #[error("The body must be a JSON object.")]
    NotAnObject,
    #[error("\"model\" is required and must be a non-empty string of at most 200 characters.")]
    Model,
    #[error("\"stream\" must be true or false.")]
    Stream,
}

const MAX_MODEL_CHARS: usize = 200;

pub fn parse_request(api: Api, raw_len: usize, mut body: Value) -> Result<LlmRequest, LlmRequestError> {
    let object = body.as_object_mut().ok_or(LlmRequestError::NotAnObject)?;
    let model = match object.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() && m.chars().count() <= MAX_MODEL_CHARS => m.clone(),
        _ => return Err(LlmRequestError::Model),
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(LlmRequestError::Stream),
    };
    let max_output_tokens = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| object.get(*k)?.as_u64());
    if api == Api::ChatCompletions && stream {
        // Without this OpenAI streams carry no usage and the call could not be charged correctly.
        let options = object.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    Ok(LlmRequest { model, stream, max_output_tokens, prompt_chars: raw_len, body })
}

/// Usage from a complete (non-streaming) response body.
pub fn usage_from_response(api: Api, body: &Value) -> Option<TokenUsage> {
    let usage = body.get("usage")?;
    match api {
        Api::ChatCompletions => Some(TokenUsage {
            prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
            completion_tokens: usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
        }),
        Api::Messages => Some(TokenUsage {
            prompt_tokens: anthropic_input_tokens(usage)?,
            completion_tokens: usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        }),
    }
}

/// Anthropic bills cache writes and reads as input too.
fn anthropic_input_tokens(usage: &Value) -> Option<u64> {
    let field = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    usage.get("input_tokens")?.as_u64()?;
    Some(field("input_tokens") + field("cache_creation_input_tokens") + field("cache_read_input_tokens"))
}

/// Usage for an answer whose provider reported none: the prompt estimate, and one token per 3 units of
/// generated text (an overestimate for English), so such a call is never free.
pub fn estimated_usage(estimated_prompt_tokens: u64, generated_len: usize) -> TokenUsage {
    TokenUsage { prompt_tokens: estimated_prompt_tokens.max(1), completion_tokens: (generated_len as u64).div_ceil(3) }
}

/// Watches a server-sent-event stream as it passes through, collecting the usage the provider reports
/// (OpenAI: a final chunk with `usage`; Anthropic: `message_start` and `message_delta`) and the amount of
/// generated text, so a stream that ends without usage can still be charged by estimate, never at $0.
#[derive(Debug)]
pub struct StreamUsage {
    api: Api,
    line: Vec<u8>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    generated_chars: usize,
}

/// Longest SSE line we buffer while looking for usage; longer lines pass through unexamined.
const MAX_LINE: usize = 1 << 20;

impl StreamUsage {
    pub fn new(api: Api) -> Self {
        StreamUsage { api, line: Vec::new(), prompt_tokens: None, completion_tokens: None, generated_chars: 0 }
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_complete(&line);
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
    }

    fn line_complete(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii()) else { return };
        match self.api {
            Api::ChatCompletions => {
                if let Some(usage) = usage_from_response(Api::ChatCompletions, &event) {
                    self.prompt_tokens = Some(usage.prompt_tokens);
                    self.completion_tokens = Some(usage.completion_tokens);
                }
                for choice in event.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    let text = choice.pointer("/delta/content").and_then(Value::as_str).unwrap_or("");
                    self.generated_chars += text.chars().count();
                }
            }
            Api::Messages => match event.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    self.prompt_tokens = event.pointer("/message/usage").and_then(anthropic_input_tokens);
                    self.completion_tokens = event.pointer("/message/usage/output_tokens").and_then(Value::as_u64);
                }
                Some("message_delta") => {
                    if let Some(out) = event.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                        self.completion_tokens = Some(out);
                    }
                }
                Some("content_block_delta") => {
                    let text = event.pointer("/delta/text").and_then(Value::as_str).unwrap_or("");
                    self.generated_chars += text.chars().count();
                }
                _ => {}
            },
        }
    }

    /// The usage to charge: what the provider reported, with estimates for whatever it did not report.
    /// Returns whether the numbers are the provider's own.
    pub fn finish(mut self, estimated_prompt_tokens: u64) -> (TokenUsage, bool) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_complete(&line);
        }
        let reported = self.prompt_tokens.is_some() && self.completion_tokens.is_some();
        let estimate = estimated_usage(estimated_prompt_tokens, self.generated_chars);
        let usage = TokenUsage {
            prompt_tokens: self.prompt_tokens.unwrap_or(estimate.prompt_tokens),
            completion_tokens: self.completion_tokens.unwrap_or(estimate.completion_tokens),
        };
        (usage, reported)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_model_and_stream_and_asks_openai_for_stream_usage() {
        let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 50, "messages": []});
        let request = parse_request(Api::ChatCompletions, 80, body).unwrap();
        assert_eq!(
            (request.model.as_str(), request.stream, request.max_output_tokens),
            ("gpt-4o-mini", true, Some(50))
        );
        assert_eq!(request.body["stream_options"]["include_usage"], true);

        let body = json!({"model": "claude-3-5-haiku", "max_tokens": 10, "stream": true, "messages": []});
        let request = parse_request(Api::Messages, 80, body).unwrap();
        assert!(request.body.get("stream_options").is_none(), "Anthropic streams always carry usage");
    }

    #[test]
    fn refuses_requests_without_a_usable_model_or_with_a_bad_stream_flag() {
        for body in [json!([]), json!({}), json!({"model": ""}), json!({"model": 5}), json!({"model": "x".repeat(201)})]
        {
            assert!(parse_request(Api::ChatCompletions, 10, body).is_err());
        }
        let bad_stream = json!({"model": "gpt-4o", "stream": "yes"});
        assert_eq!(parse_request(Api::ChatCompletions, 10, bad_stream).unwrap_err(), LlmRequestError::Stream);
    }

    #[test]
    fn reads_usage_from_complete_responses() {
        let openai = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}});
        assert_eq!(
            usage_from_response(Api::ChatCompletions, &openai),
            Some(TokenUsage { prompt_tokens: 12, completion_tokens: 34 })
        );
        let anthropic = json!({"usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}});
        assert_eq!(
            usage_from_response(Api::Messages, &anthropic),
            Some(TokenUsage { prompt_tokens: 15, completion_tokens: 7 })
        );
        assert_eq!(usage_from_response(Api::Messages, &json!({})), None);
    }

    #[test]
    fn collects_openai_stream_usage_across_chunk_boundaries() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut tap = StreamUsage::new(Api::ChatCompletions);
        for chunk in stream.as_bytes().chunks(7) {
            tap.observe(chunk);
        }
        assert_eq!(tap.finish(100), (TokenUsage { prompt_tokens: 9, completion_tokens: 2 }, true));
    }

    #[test]
    fn collects_anthropic_stream_usage() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n"
        );
        let mut tap = StreamUsage::new(Api::Messages);
        tap.observe(stream.as_bytes());
        assert_eq!(tap.finish(100), (TokenUsage { prompt_tokens: 25, completion_tokens: 15 }, true));
    }

    #[test]
    fn a_stream_cut_before_usage_is_charged_by_estimate_not_zero() {
        let mut tap = StreamUsage::new(Api::ChatCompletions);
        tap.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"abcdefghi\"}}]}\n\ndata: {\"choi");
        let (usage, reported) = tap.finish(40);
        assert!(!reported);
        assert_eq!(usage, TokenUsage { prompt_tokens: 40, completion_tokens: 3 });
    }
}
