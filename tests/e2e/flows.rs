//! Directus Flows call the sidecar: the seed's example Flow summarizes a new note through the
//! "byok-bridge: LLM call" operation for the note's user, writes the summary back, and the call is accounted to
//! that user, under the same matrix and ledger as their own calls.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::fakes::{fake_providers, gateway_sidecar};
use crate::harness::{Instance, serial};

#[tokio::test]
async fn the_example_flow_summarizes_a_new_note_for_its_user_and_the_call_is_accounted_to_them() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, &[("FLOWS_TOKEN", instance.var("FLOWS_TOKEN"))]).await;
    let (user, _) = instance.new_user(&http, "premium", "100").await;

    let created: Value = http
        .post(instance.directus("/items/byok_demo_notes"))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .json(&json!({"user": user, "text": "A long note about quarterly numbers that nobody will read in full."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["data"]["id"].as_u64().unwrap_or_else(|| panic!("{created}"));

    let mut summary = Value::Null;
    for _ in 0..150 {
        let note = instance.admin_get(&http, &format!("/items/byok_demo_notes/{id}"), &[]).await;
        summary = note["summary"].clone();
        if !summary.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(summary, "Hi!", "the fake provider's answer, written back by the Flow");

    let charged = instance
        .wait_for_rows(
            &http,
            "/items/credit_transactions",
            &[("filter[user][_eq]", &user), ("filter[transaction_type][_eq]", "deduction")],
            1,
        )
        .await;
    assert_eq!(charged[0]["service_type"], "openai.chat_completions", "{charged:?}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_flow_can_queue_the_call_as_a_job_and_the_answer_is_written_to_the_item_when_it_completes() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("in the background"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "chatcmpl-bg", "object": "chat.completion",
            "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Queued summary."},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})))
        .with_priority(1)
        .mount(&providers)
        .await;
    let sidecar = gateway_sidecar(&instance, &providers, &[("FLOWS_TOKEN", instance.var("FLOWS_TOKEN"))]).await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, instance.directus(path))
            .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
            .json(&body)
            .send()
    };
    // A Flow triggered by a webhook: summarize the note it names, in the background.
    let flow: Value = admin(reqwest::Method::POST, "/flows", json!({"name": format!("e2e background {user}"),
        "status": "active", "trigger": "webhook", "accountability": "all", "options": {"method": "POST", "async": false}}))
        .await.unwrap().json().await.unwrap();
    let flow = flow["data"]["id"].as_str().unwrap().to_owned();
    let operation: Value = admin(reqwest::Method::POST, "/operations", json!({"flow": flow, "name": "Summarize later",
        "key": "summarize_later", "type": "byok-bridge-llm", "position_x": 19, "position_y": 1, "options": {
            "api": "chat.completions", "model": "gpt-4o-mini", "user": "{{$trigger.body.user}}",
            "prompt": "Summarize in the background: {{$trigger.body.text}}", "background": true,
            "result_collection": "byok_demo_notes", "result_item": "{{$trigger.body.note}}", "result_field": "summary"}}))
        .await.unwrap().json().await.unwrap();
    admin(reqwest::Method::PATCH, &format!("/flows/{flow}"), json!({"operation": operation["data"]["id"]}))
        .await
        .unwrap();

    let created: Value =
        admin(reqwest::Method::POST, "/items/byok_demo_notes", json!({"user": user, "text": "Numbers."}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let note = created["data"]["id"].as_u64().unwrap();
    let summary_is = |expected: &'static str| {
        let (instance, http) = (&instance, &http);
        async move {
            for _ in 0..150 {
                let item = instance.admin_get(http, &format!("/items/byok_demo_notes/{note}"), &[]).await;
                if item["summary"] == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the note's summary never became {expected:?}");
        }
    };
    // The seed's own Flow summarizes it live first.
    summary_is("Hi!").await;

    let queued: Value = admin(
        reqwest::Method::POST,
        &format!("/flows/trigger/{flow}"),
        json!({"user": user, "note": note, "text": "Numbers."}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(queued["status"], "queued", "the operation hands on the job: {queued}");
    summary_is("Queued summary.").await;

    // The job is the user's, and charged to them like any call.
    let (_, jobs) = sidecar.get(&http, "/v1/jobs", Some(&token)).await;
    let job = &jobs["jobs"][0];
    assert_eq!((job["id"].as_str(), job["status"].as_str()), (queued["job_id"].as_str(), Some("succeeded")));
    assert_eq!(job["callback"]["state"], "delivered");
    assert_eq!(job["metadata"]["directus_flow"]["field"], "summary");
    instance
        .wait_for_rows(
            &http,
            "/items/credit_transactions",
            &[("filter[user][_eq]", &user), ("filter[transaction_type][_eq]", "deduction")],
            2,
        )
        .await;
    admin(reqwest::Method::DELETE, &format!("/flows/{flow}"), json!({})).await.unwrap();
    sidecar.stop().await;
}
