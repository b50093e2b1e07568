//! The LLM gateway against wiremock providers and a wiremock Directus.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;
use crate::streams::scripted_stream_provider;

pub const INTERNAL_OPENAI: &str = "sk-internal-platform-openai-key-000000";
pub const INTERNAL_ANTHROPIC: &str = "sk-ant-internal-platform-key-00000000";

pub const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;

pub async fn gateway_app(overrides: &[(&'static str, &str)]) -> TestApp {
    gateway_app_tweaked(overrides, |_| {}).await
}

/// [`gateway_app`], with `tweak` applied to its settings.
pub async fn gateway_app_tweaked(
    overrides: &[(&'static str, &str)],
    tweak: impl FnOnce(&mut byok_bridge::config::Settings),
) -> TestApp {
    let mut all =
        vec![("INTERNAL_OPENAI_API_KEY", INTERNAL_OPENAI), ("INTERNAL_ANTHROPIC_API_KEY", INTERNAL_ANTHROPIC)];
    all.extend_from_slice(overrides);
    let app = spawn_app_tweaked(&all, tweak).await;
    for collection in ["/items/api_key_usage", "/items/credit_transactions"] {
        Mock::given(method("POST"))
            .and(path(collection))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"id": "u"}})))
            .mount(&app.directus)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/notifications"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&app.directus)
        .await;
    app
}

/// A premium user with an active stored OpenAI key (and credits), in BYOK-first mode unless `only`.
pub async fn byok_user(app: &TestApp, only: bool) -> String {
    mount_flags(&app.directus, true, only, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { keys: &[("openai", "active")], ..Default::default() }).await;
    mount_sealed_row(app, &user, &test_keyring().seal(owner(&user, "openai"), OPENAI_KEY.as_bytes())).await;
    user
}

pub async fn free_user(app: &TestApp) -> String {
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { tier: "free", ..Default::default() }).await;
    user
}

pub async fn chat(app: &TestApp, user: &str, body: Value) -> reqwest::Response {
    app.http.post(app.url("/v1/chat/completions")).bearer_auth(token_for(user)).json(&body).send().await.unwrap()
}

/// An Anthropic Messages call as Anthropic's SDKs send it: the token in `x-api-key`, with `anthropic-version`.
pub async fn messages(app: &TestApp, user: &str, body: Value) -> reqwest::Response {
    let request = app.http.post(app.url("/v1/messages")).header("x-api-key", token_for(user));
    request.header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap()
}

pub fn hello(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 50, "messages": [{"role": "user", "content": "Hello"}]})
}

pub fn openai_answers(key: &str, response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {key}").as_str()))
        .respond_with(response)
}

#[tokio::test]
async fn a_byok_call_uses_the_users_key_and_records_usage_in_api_key_usage() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(1)
        .mount(&app.providers)
        .await;

    let response = chat(&app, &user, hello(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-source"], "byok");
    let (usage_id, cost) =
        (response.headers()["x-byok-usage-id"].clone(), response.headers()["x-byok-cost-cents"].clone());
    assert_eq!(response.text().await.unwrap(), CHAT_OK, "passed through unchanged");

    let usage = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 1).await;
    assert_eq!(usage[0]["user"], user.as_str());
    assert_eq!((usage[0]["prompt_tokens"].as_u64(), usage[0]["completion_tokens"].as_u64()), (Some(11), Some(3)));
    // gpt-4o-mini: 11 * $0.15/M + 3 * $0.60/M, exactly.
    assert_eq!(usage[0]["estimated_cost_cents"], "0.000345000");
    assert_eq!(usage[0]["request_id"], usage_id.to_str().unwrap(), "the usage id names the record");
    assert_eq!(usage[0]["estimated_cost_cents"], cost.to_str().unwrap(), "the cost header is the record's");
}

