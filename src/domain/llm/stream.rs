//! Watches a server-sent-event stream as it passes to the client, event by event: collects the usage the
//! provider reports, counts everything generated, keeps back what the client did not ask for, and adds what
//! the call cost to the final usage (`usage.cost_cents` in OpenAI's usage chunk and Anthropic's
//! `message_delta`, as OpenRouter adds `usage.cost`): the amount the call is charged.
//!
//! Reported usage counts only once it is final (OpenAI's usage chunk, Anthropic's `message_delta`). Until then
//! the charge is estimated from everything that passed: text, tool-call arguments, refusals, thinking and
//! reasoning, at one token per 3 characters; a stream cut short is never charged less than what reached the
//! client.

use bytes::Bytes;
use serde_json::Value;

use super::Api;
use super::usage::{anthropic_usage, estimated_usage, openai_usage, responses_usage};
use crate::domain::pricing::ModelPrice;
use crate::domain::usage::TokenUsage;

/// Longest event examined; a longer one passes through unexamined, its bytes counted as generated text.
const MAX_EVENT: usize = 1 << 20;
/// Keys inside generated deltas that are labels, not generated text.
const LABELS: [&str; 7] = ["type", "id", "role", "index", "signature", "expires_at", "stop_reason"];

#[derive(Debug)]
pub struct StreamTap {
    api: Api,
    /// OpenAI: the sidecar asked for the usage chunk; the client did not, so it is not passed on.
    hide_usage_chunk: bool,
    /// The model's price: the final usage event says what the call cost.
    price: ModelPrice,
    /// The event being received (whole lines plus the current partial line).
    event: Vec<u8>,
    /// Bytes of the current line so far, not counting `\r` (a `\r\n` may arrive split across chunks).
    line_len: usize,
    /// The current event outgrew [`MAX_EVENT`]: its bytes pass as they come.
    oversized: bool,
    final_usage: Option<TokenUsage>,
    /// Anthropic's `message_start` usage: final for the prompt, a running count for the output.
    started: Option<TokenUsage>,
    generated_chars: u64,
}

impl StreamTap {
    pub fn new(api: Api, hide_usage_chunk: bool, price: ModelPrice) -> Self {
        StreamTap {
            api,
            hide_usage_chunk,
            price,
            event: Vec::new(),
            line_len: 0,
            oversized: false,
            final_usage: None,
            started: None,
            generated_chars: 0,
        }
    }

