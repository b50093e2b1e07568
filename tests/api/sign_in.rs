//! Sign-in through the sidecar, throttled per account and per client address so that it can never be how
//! Directus comes to suspend an account (Directus suspends after `auth_login_attempts` attempts in a row).

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

/// Directus refusing every password.
async fn wrong_passwords_everywhere(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/auth/login"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errors": [{"message": "Invalid user credentials.", "extensions": {"code": "INVALID_CREDENTIALS"}}]}),
        ))
        .mount(&app.directus)
        .await;
}

async fn sign_in(app: &TestApp, email: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.http.post(app.url("/v1/auth/login"));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request.json(&json!({"email": email, "password": "not-the-password"})).send().await.unwrap()
}

async fn attempts_at_directus(app: &TestApp) -> usize {
    app.directus_hits("/auth/login").await
}

#[tokio::test]
async fn thirty_wrong_passwords_reach_directus_only_a_few_times_then_wait() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", "1000")]).await;
    wrong_passwords_everywhere(&app).await;
    let mut refused = 0;
    for _ in 0..30 {
        let response = sign_in(&app, "pat@example.com", None).await;
        match response.status().as_u16() {
            401 => {}
            429 => {
                let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=10).contains(&wait), "{wait}");
                assert_eq!(error_code(response).await, "too_many_sign_in_attempts");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(attempts_at_directus(&app).await, 3, "three in a row, then they are spaced out");
    assert_eq!(refused, 27);
    // The same account however it is spelled; another account has its own attempts.
    assert_eq!(sign_in(&app, " PAT@example.COM", None).await.status(), 429);
    assert_eq!(sign_in(&app, "sam@example.com", None).await.status(), 401);
}

#[tokio::test]
async fn a_successful_sign_in_reported_by_the_hook_forgets_the_accounts_attempts() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", "1000")]).await;
    wrong_passwords_everywhere(&app).await;
    for _ in 0..3 {
        assert_eq!(sign_in(&app, "pat@example.com", None).await.status(), 401);
    }
    assert_eq!(sign_in(&app, "pat@example.com", None).await.status(), 429);
    // Pat signs in to Directus directly: the hook says so, Directus and the sidecar both forget the count.
    let body = json!({"type": "auth.login", "timestamp": "2026-12-04T00:00:00Z", "data": {"email": "Pat@Example.com"}});
    let id = format!("msg_{}", uuid::Uuid::new_v4());
    let answer = app.webhook_at(&id, now(), &body.to_string()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["status"], "applied");
    assert_eq!(sign_in(&app, "pat@example.com", None).await.status(), 401, "let through again");
    // An unsigned claim of a sign-in changes nothing.
    let forged = app
        .http
        .post(app.url("/webhooks/directus"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}

#[tokio::test]
async fn attempts_are_limited_per_client_address_and_forwarded_for_counts_only_from_trusted_proxies() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", "4")]).await;
    wrong_passwords_everywhere(&app).await;
    for n in 0..4 {
        // A fresh X-Forwarded-For on each: ignored, the socket's address is the client.
        let spoofed = format!("198.51.100.{n}");
        assert_eq!(sign_in(&app, &format!("user{n}@example.com"), Some(&spoofed)).await.status(), 401);
    }
    let refused = sign_in(&app, "user9@example.com", Some("198.51.100.99")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "too_many_sign_in_attempts");

    // Behind a trusted proxy (here, this machine), the address it forwards is the client.
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", "4"), ("TRUSTED_PROXIES", "127.0.0.1")]).await;
    wrong_passwords_everywhere(&app).await;
    for n in 0..4 {
        assert_eq!(sign_in(&app, &format!("user{n}@example.com"), Some("203.0.113.1")).await.status(), 401);
    }
    assert_eq!(sign_in(&app, "user5@example.com", Some("203.0.113.1")).await.status(), 429);
    assert_eq!(sign_in(&app, "user6@example.com", Some("203.0.113.2")).await.status(), 401, "another client");
}

#[tokio::test]
async fn an_operator_can_clear_an_accounts_sign_in_attempts() {
    let app = spawn_app_with(&[("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", "1000")]).await;
    wrong_passwords_everywhere(&app).await;
    for _ in 0..3 {
        assert_eq!(sign_in(&app, "pat@example.com", None).await.status(), 401);
    }
    assert_eq!(sign_in(&app, "pat@example.com", None).await.status(), 429);
    let unlock = |token: &str| {
        app.http
            .post(app.url("/v1/admin/sign-in/unlock"))
            .bearer_auth(token)
            .json(&json!({"email": "pat@example.com"}))
            .send()
    };
    assert_eq!(unlock(&token_for(&new_user_id())).await.unwrap().status(), 401, "a user may not");
    assert_eq!(unlock(OPERATOR_TOKEN).await.unwrap().status(), 204);
    assert_eq!(sign_in(&app, "pat@example.com", None).await.status(), 401, "let through again");
}