#[tokio::test]
async fn a_free_user_is_served_with_the_platform_key_and_charged_a_ledger_deduction() {
    let app = gateway_app(&[]).await;
    let user = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(1)
        .mount(&app.providers)
        .await;
    let response = chat(&app, &user, hello(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-source"], "internal");
    let cost = response.headers()["x-byok-cost-cents"].to_str().unwrap().to_owned();
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    assert_eq!(ledger[0]["cost_cents"], cost.as_str(), "the cost header is the deduction's");
    assert_eq!(ledger[0]["transaction_type"], "deduction");
    assert_eq!(ledger[0]["service_type"], "openai.chat_completions");
    // 14 tokens of gpt-4o-mini cost 0.000345 cents: charged exactly that, not rounded up to a cent.
    assert_eq!(ledger[0]["cost_cents"], "0.000345000", "{}", ledger[0]);
    assert_eq!(ledger[0]["total_tokens"], 14);
}

const USAGE_CHUNK: &str =
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2,\"total_tokens\":10}}\n\n";

fn openai_sse() -> String {
    [
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        USAGE_CHUNK,
        "data: [DONE]\n\n",
    ]
    .concat()
}

/// OpenAI answering `calls` streaming requests, each of which must ask for usage.
async fn openai_streams_with_usage(app: &TestApp, calls: u64) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true, "stream_options": {"include_usage": true}})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(openai_sse(), "text/event-stream"))
        .expect(calls)
        .mount(&app.providers)
        .await;
}

#[tokio::test]
async fn openai_streams_pass_through_event_by_event_and_are_charged_from_their_usage_which_says_the_cost() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    openai_streams_with_usage(&app, 1).await;
    let mut asked = hello(true);
    asked["stream_options"] = json!({"include_usage": true});
    let response = chat(&app, &user, asked).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let passed = response.text().await.unwrap();
    let usage = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 1).await;
    assert_eq!((usage[0]["prompt_tokens"].as_u64(), usage[0]["completion_tokens"].as_u64()), (Some(8), Some(2)));
    // Every event as it came, the usage chunk included (it was asked for), which says what the call cost.
    let (before, after) = openai_sse().split_once(USAGE_CHUNK).map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap();
    assert!(passed.starts_with(&before) && passed.ends_with(&after), "{passed}");
    let chunk: Value =
        serde_json::from_str(passed[before.len()..passed.len() - after.len()].trim().trim_start_matches("data: "))
            .unwrap();
    assert_eq!(chunk["usage"]["completion_tokens"], 2, "{chunk}");
    assert_eq!(cents(&chunk["usage"]["cost_cents"]), cents(&usage[0]["estimated_cost_cents"]), "{chunk}");
}

fn cents(value: &Value) -> byok_bridge::domain::money::Cents {
    byok_bridge::domain::money::Cents::from_json(value).unwrap()
}

#[tokio::test]
async fn openai_streams_always_ask_for_usage_but_only_clients_that_asked_get_the_usage_chunk() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    openai_streams_with_usage(&app, 4).await;
    for options in [None, Some(json!(null)), Some(json!({})), Some(json!({"include_usage": false}))] {
        let mut body = hello(true);
        if let Some(options) = &options {
            body["stream_options"] = options.clone();
        }
        let response = chat(&app, &user, body).await;
        assert_eq!(response.status(), 200, "{options:?}");
        assert_eq!(response.text().await.unwrap(), openai_sse().replace(USAGE_CHUNK, ""), "{options:?}");
    }
    let usage = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 4).await;
    assert!(usage.iter().all(|u| u["completion_tokens"] == 2), "each charged by the real usage");
}

