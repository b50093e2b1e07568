//! The gateway end to end: real Directus, real sidecar binary, the official Python SDKs, fake providers.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Instance, Sidecar, serial};

pub const INTERNAL_OPENAI: &str = "sk-internal-e2e-openai-000000000000";
pub const INTERNAL_ANTHROPIC: &str = "sk-ant-internal-e2e-anthropic-0000000";
pub const GOOD_KEY: &str = "sk-proj-e2eGatewayKeyNotReal000000000000AbCd";
const REVOKED_KEY: &str = "sk-proj-e2eRevokedKeyNotReal0000000000WxYz";

const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;
const MESSAGE_OK: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":3}}"#;

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

/// One fake for both providers: OpenAI under `/v1`, Anthropic under `/v1` of its own base URL.
pub async fn fake_providers() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {REVOKED_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})))
        .with_priority(1)
        .mount(&server)
        .await;
    for (endpoint, stream, complete) in
        [("/v1/chat/completions", openai_stream(), CHAT_OK), ("/v1/messages", anthropic_stream(), MESSAGE_OK)]
    {
        Mock::given(method("POST"))
            .and(path(endpoint))
            .and(body_partial_json(json!({"stream": true})))
            .respond_with(ResponseTemplate::new(200).set_body_raw(stream, "text/event-stream"))
            .with_priority(2)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(endpoint))
            .respond_with(ResponseTemplate::new(200).set_body_raw(complete, "application/json"))
            .with_priority(3)
            .mount(&server)
            .await;
    }
    server
}

pub async fn gateway_sidecar(instance: &Instance, providers: &MockServer, extra: &[(&str, &str)]) -> Sidecar {
    let (openai, anthropic) = (format!("{}/v1", providers.uri()), providers.uri());
    let mut env = vec![
        ("OPENAI_BASE_URL", openai.as_str()),
        ("ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("INTERNAL_OPENAI_API_KEY", INTERNAL_OPENAI),
        ("INTERNAL_ANTHROPIC_API_KEY", INTERNAL_ANTHROPIC),
    ];
    env.extend_from_slice(extra);
    Sidecar::start(instance, &env).await
}

/// Polls Directus (bounded) until `collection` has `count` rows matching `query`, then returns them.
pub async fn wait_for_rows(
    instance: &Instance,
    http: &reqwest::Client,
    collection: &str,
    query: &[(&str, &str)],
    count: usize,
) -> Vec<Value> {
    let mut query = query.to_vec();
    query.push(("limit", "-1"));
    for _ in 0..300 {
        let rows = instance.admin_get(http, collection, &query).await;
        let rows = rows.as_array().cloned().unwrap_or_default();
        if rows.len() >= count {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{collection} never reached {count} rows for {query:?}");
}

async fn put_key(http: &reqwest::Client, sidecar: &Sidecar, token: &str, key: &str) {
    let response = http
        .put(sidecar.url("/v1/keys/openai"))
        .bearer_auth(token)
        .json(&json!({"api_key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// BYOK-first flags, fake providers, a sidecar in front of them, and `who` logged in with `key` stored.
struct Scene {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _providers: MockServer,
    instance: Instance,
    http: reqwest::Client,
    sidecar: Sidecar,
    token: String,
}

async fn scene(who: &str, key: &str) -> Scene {
    let serial = serial().await;
    let instance = Instance::from_env();
    let http = reqwest::Client::new();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, &[]).await;
    let token = instance.login(&http, who).await;
    put_key(&http, &sidecar, &token, key).await;
    Scene { _serial: serial, _providers: providers, instance, http, sidecar, token }
}

#[tokio::test]
async fn official_sdks_work_and_every_call_is_accounted_in_directus() {
    let Scene { _serial, _providers, instance, http, sidecar, token: premium } = scene("PREMIUM", GOOD_KEY).await;

    // The official SDKs, unchanged but for base URL and key.
    let python =
        std::env::var("BYOK_E2E_PYTHON").expect("BYOK_E2E_PYTHON: the venv python with the SDKs (scripts/test.sh)");
    let output = std::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk")])
        .env("SIDECAR_URL", &sidecar.base)
        .env("USER_TOKEN", &premium)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "SDK tests failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("6 passed"), "{report}");

    // OpenAI calls went through the user's key, Anthropic calls (no key) through credits.
    let user = instance.var("PREMIUM_USER_ID").to_owned();
    let byok = wait_for_rows(&instance, &http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 3).await;
    let mut tokens: Vec<u64> = byok.iter().map(|r| r["total_tokens"].as_u64().unwrap()).collect();
    tokens.sort();
    assert_eq!(tokens, [10, 10, 14], "non-streaming 11+3, two streams 8+2: {byok:?}");
    let ledger = wait_for_rows(
        &instance,
        &http,
        "/items/credit_transactions",
        &[("filter[user][_eq]", &user), ("filter[transaction_type][_eq]", "deduction")],
        2,
    )
    .await;
    let mut tokens: Vec<u64> = ledger.iter().map(|r| r["total_tokens"].as_u64().unwrap()).collect();
    tokens.sort();
    assert_eq!(tokens, [13, 18], "non-streaming 10+3, streaming 12+6: {ledger:?}");
    assert!(ledger.iter().all(|r| r["cost_cents"].as_f64().unwrap() > 0.0 && r["provider"] == "anthropic"));

    // A free user is served on credits.
    let free = instance.login(&http, "FREE").await;
    let response = http
        .post(sidecar.url("/v1/chat/completions"))
        .bearer_auth(&free)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["x-byok-source"].to_str().unwrap()), (200, "internal"));
    wait_for_rows(
        &instance,
        &http,
        "/items/credit_transactions",
        &[("filter[user][_eq]", instance.var("FREE_USER_ID")), ("filter[transaction_type][_eq]", "deduction")],
        1,
    )
    .await;

    // The usage summary reads those records back.
    let summary: Value =
        http.get(sidecar.url("/v1/usage?days=30")).bearer_auth(&premium).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["total"]["requests"], 5, "{summary}");

    http.delete(sidecar.url("/v1/keys/openai")).bearer_auth(&premium).send().await.unwrap();
    sidecar.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_marked_invalid_the_user_notified_in_directus_and_credits_take_over() {
    let Scene { _serial, _providers, instance, http, sidecar, token: lifetime } = scene("LIFETIME", REVOKED_KEY).await;
    let user = instance.var("LIFETIME_USER_ID").to_owned();

    for _ in 0..2 {
        let response = http
            .post(sidecar.url("/v1/chat/completions"))
            .bearer_auth(&lifetime)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-byok-source"], "internal");
    }
    let notes = wait_for_rows(&instance, &http, "/notifications", &[("filter[recipient][_eq]", &user)], 1).await;
    assert_eq!(notes.len(), 1, "one notification per incident: {notes:?}");
    assert!(notes[0]["subject"].as_str().unwrap().contains("OpenAI API key stopped working"));
    let keys = instance
        .admin_get(&http, "/items/user_api_keys", &[("filter[user][_eq]", &user), ("filter[provider][_eq]", "openai")])
        .await;
    assert_eq!(keys[0]["status"], "invalid", "{keys}");
    http.delete(sidecar.url("/v1/keys/openai")).bearer_auth(&lifetime).send().await.unwrap();
    sidecar.stop().await;
}
