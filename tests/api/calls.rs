//! `GET /v1/calls`: a user's recent calls, failed ones included, each with its code, who paid and its cost.

use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::gateway::{CHAT_OK, INTERNAL_OPENAI, chat, free_user, gateway_app, hello, openai_answers};
use crate::helpers::*;

/// Polls (bounded) until the user's first page lists `count` calls, then returns the page.
async fn calls_of(app: &TestApp, user: &str, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (status, page) = app.get("/v1/calls", Some(&token_for(user))).await;
        assert_eq!(status, 200, "{page}");
        let calls = page["calls"].as_array().cloned().unwrap_or_default();
        if calls.len() >= count {
            return calls;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{count} calls were never listed");
}

#[tokio::test]
async fn answered_refused_and_provider_refused_calls_are_listed_with_code_source_and_cost() {
    let app = gateway_app(&[]).await;
    let user = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.providers)
        .await;
    let refusal = r#"{"error":{"message":"The model `gpt-4o` does not exist or you do not have access to it.","code":"model_not_found"}}"#;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(404).set_body_raw(refusal, "application/json"))
        .mount(&app.providers)
        .await;

    let answered = chat(&app, &user, hello(false)).await;
    assert_eq!(answered.status(), 200);
    let header = |name: &str| answered.headers()[name].to_str().unwrap().to_owned();
    let (usage_id, cost) = (header("x-byok-usage-id"), header("x-byok-cost-cents"));
    let provider_refused = chat(&app, &user, json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(provider_refused.status(), 404);
    let mut priority = hello(false);
    priority["service_tier"] = json!("priority");
    let refused = chat(&app, &user, priority).await;
    assert_eq!(error_code(refused).await, "service_tier_not_available");

    let calls = calls_of(&app, &user, 3).await;
    let [newest, middle, oldest] = &calls[..] else { panic!("{calls:?}") };
    assert_eq!(newest["error_code"], "service_tier_not_available");
    assert_eq!(
        (&newest["status"], &newest["source"], &newest["cost_cents"]),
        (&json!(422), &json!(null), &json!("0.000000000"))
    );
    assert_eq!(middle["error_code"], "provider_refused_request");
    assert_eq!(
        (&middle["status"], &middle["source"], &middle["model"]),
        (&json!(404), &json!("internal"), &json!("gpt-4o"))
    );
    assert_eq!(middle["cost_cents"], "0.000000000", "the provider's own refusal is not charged");
    assert_eq!(
        (&oldest["id"], &oldest["status"], &oldest["error_code"]),
        (&json!(usage_id), &json!(200), &json!(null))
    );
    assert_eq!((&oldest["prompt_tokens"], &oldest["completion_tokens"]), (&json!(11), &json!(3)));
    assert_eq!(oldest["cost_cents"], json!(cost), "the cost the answer said");
    assert_eq!((&oldest["provider"], &oldest["source"]), (&json!("openai"), &json!("internal")));
    assert!(oldest["at"].as_str().unwrap().ends_with('Z'), "{oldest}");
}

#[tokio::test]
async fn a_user_sees_only_their_own_calls_and_a_bad_page_request_is_refused() {
    let app = gateway_app(&[]).await;
    let (user, other) = (free_user(&app).await, free_user(&app).await);
    let mut priority = hello(false);
    priority["service_tier"] = json!("priority");
    for _ in 0..3 {
        assert_eq!(chat(&app, &user, priority.clone()).await.status(), 422);
    }
    let calls = calls_of(&app, &user, 3).await;
    let (status, page) = app.get("/v1/calls", Some(&token_for(&other))).await;
    assert_eq!((status, &page["calls"]), (200, &json!([])), "another user's calls are not theirs");
    assert_eq!(page["kept"], json!({"days": 30, "calls": 500}), "what is kept, and for how long");

    let (status, first) = app.get("/v1/calls?limit=2", Some(&token_for(&user))).await;
    assert_eq!((status, first["calls"].as_array().unwrap().len()), (200, 2));
    assert_eq!(first["next"], calls[1]["id"]);
    let next = format!("/v1/calls?limit=2&after={}", first["next"].as_str().unwrap());
    let (_, second) = app.get(&next, Some(&token_for(&user))).await;
    assert_eq!((&second["calls"][0]["id"], second.get("next")), (&calls[2]["id"], None));

    for bad in ["limit=0", "limit=201", "limit=many", "after=not-an-id", "status=failed"] {
        let (status, body) = app.get(&format!("/v1/calls?{bad}"), Some(&token_for(&user))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {body}");
    }
    let (status, body) = app.get("/v1/calls", None).await;
    assert_eq!(status, 401, "{body}");
}