    /// Takes the next bytes from the provider and returns what goes to the client: whole events only (a
    /// partial event waits for its end), as they came except the final usage, which gains its cost.
    pub fn pass(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Vec::new();
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => rest.split_at(end + 1),
                None => (rest, &[][..]),
            };
            rest = tail;
            self.take_line(line, &mut out);
        }
        Bytes::from(out)
    }

    /// The provider's stream ended: what is left of an unterminated last event, for the client.
    pub fn end(&mut self) -> Bytes {
        let mut out = Vec::new();
        if !self.event.is_empty() || self.oversized {
            self.complete_event(&mut out);
        }
        Bytes::from(out)
    }

    /// The usage to charge, and whether it is the provider's final report (else an estimate).
    pub fn finish(mut self, estimated_prompt_tokens: u64) -> (TokenUsage, bool) {
        self.end();
        if let Some(usage) = self.final_usage {
            return (usage, true);
        }
        let estimate =
            estimated_usage(estimated_prompt_tokens, usize::try_from(self.generated_chars).unwrap_or(usize::MAX));
        let usage = match self.started {
            Some(started) => {
                TokenUsage { completion_tokens: started.completion_tokens.max(estimate.completion_tokens), ..started }
            }
            None => estimate,
        };
        (usage, false)
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let complete = line.ends_with(b"\n");
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let line_len = self.line_len + content.iter().filter(|&&b| b != b'\r').count();
        let blank = complete && line_len == 0;
        self.line_len = if complete { 0 } else { line_len };

        if self.oversized {
            self.generated_chars += line.len() as u64;
            out.extend_from_slice(line);
        } else {
            self.event.extend_from_slice(line);
            if self.event.len() > MAX_EVENT {
                self.generated_chars += self.event.len() as u64;
                out.append(&mut self.event);
                self.oversized = true;
            }
        }
        if blank {
            self.complete_event(out);
        }
    }

    fn complete_event(&mut self, out: &mut Vec<u8>) {
        let event = std::mem::take(&mut self.event);
        let was_oversized = std::mem::replace(&mut self.oversized, false);
        self.line_len = 0;
        if was_oversized {
            return;
        }
        match self.observe(&event) {
            Seen::Pass => out.extend_from_slice(&event),
            Seen::Hide => {}
            Seen::Priced(mut data) => {
                let at = if self.api == Api::Responses { "/response/usage" } else { "/usage" };
                if let (Some(usage), Some(final_usage)) = (data.pointer_mut(at), self.final_usage) {
                    usage["cost_cents"] = serde_json::json!(self.price.cost(&final_usage));
                }
                out.extend_from_slice(&with_data(&event, &data));
            }
        }
    }

    /// Learns from one complete event, and says what becomes of it.
    fn observe(&mut self, event: &[u8]) -> Seen {
        let Some(data) = event_data(event) else { return Seen::Pass };
        let Ok(event) = serde_json::from_slice::<Value>(&data) else { return Seen::Pass };
        match self.api {
            Api::ChatCompletions | Api::Embeddings => {
                let usage = event.get("usage").filter(|u| !u.is_null()).and_then(openai_usage);
                for choice in event.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    self.generated_chars += choice.get("delta").map_or(0, generated_chars);
                }
                let Some(usage) = usage else { return Seen::Pass };
                self.final_usage = Some(usage);
                let only_usage = event.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
                if self.hide_usage_chunk && only_usage { Seen::Hide } else { Seen::Priced(event) }
            }
            Api::Messages | Api::CountTokens => {
                match event.get("type").and_then(Value::as_str) {
                    Some("message_start") => {
                        self.started = event.pointer("/message/usage").and_then(anthropic_usage);
                    }
                    Some("message_delta") => {
                        self.message_delta(&event);
                        if self.final_usage.is_some() {
                            return Seen::Priced(event);
                        }
                    }
                    Some("content_block_start") => {
                        self.generated_chars += event.get("content_block").map_or(0, generated_chars);
                    }
                    Some("content_block_delta") => {
                        self.generated_chars += event.get("delta").map_or(0, generated_chars);
                    }
                    _ => {}
                }
                Seen::Pass
            }
            Api::Responses => {
                let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
                // Every `*.delta` event carries generated text, arguments or reasoning in `delta`.
                if kind.ends_with(".delta") {
                    self.generated_chars += event.get("delta").map_or(0, generated_chars);
                }
                // The response ends completed, incomplete (a limit reached) or failed: each says its usage.
                let ending = matches!(kind, "response.completed" | "response.incomplete" | "response.failed");
                match event.pointer("/response/usage").filter(|_| ending).and_then(responses_usage) {
                    Some(usage) => {
                        self.final_usage = Some(usage);
                        Seen::Priced(event)
                    }
                    None => Seen::Pass,
                }
            }
        }
    }

    /// Anthropic's closing usage: cumulative output, and (newer API versions) the whole usage again.
    fn message_delta(&mut self, event: &Value) {
        let Some(usage) = event.get("usage") else { return };
        let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) else { return };
        let mut total = anthropic_usage(usage).or(self.started).unwrap_or_default();
        total.completion_tokens = output;
        if let Some(searches) = usage.pointer("/server_tool_use/web_search_requests").and_then(Value::as_u64) {
            total.web_searches = searches;
        }
        self.final_usage = Some(total);
    }
}

/// What becomes of one event on its way to the client.
enum Seen {
    Pass,
    /// OpenAI's usage chunk, which the client did not ask for.
    Hide,
    /// The final usage (its data, parsed): it goes on with the call's cost added.
    Priced(Value),
}

