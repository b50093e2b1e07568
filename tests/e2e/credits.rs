//! Credits against the real ledger in Directus: concurrent calls cannot overdraw it, and every call is
//! charged its exact fraction of a cent.

use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::gateway::{gateway_sidecar, wait_for_rows};
use crate::harness::{Instance, serial};

const CHAT_OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;

#[tokio::test]
async fn concurrent_calls_cannot_overdraw_the_ledger_and_each_call_is_charged_its_exact_fraction() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = reqwest::Client::new();
    instance.set_byok_first(&http).await;
    let providers = MockServer::start().await;
    // gpt-4o answers with 90,000 output tokens (90 cents) after a moment, so the calls overlap.
    let expensive = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 90_000}});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "gpt-4o"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(expensive).set_delay(std::time::Duration::from_millis(300)),
        )
        .mount(&providers)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "gpt-4o-mini"})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&providers)
        .await;
    let sidecar = gateway_sidecar(&instance, &providers, &[("RATE_LIMIT_FREE_PER_MIN", "1000")]).await;
    let (user, token) = instance.new_user(&http, "free", "100").await;

    // Twenty calls at once, each of which may cost 95 cents, on 100 cents.
    let body = json!({"model": "gpt-4o", "max_tokens": 95_000, "messages": [{"role": "user", "content": "Go"}]});
    let calls: Vec<_> = (0..20)
        .map(|_| http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&body).send())
        .collect();
    let statuses: Vec<u16> =
        futures_util::future::join_all(calls).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 19, "{statuses:?}");

    // A 14-token call to gpt-4o-mini: 11 * $0.15/M + 3 * $0.60/M = 0.000345 cents, not a whole cent.
    let cheap = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&cheap).send().await;
    assert_eq!(response.unwrap().status(), 200);

    let query = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let rows = wait_for_rows(&instance, &http, "/items/credit_transactions", &query, 2).await;
    let cost = |model: &str| {
        let row = rows.iter().find(|r| r["model"] == model).unwrap();
        row["cost_cents"].as_f64().or_else(|| row["cost_cents"].as_str().and_then(|s| s.parse().ok())).unwrap()
    };
    assert!((cost("gpt-4o") - 90.0025).abs() < 1e-9, "{rows:?}");
    assert!((cost("gpt-4o-mini") - 0.000345).abs() < 1e-12, "{rows:?}");
    let balance = instance.ledger_balance(&http, &user).await;
    assert!((balance - (100.0 - 90.0025 - 0.000345)).abs() < 1e-9, "the ledger says {balance}");
    assert!(balance >= 0.0);
    sidecar.stop().await;
}