#[tokio::test]
async fn anthropic_clients_authenticate_with_x_api_key_and_stream_messages() {
    let app = gateway_app(&[]).await;
    let user = free_user(&app).await;
    let sse = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", INTERNAL_ANTHROPIC))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
        .expect(1)
        .mount(&app.providers)
        .await;
    let response = messages(
        &app,
        &user,
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-source"], "internal");
    let passed = response.text().await.unwrap();
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    assert_eq!((ledger[0]["prompt_tokens"].as_u64(), ledger[0]["completion_tokens"].as_u64()), (Some(12), Some(6)));
    assert_eq!(ledger[0]["provider"], "anthropic");
    // The same events; message_delta's usage also says what the call cost: the deduction.
    let events: Vec<&str> = passed.split("\n\n").filter(|e| !e.is_empty()).collect();
    let sent: Vec<&str> = sse.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), sent.len(), "{passed}");
    for (event, original) in events.iter().zip(&sent) {
        if !original.starts_with("event: message_delta") {
            assert_eq!(event, original);
        }
    }
    let delta: Value = serde_json::from_str(events[2].trim_start_matches("event: message_delta\ndata: ")).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(cents(&delta["usage"]["cost_cents"]), cents(&ledger[0]["cost_cents"]), "{delta}");
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_then_succeeds() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    openai_answers(
        OPENAI_KEY,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "0.2")
            .set_body_json(json!({"error": {"code": "rate_limit_exceeded", "type": "requests"}})),
    )
    .up_to_n_times(1)
    .with_priority(1)
    .mount(&app.providers)
    .await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let started = std::time::Instant::now();
    let response = chat(&app, &user, hello(false)).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200), "waited as asked");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_deadline_is_returned_at_once_with_retry_after() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    openai_answers(
        OPENAI_KEY,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "120")
            .set_body_json(json!({"error": {"code": "rate_limit_exceeded"}})),
    )
    .expect(1)
    .mount(&app.providers)
    .await;
    let response = chat(&app, &user, hello(false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "120");
    assert_eq!(error_code(response).await, "provider_rate_limited");
}

#[tokio::test]
async fn an_exhausted_byok_key_is_paused_the_user_notified_once_and_credits_take_over() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    let quota = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
    openai_answers(OPENAI_KEY, ResponseTemplate::new(429).set_body_json(quota)).expect(2).mount(&app.providers).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(2)
        .mount(&app.providers)
        .await;

    for _ in 0..2 {
        let response = chat(&app, &user, hello(false)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-byok-source"], "internal", "BYOK-first falls back to credits");
    }
    let marks = wait_for_requests(&app.directus, "PATCH", "/items/user_api_keys/row-1", 1).await;
    assert_eq!(marks[0]["status"], "quota_exceeded");
    let notes = wait_for_requests(&app.directus, "POST", "/notifications", 1).await;
    assert_eq!(notes[0]["recipient"], user.as_str());
    assert!(notes[0]["message"].as_str().unwrap().contains("platform.openai.com/settings/organization/billing"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(wait_for_requests(&app.directus, "POST", "/notifications", 1).await.len(), 1, "one per incident");
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 2).await;
    assert_eq!(ledger.len(), 2);
}

#[tokio::test]
async fn an_invalid_key_in_byok_only_mode_is_refused_marked_and_notified() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, true).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(401).set_body_json(json!({"error": {"code": "invalid_api_key"}})))
        .expect(1)
        .mount(&app.providers)
        .await;
    let response = chat(&app, &user, hello(false)).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_key_invalid");
    assert!(body["error"]["message"].as_str().unwrap().contains("platform.openai.com/api-keys"));
    assert_eq!(
        wait_for_requests(&app.directus, "PATCH", "/items/user_api_keys/row-1", 1).await[0]["status"],
        "invalid"
    );
    wait_for_requests(&app.directus, "POST", "/notifications", 1).await;
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 1, "never retried with that key");
}

#[tokio::test]
async fn provider_outages_are_retried_then_reported_as_ai_unavailable_and_not_charged() {
    for (name, response) in [
        ("500", ResponseTemplate::new(500)),
        (
            "529 overloaded",
            ResponseTemplate::new(529).set_body_json(json!({"type": "error", "error": {"type": "overloaded_error"}})),
        ),
        ("stream headers late", ResponseTemplate::new(200).set_delay(Duration::from_secs(3))),
    ] {
        let app = gateway_app(&[("PROVIDER_TIMEOUT_SECS", "1"), ("UPSTREAM_DEADLINE_SECS", "3")]).await;
        let user = byok_user(&app, false).await;
        openai_answers(OPENAI_KEY, response).mount(&app.providers).await;
        // A stream's headers come at once; late ones mean the provider is in trouble.
        let response = chat(&app, &user, hello(true)).await;
        assert_eq!(response.status(), 503, "{name}");
        assert!(response.headers().contains_key("retry-after"), "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "ai_unavailable", "{name}");
        assert!(body["error"]["message"].as_str().unwrap().contains("Everything else keeps working"));
        let attempts = app.providers.received_requests().await.unwrap().len();
        assert!((2..=4).contains(&attempts), "{name}: bounded retries, got {attempts}");
        let requests = app.directus.received_requests().await.unwrap();
        assert!(
            !requests.iter().any(|r| r.method.as_str() == "POST" && r.url.path() == "/items/api_key_usage"),
            "{name}: a failed call is not charged"
        );
    }
}

#[tokio::test]
async fn connection_refused_is_an_outage_and_the_circuit_then_fails_fast() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let base = format!("http://{closed}/v1");
    let app = gateway_app(&[("OPENAI_BASE_URL", base.as_str()), ("UPSTREAM_DEADLINE_SECS", "2")]).await;
    let user = byok_user(&app, false).await;
    let first = chat(&app, &user, hello(false)).await;
    assert_eq!(first.status(), 503);
    assert_eq!(error_code(first).await, "ai_unavailable");
    // Four failed attempts plus one more call reach the threshold of 5; then calls fail fast.
    let _ = chat(&app, &user, hello(false)).await;
    let started = std::time::Instant::now();
    let fast = chat(&app, &user, hello(false)).await;
    assert_eq!(fast.status(), 503);
    assert!(started.elapsed() < Duration::from_millis(500), "circuit open: no retries");
}

