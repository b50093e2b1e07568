//! Fake OpenAI and Anthropic APIs (wiremock) for the tests that run the real sidecar binary.

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Instance, Sidecar, serial};

pub const INTERNAL_OPENAI: &str = "sk-internal-e2e-openai-000000000000";
pub const INTERNAL_ANTHROPIC: &str = "sk-ant-internal-e2e-anthropic-0000000";
pub const GOOD_KEY: &str = "sk-proj-e2eGatewayKeyNotReal000000000000AbCd";
pub const REVOKED_KEY: &str = "sk-proj-e2eRevokedKeyNotReal0000000000WxYz";

pub const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;
pub const MESSAGE_OK: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":3}}"#;

fn openai_stream() -> String {
    let chunk = |choices: Value, usage: Value| {
        let mut c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini", "choices": choices});
        if !usage.is_null() {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    [
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(json!([{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}]), Value::Null),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]), Value::Null),
        chunk(json!([]), json!({"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10})),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat()
}

fn anthropic_stream() -> String {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    [
        event("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-latest", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}})),
        event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}})),
        event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}})),
        event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 6}})),
        event("message_stop", json!({"type": "message_stop"})),
    ]
    .concat()
}

pub const RESPONSE_OK: &str = r#"{"id":"resp_1","object":"response","created_at":1700000000,"status":"completed","model":"gpt-4o-mini","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi!","annotations":[]}]}],"parallel_tool_calls":true,"tool_choice":"auto","tools":[],"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12}}"#;
pub const EMBEDDINGS_OK: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,0.125]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;

/// A Responses stream: text in two deltas, then `response.completed` with 7 input and 4 output tokens.
pub fn responses_stream() -> String {
    let event = |data: Value| format!("event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap());
    let response = |status: &str, usage: Value| {
        json!({"id": "resp_2", "object": "response", "created_at": 1700000000, "status": status, "model": "gpt-4o-mini",
            "output": [], "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "usage": usage})
    };
    let usage = json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11});
    [
        event(json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", Value::Null)})),
        event(json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_2", "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []})),
        event(json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_2", "output_index": 0, "content_index": 0, "delta": "lo", "logprobs": []})),
        event(json!({"type": "response.completed", "sequence_number": 3, "response": response("completed", usage)})),
    ]
    .concat()
}

/// One fake for both providers: OpenAI under `/v1`, Anthropic under `/v1` of its own base URL.
pub async fn fake_providers() -> MockServer {
    let server = MockServer::start().await;
    mount_fakes(&server).await;
    server
}

/// The fake's answers: key checks pass, [`REVOKED_KEY`] is refused on calls, everything else answers (streaming
/// or not) with a short completion.
pub async fn mount_fakes(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {REVOKED_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})))
        .with_priority(1)
        .mount(server)
        .await;
    for (endpoint, answer) in
        [("/v1/embeddings", EMBEDDINGS_OK), ("/v1/messages/count_tokens", r#"{"input_tokens":12}"#)]
    {
        Mock::given(method("POST"))
            .and(path(endpoint))
            .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
            .mount(server)
            .await;
    }
    for (endpoint, stream, complete) in [
        ("/v1/chat/completions", openai_stream(), CHAT_OK),
        ("/v1/messages", anthropic_stream(), MESSAGE_OK),
        ("/v1/responses", responses_stream(), RESPONSE_OK),
    ] {
        Mock::given(method("POST"))
            .and(path(endpoint))
            .and(body_partial_json(json!({"stream": true})))
            .respond_with(ResponseTemplate::new(200).set_body_raw(stream, "text/event-stream"))
            .with_priority(2)
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path(endpoint))
            .respond_with(ResponseTemplate::new(200).set_body_raw(complete, "application/json"))
            .with_priority(3)
            .mount(server)
            .await;
    }
}

/// `gpt-4o` answers with 90,000 output tokens (90 cents) after 300 ms, so that concurrent calls overlap.
pub async fn mount_expensive_gpt4o(server: &MockServer) {
    let expensive = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 90_000}});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "gpt-4o"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(expensive).set_delay(std::time::Duration::from_millis(300)),
        )
        .with_priority(1)
        .mount(server)
        .await;
}

/// What most gateway tests start from: their turn at the suite's shared Directus (held until dropped), BYOK-first
/// flags, the fake providers (kept answering until dropped) and a sidecar in front of them with `extra`.
pub struct GatewayScene {
    pub _serial: tokio::sync::MutexGuard<'static, ()>,
    pub _providers: MockServer,
    pub instance: Instance,
    pub http: reqwest::Client,
    pub sidecar: Sidecar,
}

pub async fn gateway_scene(extra: &[(&str, &str)]) -> GatewayScene {
    let serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, extra).await;
    GatewayScene { _serial: serial, _providers: providers, instance, http, sidecar }
}

/// A sidecar whose providers are the fakes in `providers`, with the platform's own keys set.
pub async fn gateway_sidecar(instance: &Instance, providers: &MockServer, extra: &[(&str, &str)]) -> Sidecar {
    let (openai, anthropic) = (format!("{}/v1", providers.uri()), providers.uri());
    let public_url = format!("http://{}", instance.sidecar_addr);
    let mut env = vec![
        ("PUBLIC_URL", public_url.as_str()),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("INTERNAL_OPENAI_API_KEY", INTERNAL_OPENAI),
        ("INTERNAL_ANTHROPIC_API_KEY", INTERNAL_ANTHROPIC),
    ];
    env.extend_from_slice(extra);
    Sidecar::start(instance, &env).await
}
