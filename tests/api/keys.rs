use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::helpers::*;

/// A premium user with no stored key yet; Directus answers the save with the row it was given.
async fn premium_without_keys(app: &TestApp) -> String {
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    Mock::given(method("POST"))
        .and(path("/items/user_api_keys"))
        .respond_with(|req: &Request| {
            let mut row: Value = serde_json::from_slice(&req.body).unwrap();
            row["id"] = json!("0b6a3f2e-0000-4000-8000-000000000001");
            row.as_object_mut().unwrap().remove("encrypted_key");
            ResponseTemplate::new(200).set_body_json(json!({"data": row}))
        })
        .mount(&app.directus)
        .await;
    user
}

async fn provider_answers(app: &TestApp, provider_path: &str, response: ResponseTemplate) {
    Mock::given(method("GET")).and(path(provider_path)).respond_with(response).mount(&app.providers).await;
}

async fn put_key(app: &TestApp, user: &str, provider: &str, key: &str) -> reqwest::Response {
    app.http
        .put(app.url(&format!("/v1/keys/{provider}")))
        .bearer_auth(token_for(user))
        .json(&json!({"api_key": key}))
        .send()
        .await
        .unwrap()
}

/// The body the sidecar wrote to Directus for the key row.
async fn written_row(app: &TestApp) -> Value {
    let requests = app.directus.received_requests().await.unwrap();
    let write = requests
        .iter()
        .rev()
        .find(|r| r.url.path().starts_with("/items/user_api_keys") && matches!(r.method.as_str(), "POST" | "PATCH"))
        .expect("a key row was written");
    serde_json::from_slice(&write.body).unwrap()
}

#[tokio::test]
async fn a_valid_key_is_checked_with_the_provider_and_stored_only_as_ciphertext() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .expect(1)
        .mount(&app.providers)
        .await;

    let response = put_key(&app, &user, "openai", OPENAI_KEY).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(OPENAI_KEY) && !text.contains("byok:v1"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((body["status"].as_str(), body["hint"].as_str()), (Some("active"), Some("sk-proj-...AbCd")));

    let row = written_row(&app).await;
    let envelope = row["encrypted_key"].as_str().unwrap();
    assert!(!row.to_string().contains(OPENAI_KEY), "plaintext reached Directus: {row}");
    assert_eq!(row["user"], user.as_str());
    assert_eq!(row["provider"], "openai");
    assert!(row["last_validated_at"].is_string());
    let opened = test_keyring().open(owner(&user, "openai"), envelope).unwrap();
    assert_eq!(opened.as_slice(), OPENAI_KEY.as_bytes());
    assert!(test_keyring().open(owner(&new_user_id(), "openai"), envelope).is_err(), "bound to its owner");
}

#[tokio::test]
async fn anthropic_keys_are_checked_with_x_api_key_and_a_version_header() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("x-api-key", ANTHROPIC_KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .expect(1)
        .mount(&app.providers)
        .await;
    let response = put_key(&app, &user, "anthropic", ANTHROPIC_KEY).await;
    assert_eq!(response.status(), 200);
    assert_eq!(written_row(&app).await["status"], "active");
}

#[tokio::test]
async fn a_key_the_provider_refuses_is_not_stored_and_the_user_is_told_where_to_get_one() {
    for status in [401, 403] {
        let app = spawn_app().await;
        let user = premium_without_keys(&app).await;
        let body = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}});
        provider_answers(&app, "/v1/models", ResponseTemplate::new(status).set_body_json(body)).await;
        let response = put_key(&app, &user, "openai", OPENAI_KEY).await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "key_rejected");
        assert!(body["error"]["message"].as_str().unwrap().contains("https://platform.openai.com/api-keys"));
        let writes = app.directus.received_requests().await.unwrap();
        assert!(writes.iter().all(|r| r.method.as_str() == "GET"), "nothing written for a {status}");
    }
}