#[tokio::test]
async fn the_providers_own_request_errors_pass_through_uncharged() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    let bad_model = r#"{"error":{"message":"The model `gpt-nope` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(404).set_body_raw(bad_model, "application/json"))
        .mount(&app.providers)
        .await;
    let response = chat(&app, &user, json!({"model": "gpt-nope", "messages": []})).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await.unwrap(), bad_model);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let requests = app.directus.received_requests().await.unwrap();
    assert!(!requests.iter().any(|r| r.method.as_str() == "POST" && r.url.path() == "/items/api_key_usage"));
}

#[tokio::test]
async fn a_malformed_success_body_is_passed_on_and_charged_by_estimate() {
    let app = gateway_app(&[]).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw("not json at all", "application/json"))
        .mount(&app.providers)
        .await;
    let response = chat(&app, &user, hello(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "not json at all");
    let usage = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 1).await;
    assert!(usage[0]["total_tokens"].as_u64().unwrap() > 0, "never $0");
}

#[tokio::test]
async fn internal_credit_calls_are_rate_limited_per_tier_but_byok_calls_are_not() {
    let app = gateway_app(&[("RATE_LIMIT_FREE_PER_MIN", "2")]).await;
    let free = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    for _ in 0..2 {
        assert_eq!(chat(&app, &free, hello(false)).await.status(), 200);
    }
    let limited = chat(&app, &free, hello(false)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "30");
    assert_eq!(error_code(limited).await, "rate_limited");

    let byok = byok_user(&app, false).await;
    for _ in 0..5 {
        assert_eq!(chat(&app, &byok, hello(false)).await.status(), 200);
    }
}

