//! Directus Flows call the sidecar: the seed's example Flow summarizes a new note through the
//! "byok-bridge: LLM call" operation for the note's user, writes the summary back, and the call is accounted to
//! that user, under the same matrix and ledger as their own calls.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fakes::fake_providers;
use crate::gateway::gateway_sidecar;
use crate::harness::{Instance, serial};

#[tokio::test]
async fn the_example_flow_summarizes_a_new_note_for_its_user_and_the_call_is_accounted_to_them() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = reqwest::Client::new();
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
