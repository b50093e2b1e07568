//! The byok-bridge extension's bulk usage route in a real Directus: the sidecar's batches stored a few hundred
//! rows per INSERT, each record once, only deductions in the ledger, only from the sidecar's role; and the
//! sidecar's own records go through it.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fakes::{GatewayScene, gateway_scene};
use crate::harness::Instance;

fn deduction(user: &str, request_id: Uuid, cost: &str) -> Value {
    json!({
        "user": user, "transaction_type": "deduction", "service_type": "openai.chat_completions",
        "cost_cents": cost, "provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 11,
        "completion_tokens": 3, "total_tokens": 14, "request_id": request_id,
        "occurred_at": "2026-12-05T22:00:00.123Z", "description": "openai gpt-4o-mini",
    })
}

async fn post(instance: &Instance, http: &reqwest::Client, token: &str, rows: &Value) -> (u16, Value) {
    let response = http
        .post(instance.directus("/byok-bridge/usage/credit_transactions"))
        .bearer_auth(token)
        .json(rows)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn ledger_of(instance: &Instance, http: &reqwest::Client, user: &str) -> Vec<Value> {
    let query = [("filter[user][_eq]", user), ("filter[transaction_type][_eq]", "deduction"), ("sort", "request_id")];
    instance.admin_get(http, "/items/credit_transactions", &query).await.as_array().unwrap().clone()
}

#[tokio::test]
async fn a_batch_sent_twice_is_stored_once_with_every_field_as_sent() {
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let (user, _) = instance.new_user(&http, "free", "100").await;
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let batch = json!([deduction(&user, ids[0], "0.000345"), deduction(&user, ids[1], "12.5")]);
    for _ in 0..2 {
        let (status, body) = post(&instance, &http, instance.var("DIRECTUS_TOKEN"), &batch).await;
        assert_eq!(status, 200, "{body}");
    }
    let stored = ledger_of(&instance, &http, &user).await;
    assert_eq!(stored.len(), 2, "each record once: {stored:?}");
    assert_eq!(stored[0]["request_id"], json!(ids[0]));
    assert_eq!(stored[0]["occurred_at"], json!("2026-12-05T22:00:00.123Z"), "to the millisecond");
    assert_eq!(stored[0]["model"], json!("gpt-4o-mini"));
    assert!(stored[0]["created_at"].is_string(), "stamped as the items API would: {}", stored[0]);
    assert!((instance.ledger_balance(&http, &user).await - (100.0 - 12.500345)).abs() < 1e-9);
}

#[tokio::test]
async fn only_the_sidecars_role_may_store_and_only_deductions_of_known_users() {
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let (user, user_token) = instance.new_user(&http, "free", "100").await;
    let service = instance.var("DIRECTUS_TOKEN");
    let one = |row: Value| json!([row]);

    for token in [instance.var("DIRECTUS_ADMIN_TOKEN"), user_token.as_str()] {
        let (status, body) = post(&instance, &http, token, &one(deduction(&user, Uuid::now_v7(), "1"))).await;
        assert_eq!((status, &body["errors"][0]["extensions"]["code"]), (403, &json!("FORBIDDEN")), "{body}");
    }
    let mut grant = deduction(&user, Uuid::now_v7(), "1000");
    grant["transaction_type"] = json!("grant");
    let mut negative = deduction(&user, Uuid::now_v7(), "1");
    negative["cost_cents"] = json!("-1000");
    let stranger = deduction(&Uuid::new_v4().to_string(), Uuid::now_v7(), "1");
    for refused in [grant, negative, stranger] {
        // A good record beside the bad one: the batch is all or nothing.
        let batch = json!([deduction(&user, Uuid::now_v7(), "1"), refused]);
        let (status, body) = post(&instance, &http, service, &batch).await;
        assert_eq!((status, &body["errors"][0]["extensions"]["code"]), (400, &json!("INVALID_PAYLOAD")), "{body}");
    }
    assert_eq!(ledger_of(&instance, &http, &user).await, Vec::<Value>::new(), "nothing was stored");
    assert!((instance.ledger_balance(&http, &user).await - 100.0).abs() < 1e-9);
}

#[tokio::test]
async fn the_sidecar_stores_its_records_through_the_route() {
    let GatewayScene { _serial, _providers, instance, http, sidecar } = gateway_scene(&[]).await;
    let (user, token) = instance.new_user(&http, "free", "100").await;

    let call = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&call).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let query = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &query, 1).await;
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    // Through the items API a deduction gets an activity row (accountability `activity`) and a v4 id from
    // Directus; through the route neither.
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7, "the route's id: {id}");
    let activity = [("filter[collection][_eq]", "credit_transactions"), ("filter[item][_eq]", id.as_str())];
    assert_eq!(instance.admin_get(&http, "/activity", &activity).await, json!([]));
    sidecar.stop().await;
}