#[tokio::test]
async fn a_balance_that_cannot_cover_the_estimate_is_refused_up_front() {
    let app = gateway_app(&[]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { tier: "free", grants: 1, ..Default::default() }).await;
    let expensive =
        json!({"model": "o3", "max_tokens": 100_000, "messages": [{"role": "user", "content": "Think hard"}]});
    let response = chat(&app, &user, expensive).await;
    assert_eq!(response.status(), 402);
    assert_eq!(error_code(response).await, "insufficient_credits");
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn gateway_requests_need_a_valid_token_and_a_model() {
    let app = gateway_app(&[]).await;
    let user = free_user(&app).await;
    let no_token = app.http.post(app.url("/v1/chat/completions")).json(&hello(false)).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let response = chat(&app, &user, json!({"messages": []})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_request");
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn estimate_prices_a_request_from_the_shipped_table() {
    let app = gateway_app(&[]).await;
    let user = free_user(&app).await;
    let response = app
        .http
        .post(app.url("/v1/estimate"))
        .bearer_auth(token_for(&user))
        .json(&json!({"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "prompt_tokens": 1_000_000, "max_output_tokens": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["priced_as"], "listed_family");
    let per_mtok = body["price"]["input_per_mtok_usd"].as_f64().unwrap();
    assert!((body["estimated_cost_cents"].as_f64().unwrap() - per_mtok * 100.0).abs() < 1e-6);
}

#[tokio::test]
async fn a_stream_the_provider_breaks_off_ends_with_a_coded_error_and_is_charged_for_what_passed() {
    let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    let base = format!("{}/v1", scripted_stream_provider(vec![event.to_owned()], None).await);
    let app = gateway_app(&[("OPENAI_BASE_URL", base.as_str())]).await;
    let user = free_user(&app).await;
    let response = chat(&app, &user, hello(true)).await;
    assert_eq!(response.status(), 200, "the stream had started");
    let body = response.text().await.unwrap();
    assert!(body.starts_with("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}"), "{body}");
    assert!(body.contains("upstream_stream_interrupted"), "{body}");
    // "Hel" reached the client: one token by the estimate, never less than what was sent.
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    assert_eq!(ledger[0]["completion_tokens"], 1, "{}", ledger[0]);
}

#[tokio::test]
async fn past_the_platforms_daily_budget_credit_calls_are_refused_or_go_to_the_users_own_key() {
    // One cent a day; a call that may cost 6 cents (100,000 output tokens of gpt-4o-mini) does not fit.
    let app = gateway_app(&[("PLATFORM_DAILY_BUDGET_CENTS", "1")]).await;
    let large = json!({"model": "gpt-4o-mini", "max_tokens": 100_000, "messages": [{"role": "user", "content": "Hi"}]});
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(1)
        .mount(&app.providers)
        .await;
    let free = free_user(&app).await;
    let response = chat(&app, &free, large.clone()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_code(response).await, "platform_budget_exhausted");

    // Credit-first with a usable key of their own: the call goes to the key instead.
    let owner = byok_user(&app, false).await;
    mount_flags(&app.directus, true, false, true).await;
    assert_eq!(app.flag_webhook().await.status(), 200);
    let response = chat(&app, &owner, large).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-source"], "byok");
}

#[tokio::test]
async fn operators_see_every_day_of_spending_the_top_users_and_the_platforms_day_against_its_cap() {
    let app = gateway_app(&[("PLATFORM_DAILY_BUDGET_CENTS", "5000")]).await;
    let today = time::OffsetDateTime::now_utc().date();
    // One day of calls on credits, none on own keys; one user spent them.
    let top_user = new_user_id();
    Mock::given(method("GET"))
        .and(path("/items/credit_transactions"))
        .and(wiremock::matchers::query_param("groupBy[]", "user"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"user": top_user, "count": 3, "sum": {"cost_cents": "42.5"}}]})),
        )
        .with_priority(1)
        .mount(&app.directus)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/credit_transactions"))
        .and(wiremock::matchers::query_param("groupBy[]", "provider"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"provider": "openai", "count": 3,
            "occurred_at_year": today.year(), "occurred_at_month": u8::from(today.month()), "occurred_at_day": today.day(),
            "sum": {"total_tokens": 900, "cost_cents": "42.5"}}]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    for collection in ["/items/api_key_usage", "/items/credit_transactions"] {
        Mock::given(method("GET"))
            .and(path(collection))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
            .with_priority(5)
            .mount(&app.directus)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/users"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": top_user, "email": "big@example.com"}]})),
        )
        .mount(&app.directus)
        .await;

    let (status, spend) = app.get("/v1/admin/spend?days=7", Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, 200, "{spend}");
    let daily = spend["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 7, "every day of the range, quiet ones too");
    assert_eq!(daily[6]["day"], today.to_string());
    assert_eq!((&daily[6]["credits"]["requests"], &daily[6]["credits"]["cost_cents"]), (&json!(3), &json!(42.5)));
    assert_eq!(
        (&daily[0]["own_keys"]["requests"], daily[0]["own_keys"]["cost_cents"].as_f64()),
        (&json!(0), Some(0.0))
    );
    assert_eq!(
        spend["top_users"],
        json!([{"user": top_user, "email": "big@example.com", "cost_cents": 42.5, "requests": 3}])
    );
    let platform = &spend["platform"];
    assert_eq!((platform["cap_cents"].as_f64(), platform["percent"].as_f64()), (Some(5000.0), Some(0.0)), "{platform}");

    for (path, token, status) in [
        ("/v1/admin/spend", None, 401),
        ("/v1/admin/spend", Some(token_for(&top_user)), 401),
        ("/v1/admin/spend?days=0", Some(OPERATOR_TOKEN.to_owned()), 400),
        ("/v1/admin/spend?days=91", Some(OPERATOR_TOKEN.to_owned()), 400),
    ] {
        let (got, body) = app.get(path, token.as_deref()).await;
        assert_eq!(got, status, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_providers_own_daily_budget_refuses_credit_calls_to_it_and_no_other() {
    // One cent a day on the platform's Anthropic key; OpenAI has no budget of its own.
    let app = gateway_app(&[("PLATFORM_DAILY_BUDGET_CENTS_ANTHROPIC", "1")]).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(1)
        .mount(&app.providers)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&app.providers)
        .await;
    let user = free_user(&app).await;
    let claude = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 8000, "messages": [{"role": "user", "content": "Hi"}]});
    let response =
        app.http.post(app.url("/v1/messages")).bearer_auth(token_for(&user)).json(&claude).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "platform_budget_exhausted");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("Anthropic requests on platform credits"), "{body}");
    assert_eq!(chat(&app, &user, hello(false)).await.status(), 200, "OpenAI calls on credits go on");

    for collection in ["/items/api_key_usage", "/items/credit_transactions"] {
        Mock::given(method("GET"))
            .and(path(collection))
            .and(wiremock::matchers::query_param("aggregate[count]", "*"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
            .with_priority(1)
            .mount(&app.directus)
            .await;
    }
    let (status, spend) = app.get("/v1/admin/spend", Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, 200, "{spend}");
    assert_eq!(spend["platform"], Value::Null, "no budget for all providers");
    let anthropic = &spend["platform_providers"][0];
    assert_eq!((anthropic["provider"].as_str(), anthropic["cap_cents"].as_f64()), (Some("anthropic"), Some(1.0)));
}

/// The platform's key rate limited on the first model of an alias (past the deadline): the credit call moves
/// to the next model, and the answer says which served it. A model of the other API style is skipped.
#[tokio::test]
async fn a_credit_call_rate_limited_on_the_platforms_key_moves_to_the_next_model_of_its_alias() {
    let chains = byok_bridge::domain::model_chains::ModelChains::new(
        [("fast".to_owned(), vec!["gpt-4o-mini".to_owned(), "claude-3-5-haiku".to_owned(), "gpt-4.1-nano".to_owned()])]
            .into(),
        Default::default(),
    );
    let app = gateway_app_tweaked(&[("UPSTREAM_DEADLINE_SECS", "1")], |settings| {
        settings.providers.model_chains = std::sync::Arc::new(chains);
    })
    .await;
    let user = free_user(&app).await;
    let limited =
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}});
    let platform = format!("Bearer {INTERNAL_OPENAI}");
    let answers = |model: &str, response: ResponseTemplate| {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("authorization", platform.as_str()))
            .and(body_partial_json(json!({"model": model})))
            .respond_with(response)
    };
    answers("gpt-4o-mini", ResponseTemplate::new(429).insert_header("retry-after", "30").set_body_json(limited))
        .mount(&app.providers)
        .await;
    answers("gpt-4.1-nano", ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .expect(1)
        .mount(&app.providers)
        .await;

    let response = chat(&app, &user, json!({"model": "fast", "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-model"], "gpt-4.1-nano");
    assert_eq!(response.headers()["x-byok-source"], "internal");
    let recorded = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    let row = &recorded[0];
    assert_eq!((row["model"].as_str(), row["fallback_from"].as_str()), (Some("gpt-4.1-nano"), Some("gpt-4o-mini")));
}

/// A user's own key rate limited in BYOK-first mode: by default the caller gets the provider's 429; with
/// `OWN_KEY_RATE_LIMIT_FALLBACK` the call is served on credits, as for an invalid or exhausted key.
#[tokio::test]
async fn a_rate_limited_own_key_falls_back_to_credits_only_when_the_operator_allows_it() {
    let limited =
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}});
    for allowed in [false, true] {
        let app = gateway_app_tweaked(&[("UPSTREAM_DEADLINE_SECS", "1")], |settings| {
            settings.providers.rate_limited_own_keys_fall_back = allowed;
        })
        .await;
        let user = byok_user(&app, false).await;
        openai_answers(
            OPENAI_KEY,
            ResponseTemplate::new(429).insert_header("retry-after", "30").set_body_json(limited.clone()),
        )
        .mount(&app.providers)
        .await;
        openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
            .mount(&app.providers)
            .await;
        let response = chat(&app, &user, hello(false)).await;
        if allowed {
            let source = response.headers()["x-byok-source"].to_str().unwrap().to_owned();
            assert_eq!((response.status().as_u16(), source.as_str()), (200, "internal"));
        } else {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!((status, body["error"]["code"].as_str()), (429, Some("provider_rate_limited")));
        }
    }
}