/// `event` with its data replaced by `data` on one line; its other fields (`event:`, `id:`) as they were.
fn with_data(event: &[u8], data: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + 32);
    let mut written = false;
    for line in event.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"data:") {
            out.extend_from_slice(line);
        } else if !written {
            written = true;
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// The `data:` lines of an event, joined as the SSE specification says; `None` without any or for `[DONE]`.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else { continue };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &mut data {
            Some(joined) => {
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data.filter(|d| d.trim_ascii() != b"[DONE]")
}

/// Characters of generated text anywhere in a delta: every string except labels.
fn generated_chars(value: &Value) -> u64 {
    match value {
        Value::String(text) => text.chars().count() as u64,
        Value::Array(items) => items.iter().map(generated_chars).sum(),
        Value::Object(members) => members
            .iter()
            .filter(|(key, _)| !LABELS.contains(&key.as_str()))
            .map(|(_, value)| generated_chars(value))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(value: Value) -> String {
        format!("data: {value}\n\n")
    }

    fn price() -> ModelPrice {
        crate::domain::pricing::PriceTable::builtin()
            .price(crate::domain::provider::Provider::openai(), "gpt-4o-mini")
            .0
    }

    fn run(api: Api, hide: bool, stream: &str, chunk_size: usize) -> (String, StreamTap) {
        let mut tap = StreamTap::new(api, hide, price());
        let mut passed = Vec::new();
        for chunk in stream.as_bytes().chunks(chunk_size) {
            passed.extend_from_slice(&tap.pass(Bytes::copy_from_slice(chunk)));
        }
        passed.extend_from_slice(&tap.end());
        (String::from_utf8(passed).unwrap(), tap)
    }

    fn openai_stream() -> String {
        [
            data(json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}], "usage": null})),
            data(json!({"choices": [{"index": 0, "delta": {"content": "lo"}}], "usage": null})),
            data(json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat()
    }

    #[test]
    fn passes_openai_streams_on_with_the_cost_in_the_usage_chunk_across_chunk_boundaries() {
        let cost = price().cost(&TokenUsage::new(9, 2));
        let priced = openai_stream().replace(
            r#""usage":{"completion_tokens":2,"prompt_tokens":9}"#,
            &format!(r#""usage":{{"completion_tokens":2,"cost_cents":{},"prompt_tokens":9}}"#, json!(cost)),
        );
        assert_ne!(priced, openai_stream());
        for chunk_size in [1, 7, 4096] {
            let (passed, tap) = run(Api::ChatCompletions, false, &openai_stream(), chunk_size);
            assert_eq!(passed, priced);
            assert_eq!(tap.finish(100), (TokenUsage::new(9, 2), true));
        }
    }

    #[test]
    fn keeps_the_usage_chunk_from_clients_that_did_not_ask_for_it() {
        for chunk_size in [1, 5, 4096] {
            let (passed, tap) = run(Api::ChatCompletions, true, &openai_stream(), chunk_size);
            assert!(!passed.contains("prompt_tokens"), "{passed}");
            assert!(passed.contains("Hel") && passed.ends_with("data: [DONE]\n\n"), "{passed}");
            assert_eq!(tap.finish(100), (TokenUsage::new(9, 2), true), "still charged by it");
        }
        let crlf = openai_stream().replace("\n\n", "\r\n\r\n");
        let (passed, _) = run(Api::ChatCompletions, true, &crlf, 3);
        assert!(!passed.contains("prompt_tokens") && passed.contains("lo"), "{passed}");
    }

    #[test]
    fn an_openai_stream_cut_before_usage_is_charged_for_everything_that_passed() {
        let arguments = r#"{"city": "Paris"}"#.repeat(100);
        let stream = [
            data(json!({"choices": [{"index": 0, "delta": {"content": "abc"}}]})),
            data(json!({"choices": [{"index": 0, "delta": {"refusal": "no"}}]})),
            data(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": arguments}}]}}]})),
            data(json!({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]})),
        ]
        .concat();
        let (_, tap) = run(Api::ChatCompletions, true, &stream, 64);
        let (usage, reported) = tap.finish(40);
        assert!(!reported);
        let chars = 3 + 2 + 3 + arguments.len() as u64 + 5;
        assert_eq!(usage, TokenUsage::new(40, chars.div_ceil(3)));
    }

    fn anthropic_event(name: &str, value: Value) -> String {
        format!("event: {name}\ndata: {value}\n\n")
    }

    #[test]
    fn anthropic_usage_is_final_only_at_message_delta() {
        let start = anthropic_event(
            "message_start",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
        );
        let text = anthropic_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x".repeat(3_000)}}),
        );
        let delta =
            anthropic_event("message_delta", json!({"type": "message_delta", "usage": {"output_tokens": 1015}}));

        let (passed, tap) = run(Api::Messages, false, &[start.clone(), text.clone(), delta].concat(), 100);
        let (usage, reported) = tap.finish(100);
        assert!(reported);
        assert_eq!((usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens), (30, 5, 1015));
        // message_delta goes on, as its own event, saying what the call cost.
        let last = passed.rsplit("event: ").next().unwrap();
        assert!(last.starts_with("message_delta\ndata: {") && last.ends_with("}\n\n"), "{last}");
        let data: Value = serde_json::from_str(last.trim_start_matches("message_delta\ndata: ").trim()).unwrap();
        assert_eq!(data["usage"]["cost_cents"], json!(price().cost(&usage)), "{data}");

        // Cut before message_delta: message_start's output_tokens (1) is not the answer's size.
        let (_, tap) = run(Api::Messages, false, &[start, text].concat(), 100);
        let (usage, reported) = tap.finish(100);
        assert!(!reported);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (30, 1_000));
    }

    #[test]
    fn anthropic_thinking_tool_input_and_block_starts_count_as_generated() {
        let stream = [
            anthropic_event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})),
            anthropic_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}})),
            anthropic_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}})),
            anthropic_event("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}})),
            anthropic_event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}})),
        ]
        .concat();
        let (_, tap) = run(Api::Messages, false, &stream, 9);
        let (usage, _) = tap.finish(10);
        assert_eq!(usage.completion_tokens, (3u64 + 3 + 5).div_ceil(3));
    }

    #[test]
    fn an_unterminated_last_event_still_counts_and_still_passes() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"abcdef\"}}]}";
        let (passed, tap) = run(Api::ChatCompletions, true, stream, 10);
        assert_eq!(passed, stream);
        assert_eq!(tap.finish(7), (TokenUsage::new(7, 2), false));
    }

    #[test]
    fn an_oversized_event_passes_through_and_is_counted_by_its_bytes() {
        let huge = data(json!({"choices": [{"delta": {"content": "y".repeat(MAX_EVENT + 10)}}]}));
        let (passed, tap) =
            run(Api::ChatCompletions, true, &[huge.clone(), "data: [DONE]\n\n".into()].concat(), 65_536);
        assert_eq!(passed.len(), huge.len() + "data: [DONE]\n\n".len());
        let (usage, reported) = tap.finish(1);
        assert!(!reported);
        assert!(usage.completion_tokens >= (MAX_EVENT as u64) / 3);
    }

    fn responses_event(kind: &str, data: Value) -> String {
        format!("event: {kind}\ndata: {data}\n\n")
    }

    fn responses_stream(ending: &str) -> String {
        let usage = json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 5},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 27});
        [
            responses_event("response.created", json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "in_progress", "usage": null}})),
            responses_event("response.output_text.delta", json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Bonjour"})),
            responses_event("response.function_call_arguments.delta", json!({"type": "response.function_call_arguments.delta", "sequence_number": 2, "item_id": "fc_1", "output_index": 1, "delta": "{\"a\":1}"})),
            responses_event(ending, json!({"type": ending, "sequence_number": 3, "response": {"id": "resp_1", "status": "completed", "usage": usage}})),
        ]
        .concat()
    }

    #[test]
    fn a_responses_stream_is_charged_by_the_usage_its_last_event_reports_and_says_the_cost_there() {
        let expected = TokenUsage { cached_prompt_tokens: 5, ..TokenUsage::new(20, 7) };
        for ending in ["response.completed", "response.incomplete", "response.failed"] {
            for chunk_size in [1, 11, 4096] {
                let (passed, tap) = run(Api::Responses, false, &responses_stream(ending), chunk_size);
                assert!(passed.contains("Bonjour") && passed.contains(&format!("event: {ending}")), "{passed}");
                let last = passed.rsplit("data: ").next().unwrap().trim();
                let last: Value = serde_json::from_str(last).unwrap();
                assert_eq!(last["response"]["usage"]["cost_cents"], json!(price().cost(&expected)), "{ending}");
                assert_eq!(tap.finish(100), (expected, true), "{ending}");
            }
        }
    }

    #[test]
    fn a_responses_stream_cut_before_its_last_event_is_charged_for_what_passed() {
        let stream = responses_stream("response.completed");
        let cut = &stream[..stream.find("event: response.completed").unwrap()];
        let (passed, tap) = run(Api::Responses, false, cut, 7);
        assert_eq!(passed, cut, "passed on as it came");
        let generated = ("Bonjour".len() + r#"{"a":1}"#.len()) as u64;
        assert_eq!(tap.finish(40), (TokenUsage::new(40, generated.div_ceil(3)), false));
    }
}
