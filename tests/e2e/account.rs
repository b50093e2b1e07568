//! What end users get besides the gateway: signing in through the sidecar, their account, onboarding facts,
//! cost recommendations, their own notifications, provider status, and the OpenAPI document of it all.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::fakes::{GOOD_KEY, GatewayScene, gateway_scene, gateway_sidecar};
use crate::harness::{Instance, Sidecar, serial};

async fn get(http: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_user_signs_in_through_the_sidecar_sees_their_account_saves_a_key_and_gets_cheaper_models() {
    let GatewayScene { _serial, _providers, instance, http, sidecar } = gateway_scene(&[]).await;
    let user = instance.new_account(&http, "premium", "250").await;

    let (status, body) =
        post(&http, sidecar.url("/v1/auth/login"), None, json!({"email": user.email, "password": "wrong"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")), "{body}");
    assert!(!body.to_string().contains("wrong"), "the password is never echoed: {body}");
    let (status, tokens) =
        post(&http, sidecar.url("/v1/auth/login"), None, json!({"email": user.email, "password": user.password})).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert!(tokens["expires_in_secs"].as_u64().unwrap() > 0);

    let (status, account) = get(&http, sidecar.url("/v1/account"), &access).await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["user"]["id"], user.id.as_str());
    assert_eq!(account["user"]["email"], user.email.as_str());
    assert_eq!(account["user"]["tier"], "premium");
    assert_eq!(account["mode"], "byok_first");
    assert_eq!(account["byok"], json!({"enabled": true, "allowed": true, "reason": null}));
    assert_eq!(account["credits"]["balance_cents"], 250.0);

    let (status, listed) = get(&http, sidecar.url("/v1/providers"), &access).await;
    assert_eq!(status, 200, "{listed}");
    let openai_info = &listed["providers"][0];
    assert_eq!(openai_info["provider"], "openai");
    assert!(openai_info["signup_url"].as_str().unwrap().starts_with("https://"));
    assert_eq!(openai_info["byok"]["reason"]["code"], "no_key", "{listed}");
    assert!(openai_info["key"].is_null());

    let response =
        http.put(sidecar.url("/v1/keys/openai")).bearer_auth(&access).json(&json!({"api_key": GOOD_KEY})).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let (_, listed) = get(&http, sidecar.url("/v1/providers"), &access).await;
    let openai_info = &listed["providers"][0];
    assert_eq!(openai_info["byok"], json!({"usable_now": true, "reason": null}), "{listed}");
    assert_eq!(openai_info["key"]["status"], "active");
    assert!(!listed.to_string().contains(&GOOD_KEY[12..]), "only the masked hint: {listed}");
    assert_eq!(listed["providers"][1]["byok"]["reason"]["code"], "no_key");

    let (status, advice) = post(
        &http,
        sidecar.url("/v1/recommendations"),
        Some(&access),
        json!({"prompt": "Summarize this paragraph for me.", "max_output_tokens": 300, "limit": 20}),
    )
    .await;
    assert_eq!(status, 200, "{advice}");
    let list = advice["recommendations"].as_array().unwrap();
    assert!(list.len() >= 4, "{advice}");
    let costs: Vec<f64> = list.iter().map(|r| r["estimated_cost_cents"].as_f64().unwrap()).collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "cheapest first: {costs:?}");
    let source_of = |provider: &str| list.iter().find(|r| r["provider"] == provider).map(|r| r["source"].clone());
    assert_eq!(source_of("openai"), Some(json!("byok")), "their own key, BYOK first");
    assert_eq!(source_of("anthropic"), Some(json!("internal")), "no Anthropic key: credits");
    // The same figure /v1/estimate gives for the same model and size.
    let first = &list[0];
    let (_, estimate) = post(
        &http,
        sidecar.url("/v1/estimate"),
        Some(&access),
        json!({"provider": first["provider"], "model": first["model"], "prompt_tokens": advice["prompt_tokens"], "max_output_tokens": 300}),
    )
    .await;
    assert_eq!(estimate["estimated_cost_cents"], first["estimated_cost_cents"], "{estimate}");

    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let (status, renewed) =
        post(&http, sidecar.url("/v1/auth/refresh"), None, json!({"refresh_token": refresh_token})).await;
    assert_eq!(status, 200, "{renewed}");
    let (status, _) = get(&http, sidecar.url("/v1/account"), renewed["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let new_refresh = renewed["refresh_token"].as_str().unwrap();
    let response =
        http.post(sidecar.url("/v1/auth/logout")).json(&json!({"refresh_token": new_refresh})).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let (status, body) =
        post(&http, sidecar.url("/v1/auth/refresh"), None, json!({"refresh_token": new_refresh})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")), "logged out: {body}");
    sidecar.stop().await;
}

/// Creates a notification for `recipient` as admin, as the sidecar's incidents do.
async fn notify(instance: &Instance, http: &reqwest::Client, recipient: &str, subject: &str) -> u64 {
    let response = http
        .post(instance.directus("/notifications"))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .json(&json!({"recipient": recipient, "subject": subject, "message": "See https://example.com/help."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["data"]["id"].as_u64().unwrap()
}

#[tokio::test]
async fn users_read_only_their_own_notifications_and_mark_them_read() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let sidecar = Sidecar::start(&instance, &[]).await;
    let (ann, ann_token) = instance.new_user(&http, "premium", "0").await;
    let (bob, _) = instance.new_user(&http, "free", "0").await;
    let for_ann = notify(&instance, &http, &ann, "For Ann").await;
    let for_bob = notify(&instance, &http, &bob, "For Bob").await;

    let (status, body) = get(&http, sidecar.url("/v1/notifications"), &ann_token).await;
    assert_eq!(status, 200, "{body}");
    let list = body["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(
        (list[0]["id"].as_u64(), list[0]["subject"].as_str(), list[0]["read"].as_bool()),
        (Some(for_ann), Some("For Ann"), Some(false))
    );
    assert_eq!(list[0]["message"], "See https://example.com/help.");

    let (status, body) =
        post(&http, sidecar.url(&format!("/v1/notifications/{for_bob}/read")), Some(&ann_token), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("notification_not_found")), "{body}");
    let bobs = instance.admin_get(&http, &format!("/notifications/{for_bob}"), &[]).await;
    assert_eq!(bobs["status"], "inbox", "another user's notification is untouched");

    let (status, body) =
        post(&http, sidecar.url(&format!("/v1/notifications/{for_ann}/read")), Some(&ann_token), json!({})).await;
    assert_eq!((status, body), (200, json!({"id": for_ann, "read": true})));
    let (_, body) = get(&http, sidecar.url("/v1/notifications"), &ann_token).await;
    assert_eq!(body["notifications"][0]["read"], true);

    let (status, _) = post(&http, sidecar.url("/v1/notifications/abc/read"), Some(&ann_token), json!({})).await;
    assert_eq!(status, 404);
    let response = http.get(sidecar.url("/v1/notifications")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    sidecar.stop().await;
}

#[tokio::test]
async fn status_is_public_and_turns_a_provider_outage_into_a_banner() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let providers = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .mount(&providers)
        .await;
    let extra = [("CIRCUIT_FAILURE_THRESHOLD", "1"), ("UPSTREAM_DEADLINE_SECS", "1")];
    let sidecar = gateway_sidecar(&instance, &providers, &extra).await;
    let status = || async { sidecar.get(&http, "/v1/status", None).await.1 };
    let before = status().await;
    assert_eq!(before["ai_available"], true, "{before}");
    assert!(before["banner"].is_null(), "{before}");
    assert_eq!(before["account_service"], "operational");

    let (_, token) = instance.new_user(&http, "free", "100").await;
    let response = http
        .post(sidecar.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    let after = status().await;
    let openai_status = &after["providers"][0];
    assert_eq!(
        (openai_status["provider"].as_str(), openai_status["status"].as_str()),
        (Some("openai"), Some("down")),
        "{after}"
    );
    assert!(openai_status["retry_after_secs"].as_u64().unwrap() >= 1);
    assert_eq!(after["providers"][1]["status"], "operational", "per provider");
    assert_eq!(after["ai_available"], true, "Anthropic still works");
    assert!(after["banner"].as_str().unwrap().starts_with("OpenAI is temporarily unavailable"), "{after}");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_real_binary_serves_an_openapi_document_that_validates() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let sidecar = Sidecar::start(&instance, &[]).await;
    let (_, document) = sidecar.get(&http, "/openapi.json", None).await;
    assert_eq!(document["openapi"], "3.1.0");

    let file = format!("{}/openapi.json", instance.dir);
    std::fs::write(&file, document.to_string()).unwrap();
    let python = std::env::var("BYOK_E2E_PYTHON").expect("BYOK_E2E_PYTHON: the venv with openapi-spec-validator");
    let validated = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1])))",
            &file,
        ])
        .output()
        .unwrap();
    assert!(validated.status.success(), "{}", String::from_utf8_lossy(&validated.stderr));

    // tests/api/account.rs checks that it lists exactly the routes the router serves.
    assert!(document["paths"].as_object().unwrap().len() >= 20, "{document}");
    sidecar.stop().await;
}