/// A fallback this user cannot be served by (BYOK-only, no key for the next model's provider) is passed over:
/// the caller learns that AI is unavailable, not that they lack a key for a model they never asked for.
#[tokio::test]
async fn a_fallback_the_user_cannot_use_is_passed_over_and_the_outage_stands() {
    let chains = byok_bridge::domain::model_chains::ModelChains::new(
        Default::default(),
        [("gpt-4o-mini".to_owned(), vec!["mistral-small-latest".to_owned()])].into(),
    );
    let app = gateway_app_tweaked(&[("UPSTREAM_DEADLINE_SECS", "1")], |settings| {
        settings.providers.model_chains = std::sync::Arc::new(chains);
    })
    .await;
    let user = byok_user(&app, true).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "down"}})))
        .mount(&app.providers)
        .await;
    let response = chat(&app, &user, hello(false)).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("ai_unavailable")), "{body}");
}

/// Every call's future is allocated and moved as a whole, so what only the rare paths need (reading a user
/// never seen, loading the flags, asking Directus about a session: up to eight Directus requests at once) is
/// boxed where it runs. Inline, it made the future of a call 47 KB and the handler's 95 KB, copied on every
/// call: 12% of the sidecar's CPU per call at 32 connections. Since the cache misses of flags and callers, a
/// key's failure and a fallback's try are boxed too, it is 3,840 bytes (5,056 before).
#[tokio::test]
async fn a_calls_future_stays_small() {
    use byok_bridge::domain::llm::Api;
    use byok_bridge::domain::user::UserId;
    use byok_bridge::services::gateway::{Keeping, Retries};

    let directus = wiremock::MockServer::start().await;
    let vars = test_env(&directus.uri(), &[("INTERNAL_OPENAI_API_KEY", INTERNAL_OPENAI)]);
    let _data = DataDir(vars["DATA_DIR"].clone().into());
    let settings = byok_bridge::config::Settings::from_lookup(|k| vars.get(k).cloned()).expect("valid settings");
    let state = byok_bridge::app::build(&settings, None).expect("the services build");
    let gateway = &state.services().gateway;
    let request = gateway
        .parse(Api::ChatCompletions, &br#"{"model":"gpt-4o-mini","messages":[]}"#.as_slice().into())
        .expect("a valid request");
    let user = UserId::parse(&new_user_id()).expect("a user id");
    let call = gateway.complete(user, Api::ChatCompletions, &request, Retries::WithinDeadline, Keeping::Outbox);
    let size = std::mem::size_of_val(&call);
    assert!(size <= 4 * 1024, "a call's future is {size} bytes");
}

/// A provider (or a base URL) answering a redirect never gets the key and the prompt sent on: reqwest would keep
/// `x-api-key` on its way to another host. The call is an outage, retried, then `ai_unavailable`.
#[tokio::test]
async fn a_redirect_from_a_provider_is_not_followed_and_the_key_stays_home() {
    let app = gateway_app(&[("UPSTREAM_DEADLINE_SECS", "3")]).await;
    let user = free_user(&app).await;
    let elsewhere = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", format!("{}/v1/messages", elsewhere.uri()).as_str()),
        )
        .mount(&app.providers)
        .await;
    let response = messages(
        &app,
        &user,
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let status = response.status();
    let followed = elsewhere.received_requests().await.unwrap();
    let keys: Vec<_> = followed.iter().filter_map(|r| r.headers.get("x-api-key")).collect();
    assert!(followed.is_empty(), "the redirect was followed, x-api-key sent along: {}", !keys.is_empty());
    assert!(!app.providers.received_requests().await.unwrap().is_empty());
    let body: Value = response.json().await.unwrap();
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (503, Some("ai_unavailable")), "{body}");
}
