//! Tried as an abusive user would, against the real Directus 12.4.0 (and, in the suite's second run, the real
//! Redis): sign-in cannot get another user's account suspended, the sidecar's own Directus token cannot mint
//! credits, one user cannot fill the job queue, and a call whose client hung up is still charged.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::fakes::{fake_providers, gateway_sidecar};
use crate::harness::{Instance, Sidecar, serial};

async fn sign_in(http: &reqwest::Client, sidecar: &Sidecar, email: &str, password: &str) -> u16 {
    let body = json!({"email": email, "password": password});
    http.post(sidecar.url("/v1/auth/login")).json(&body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn thirty_wrong_passwords_through_the_sidecar_never_get_the_account_suspended() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, &[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", "1000")]).await;
    let pat = instance.new_account(&http, "premium", "0").await;

    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(sign_in(&http, &sidecar, &pat.email, "not-pats-password").await);
    }
    let user = instance.admin_get(&http, &format!("/users/{}", pat.id), &[("fields", "status")]).await;
    assert_eq!(user["status"], "active", "Directus did not suspend the account: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 27, "{statuses:?}");

    // Pat signs in to Directus directly: the hook tells the sidecar, which lets Pat in at once.
    let direct = http
        .post(instance.directus("/auth/login"))
        .json(&json!({"email": pat.email, "password": pat.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let mut status = 0;
    for _ in 0..100 {
        status = sign_in(&http, &sidecar, &pat.email, &pat.password).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the hook's report of the sign-in reached the sidecar");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_sidecars_directus_token_cannot_mint_credits() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let (user, _) = instance.new_user(&http, "free", "100").await;
    let service = instance.var("DIRECTUS_TOKEN");
    let before = instance.ledger_balance(&http, &user).await;

    // A negative deduction would add credits: refused (the schema's validation), as are grants and refunds.
    for row in [
        json!({"user": user, "transaction_type": "deduction", "cost_cents": "-500", "service_type": "openai.chat_completions", "request_id": uuid::Uuid::new_v4()}),
        json!({"user": user, "transaction_type": "grant", "cost_cents": "500", "service_type": "e2e", "request_id": uuid::Uuid::new_v4()}),
        json!({"user": user, "transaction_type": "refund", "cost_cents": "500", "service_type": "e2e", "request_id": uuid::Uuid::new_v4()}),
    ] {
        let response =
            http.post(instance.directus("/items/credit_transactions")).bearer_auth(service).json(&row).send().await;
        let status = response.unwrap().status().as_u16();
        assert!(matches!(status, 400 | 403), "{row}: {status}");
    }
    // Nor can it change or remove a row already in the ledger (a deduction made smaller is credit too).
    let rows = instance
        .admin_get(&http, "/items/credit_transactions", &[("filter[user][_eq]", &user), ("fields", "id")])
        .await;
    let id = rows[0]["id"].to_string();
    let url = instance.directus(&format!("/items/credit_transactions/{id}"));
    let patched = http.patch(&url).bearer_auth(service).json(&json!({"cost_cents": "1000"})).send().await.unwrap();
    assert_eq!(patched.status(), 403);
    assert_eq!(http.delete(&url).bearer_auth(service).send().await.unwrap().status(), 403);
    assert_eq!(instance.ledger_balance(&http, &user).await, before, "the ledger is unchanged");
}

#[tokio::test]
async fn one_user_cannot_keep_more_jobs_waiting_than_the_cap() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let providers = fake_providers().await;
    let caps = [("JOB_WORKERS", "0"), ("JOB_MAX_WAITING_PER_USER", "5")];
    let sidecar = gateway_sidecar(&instance, &providers, &caps).await;
    let (user, token) = instance.new_user(&http, "free", "100").await;
    let job = json!({"api": "chat.completions", "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}});
    let submit = || http.post(sidecar.url("/v1/jobs")).bearer_auth(&token).json(&job).send();
    for _ in 0..5 {
        assert_eq!(submit().await.unwrap().status(), 202);
    }
    let refused = submit().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "job_queue_full");
    // Listed two at a time, each once.
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    loop {
        let mut query = vec![("limit", "2".to_owned())];
        query.extend(after.clone().map(|a| ("after", a)));
        let page: Value = http
            .get(sidecar.url("/v1/jobs"))
            .query(&query)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 5);
    assert!(!user.is_empty());
    sidecar.stop().await;
}

#[tokio::test]
async fn a_call_whose_client_hung_up_is_charged_in_the_real_ledger() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let long = json!({"id": "chatcmpl-long", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5_000, "total_tokens": 5_012}});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "gpt-4o"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(long).set_delay(Duration::from_secs(2)))
        .with_priority(1)
        .mount(&providers)
        .await;
    let sidecar = gateway_sidecar(&instance, &providers, &[]).await;
    let (user, token) = instance.new_user(&http, "free", "500").await;
    let body =
        json!({"model": "gpt-4o", "max_tokens": 6_000, "messages": [{"role": "user", "content": "Write a lot"}]});
    let impatient = http
        .post(sidecar.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(impatient.is_err(), "the client hung up");
    let filter = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let deductions = instance.wait_for_rows(&http, "/items/credit_transactions", &filter, 1).await;
    assert_eq!(deductions.len(), 1);
    assert_eq!(deductions[0]["completion_tokens"], 5_000, "{}", deductions[0]);
    sidecar.stop().await;
}
