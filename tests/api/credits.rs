//! Credits cannot leak: every generated token is charged, concurrent calls cannot spend what is not there,
//! and a Directus outage neither stops known users nor lets them overspend.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::gateway::{INTERNAL_OPENAI, byok_user, chat, free_user, gateway_app, hello, messages};
use crate::helpers::*;
use crate::streams::{read_until_then_leave, scripted_stream_provider};

fn anthropic_event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[tokio::test]
async fn an_anthropic_stream_the_client_leaves_before_message_delta_is_charged_for_what_it_received() {
    let text = "x".repeat(28);
    let mut events = vec![anthropic_event(
        "message_start",
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}}),
    )];
    events.extend((0..1_650).map(|_| {
        anthropic_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        )
    }));
    let ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
    let base = scripted_stream_provider(events, Some(ping)).await;
    let app = gateway_app(&[("ANTHROPIC_BASE_URL", base.as_str())]).await;
    let user = free_user(&app).await;

    let response = messages(
        &app,
        &user,
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 20_000, "stream": true, "messages": [{"role": "user", "content": "Write"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    read_until_then_leave(response, "text_delta", 1_650).await;

    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    // 46,200 characters reached the client: 15,400 tokens by the estimate, not message_start's 1.
    assert_eq!(ledger[0]["completion_tokens"], 15_400, "{}", ledger[0]);
    assert_eq!(ledger[0]["prompt_tokens"], 25, "message_start's input count is final");
}

#[tokio::test]
async fn an_openai_tool_call_stream_with_null_stream_options_is_charged_for_its_arguments() {
    let arguments = r#"{"rows": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}"#;
    let chunk = |delta: Value| format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": delta}]}));
    let mut events = vec![chunk(
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "save", "arguments": ""}}]}),
    )];
    events
        .extend((0..1_400).map(|_| chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}))));
    let base = format!("{}/v1", scripted_stream_provider(events, Some(": keep-alive\n\n")).await);
    let app = gateway_app(&[("OPENAI_BASE_URL", base.as_str())]).await;
    let user = free_user(&app).await;

    let mut body = hello(true);
    body["stream_options"] = Value::Null;
    let response = chat(&app, &user, body).await;
    assert_eq!(response.status(), 200);
    read_until_then_leave(response, "arguments", 1_401).await;

    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    // 57,400 characters of arguments plus the function's name reached the client, and no usage chunk.
    let generated = 4 + 1_400 * arguments.len() as u64;
    assert_eq!(ledger[0]["completion_tokens"], generated.div_ceil(3), "{}", ledger[0]);
}

#[tokio::test]
async fn twenty_concurrent_calls_on_100_cents_cannot_spend_more_than_100_cents() {
    let app = gateway_app(&[("RATE_LIMIT_FREE_PER_MIN", "1000")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { tier: "free", grants: 100, ..Default::default() }).await;
    // Each call may cost up to 95,000 output tokens of gpt-4o (95 cents) and really costs 90,000 (90 cents).
    let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 90_000}});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer).set_delay(Duration::from_millis(300)))
        .mount(&app.providers)
        .await;
    let body = json!({"model": "gpt-4o", "max_tokens": 95_000, "messages": [{"role": "user", "content": "Go"}]});
    let calls: Vec<_> = (0..20).map(|_| chat(&app, &user, body.clone())).collect();
    let responses = futures_util::future::join_all(calls).await;

    let mut served = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => served += 1,
            402 => {
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["error"]["code"], "insufficient_credits");
                assert!(error["error"]["needed_cents"].as_f64().unwrap() > 95.0, "{error}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(served, 1, "100 cents cover one call that may cost 95");
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["cost_cents"], "90.002500000");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 1, "refused calls never reach the provider");
}

#[tokio::test]
async fn without_max_tokens_the_models_longest_answer_is_reserved() {
    let app = gateway_app(&[]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    // 20 cents cover 4,096 output tokens of gpt-4o (4 cents) but not its 16,384 maximum (16.4 cents) twice.
    mount_user(&app.directus, &user, FakeUser { tier: "free", grants: 20, ..Default::default() }).await;
    let body = json!({"model": "gpt-4o", "n": 2, "messages": [{"role": "user", "content": "Go"}]});
    let response = chat(&app, &user, body).await;
    assert_eq!(response.status(), 402);
    let error: Value = response.json().await.unwrap();
    let needed = error["error"]["needed_cents"].as_f64().unwrap();
    assert!((32.768..32.8).contains(&needed), "two completions of up to 16,384 tokens at $10/M: {error}");
    assert_eq!(error["error"]["available_cents"], 20);
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

/// Directus answers 503 to everything from now on.
async fn directus_goes_down(app: &TestApp) {
    app.directus.reset().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(503)).mount(&app.directus).await;
}

/// Waits until the sidecar serves `user` on their last known profile (asking `/v1/route`, which spends
/// nothing; bounded: the profile cache expires after a second, and 10 s leave room for a loaded machine), then
/// makes the call: a call made while the profile was still fresh would spend credits the test counts on.
async fn until_served_stale(app: &TestApp, user: &str, body: &Value) -> reqwest::Response {
    let mut last = Value::Null;
    for _ in 0..200 {
        let response = app.route(&token_for(user), "openai").await;
        last = response.json().await.unwrap_or_default();
        if last["caller_stale"] == true {
            let response = chat(app, user, body.clone()).await;
            assert!(
                response.headers().get("x-byok-stale").is_some_and(|v| v.to_str().unwrap().contains("caller")),
                "the call was served on the last known profile too"
            );
            return response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never served on a stale profile; the last decision: {last}");
}

#[tokio::test]
async fn a_directus_outage_serves_known_callers_within_their_balance_and_refuses_unknown_ones() {
    let app = gateway_app(&[("USER_CACHE_TTL_SECS", "1"), ("RATE_LIMIT_FREE_PER_MIN", "1000")]).await;
    let byok = byok_user(&app, false).await;
    let free = new_user_id();
    mount_user(&app.directus, &free, FakeUser { tier: "free", grants: 10, ..Default::default() }).await;
    // Each call really costs 3 cents (gpt-4o: 3,000 output tokens at $10/M) and may cost 4.
    let answer = json!({"choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 3_000}});
    for key in [OPENAI_KEY, INTERNAL_OPENAI] {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("authorization", format!("Bearer {key}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer.clone()))
            .mount(&app.providers)
            .await;
    }
    let body = json!({"model": "gpt-4o", "max_tokens": 4_000, "messages": []});
    assert_eq!(chat(&app, &byok, body.clone()).await.status(), 200);
    assert_eq!(chat(&app, &free, body.clone()).await.status(), 200, "3 of 10 cents spent");
    // That deduction is still on its way to Directus when it goes down.
    directus_goes_down(&app).await;

    let response = until_served_stale(&app, &byok, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-source"], "byok", "the last known key");

    let response = until_served_stale(&app, &free, &body).await;
    assert_eq!(response.status(), 200, "7 cents left cover a call that may cost 4");
    let response = chat(&app, &free, body.clone()).await;
    assert_eq!(response.status(), 402, "4 cents left do not: the outage mints no money");
    assert_eq!(error_code(response).await, "insufficient_credits");

    let stranger = new_user_id();
    let response = chat(&app, &stranger, body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "account_service_unavailable");

    let (_, ready) = app.get("/readyz", None).await;
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["stale"]["callers"], true);
    assert!(ready["stale"]["stale_answers_served"].as_u64().unwrap() >= 3);
}