#[tokio::test]
async fn provider_trouble_does_not_lose_the_key_it_is_stored_unverified() {
    let cases = [
        ("500", ResponseTemplate::new(500), "unverified"),
        (
            "429",
            ResponseTemplate::new(429).set_body_json(json!({"error": {"code": "rate_limit_exceeded"}})),
            "unverified",
        ),
        ("timeout", ResponseTemplate::new(200).set_delay(Duration::from_secs(3)), "unverified"),
        (
            "insufficient_quota",
            ResponseTemplate::new(429)
                .set_body_json(json!({"error": {"type": "insufficient_quota", "code": "insufficient_quota"}})),
            "quota_exceeded",
        ),
    ];
    for (name, response, expected) in cases {
        let app = spawn_app_with(&[("PROVIDER_TIMEOUT_SECS", "1")]).await;
        let user = premium_without_keys(&app).await;
        provider_answers(&app, "/v1/models", response).await;
        let answer = put_key(&app, &user, "openai", OPENAI_KEY).await;
        assert_eq!(answer.status(), 200, "{name}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], expected, "{name}");
        assert!(body["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{name}");
        let row = written_row(&app).await;
        assert_eq!(row["status"], expected, "{name}");
        let opened = test_keyring().open(owner(&user, "openai"), row["encrypted_key"].as_str().unwrap()).unwrap();
        assert_eq!(opened.as_slice(), OPENAI_KEY.as_bytes(), "{name}: the key is kept");
    }
}

#[tokio::test]
async fn malformed_keys_are_refused_before_any_provider_call() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    for (provider, key) in [
        ("openai", "not-a-key"),
        ("openai", ANTHROPIC_KEY),
        ("anthropic", OPENAI_KEY),
        ("openai", "sk-proj-has spaces in it 0123456789"),
    ] {
        let response = put_key(&app, &user, provider, key).await;
        assert_eq!(response.status(), 422, "{key}");
        let text = response.text().await.unwrap();
        assert!(text.contains("invalid_key_format") && !text.contains(key), "{text}");
    }
    let wrong_shape = app
        .http
        .put(app.url("/v1/keys/openai"))
        .bearer_auth(token_for(&user))
        .json(&json!({"api_key": OPENAI_KEY, "user": new_user_id()}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_shape.status(), 422, "no field can name another user");
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn only_entitled_users_may_manage_keys() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let free = new_user_id();
    mount_user(&app.directus, &free, FakeUser { tier: "free", ..Default::default() }).await;
    let response = put_key(&app, &free, "openai", OPENAI_KEY).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "premium_required");
    assert!(body["error"]["message"].as_str().unwrap().contains("premium"));

    mount_flags(&app.directus, false, false, false).await;
    assert_eq!(app.flag_webhook().await.status(), 200);
    let premium = new_user_id();
    mount_user(&app.directus, &premium, FakeUser::default()).await;
    let response = app.http.get(app.url("/v1/keys")).bearer_auth(token_for(&premium)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "byok_disabled");
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn without_an_encryption_key_saving_reports_not_configured() {
    let app = spawn_app_with(&[("ENCRYPTION_KEY", "")]).await;
    let user = premium_without_keys(&app).await;
    let response = put_key(&app, &user, "openai", OPENAI_KEY).await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "byok_not_configured");
}

#[tokio::test]
async fn listing_shows_masked_keys_and_never_asks_directus_for_ciphertext() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("fields", "id,provider,key_hint,is_active,status,last_validated_at,last_error"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": "a", "provider": "openai", "key_hint": "sk-proj-...AbCd", "is_active": true, "status": "invalid",
             "last_validated_at": "2026-11-20T10:00:00Z", "last_error": "OpenAI rejected this key."}
        ]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    let response = app.http.get(app.url("/v1/keys")).bearer_auth(token_for(&user)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["keys"],
        json!([{"provider": "openai", "hint": "sk-proj-...AbCd", "is_active": true, "status": "invalid",
                "last_validated_at": "2026-11-20T10:00:00Z", "last_error": "OpenAI rejected this key."}])
    );
}

#[tokio::test]
async fn deleting_removes_the_rows_and_a_missing_key_is_a_404() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("filter[provider][_eq]", "openai"))
        .and(query_param("fields", "id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": "row-1"}, {"id": "row-2"}]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/items/user_api_keys"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&app.directus)
        .await;
    let delete = |provider: &'static str| {
        app.http.delete(app.url(&format!("/v1/keys/{provider}"))).bearer_auth(token_for(&user)).send()
    };
    assert_eq!(delete("openai").await.unwrap().status(), 204);
    let deleted = app.directus.received_requests().await.unwrap();
    let body: Value =
        serde_json::from_slice(&deleted.iter().find(|r| r.method.as_str() == "DELETE").unwrap().body).unwrap();
    assert_eq!(body, json!(["row-1", "row-2"]));
    let missing = delete("anthropic").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "key_not_found");
}

#[tokio::test]
async fn verify_rechecks_the_stored_key_with_the_provider() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    mount_sealed_row(&app, &user, &test_keyring().seal(owner(&user, "openai"), OPENAI_KEY.as_bytes())).await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&app.providers)
        .await;
    let response = app.http.post(app.url("/v1/keys/openai/verify")).bearer_auth(token_for(&user)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "invalid");
    assert!(body["last_error"].as_str().unwrap().contains("platform.openai.com/api-keys"));
    assert!(written_row(&app).await.get("encrypted_key").is_none(), "verify never rewrites the ciphertext");
}

#[tokio::test]
async fn a_ciphertext_copied_from_another_user_is_unusable_and_marked_invalid() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    let someone_elses = test_keyring().seal(owner(&new_user_id(), "openai"), OPENAI_KEY.as_bytes());
    mount_sealed_row(&app, &user, &someone_elses).await;
    let response = app.http.post(app.url("/v1/keys/openai/verify")).bearer_auth(token_for(&user)).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let text = response.text().await.unwrap();
    assert!(text.contains("key_unusable") && text.contains("enter it again") && !text.contains("byok:v1"), "{text}");
    assert_eq!(written_row(&app).await["status"], "invalid");
    assert!(app.providers.received_requests().await.unwrap().is_empty(), "an unusable key is never sent upstream");
}

#[tokio::test]
async fn unknown_providers_in_the_path_are_404s() {
    let app = spawn_app().await;
    let user = premium_without_keys(&app).await;
    for target in ["/v1/keys/azure", "/v1/keys/OpenAI", "/v1/keys/%2e%2e", "/v1/keys/..%2Fflags"] {
        let response = app
            .http
            .put(app.url(target))
            .bearer_auth(token_for(&user))
            .json(&json!({"api_key": OPENAI_KEY}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{target}");
    }
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_saved_during_an_outage_are_checked_again_in_the_background() {
    let app = spawn_app_with(&[("KEY_REVERIFY_INTERVAL_SECS", "1")]).await;
    let user = premium_without_keys(&app).await;
    mount_sealed_row(&app, &user, &test_keyring().seal(owner(&user, "openai"), OPENAI_KEY.as_bytes())).await;
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("filter[status][_eq]", "unverified"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"user": user, "provider": "openai"}]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    provider_answers(&app, "/v1/models", ResponseTemplate::new(200).set_body_json(json!({"data": []}))).await;

    for _ in 0..100 {
        let requests = app.directus.received_requests().await.unwrap();
        if requests.iter().any(|r| r.method.as_str() == "PATCH") {
            assert_eq!(written_row(&app).await["status"], "active");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the unverified key was never checked again");
}

#[tokio::test]
async fn key_checks_are_limited_per_user_so_the_platform_is_no_key_tester() {
    let app = spawn_app_with(&[("RATE_LIMIT_KEY_CHECKS_PER_MIN", "2")]).await;
    let user = premium_without_keys(&app).await;
    provider_answers(&app, "/v1/models", ResponseTemplate::new(401)).await;
    for _ in 0..2 {
        assert_eq!(put_key(&app, &user, "openai", OPENAI_KEY).await.status(), 422, "refused by the provider");
    }
    let limited = put_key(&app, &user, "openai", OPENAI_KEY).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 2, "the third key was never tried");
}
