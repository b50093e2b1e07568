use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn operators_see_the_flags_in_force_with_the_operator_token() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, true, false).await;
    app.wait_until_ready("ready").await;
    let response = app.http.get(app.url("/v1/flags")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["flags"]["byok_only_mode"], true);
    assert_eq!(body["mode"], "byok_only");
    assert_eq!(body["stale"], false);
    assert_eq!(body["ttl_secs"], 300);
    let loaded_at = body["loaded_at"].as_str().unwrap();
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    assert!(time::OffsetDateTime::parse(loaded_at, rfc3339).is_ok(), "{loaded_at} is RFC 3339");
}

#[tokio::test]
async fn user_tokens_the_directus_token_and_wrong_tokens_cannot_read_flags() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let tokens = [token_for(&new_user_id()), SERVICE_TOKEN.to_owned(), format!("{OPERATOR_TOKEN}x"), String::new()];
    for token in tokens {
        let response = app.http.get(app.url("/v1/flags")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(error_code(response).await, "unauthorized");
    }
}

#[tokio::test]
async fn without_an_operator_token_operator_endpoints_do_not_exist() {
    let app = spawn_app_with(&[("OPERATOR_TOKEN", "")]).await;
    mount_flags(&app.directus, true, false, false).await;
    for token in [OPERATOR_TOKEN, SERVICE_TOKEN] {
        let response = app.http.get(app.url("/v1/flags")).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(error_code(response).await, "not_found");
    }
}

#[tokio::test]
async fn flags_changed_without_a_webhook_are_found_by_the_periodic_check() {
    let app = spawn_app_with(&[("FLAG_POLL_SECS", "1")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    app.wait_until_ready("ready").await;
    assert_eq!(app.route(&token_for(&user), "openai").await.status(), 200);

    // As after `UPDATE feature_flags ...` in SQL: Directus answers differently, and no webhook comes.
    mount_flags(&app.directus, true, true, false).await;
    let mut status = 200;
    for _ in 0..60 {
        status = app.route(&token_for(&user), "openai").await.status().as_u16();
        if status == 403 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 403, "the check (every second here) put byok_only_mode in force within 3 s");
}

#[tokio::test]
async fn an_operator_reloads_the_flags_at_once() {
    let app = spawn_app_with(&[("FLAG_POLL_SECS", "0")]).await;
    mount_flags(&app.directus, true, false, false).await;
    app.wait_until_ready("ready").await;
    mount_flags(&app.directus, true, true, false).await;
    let unauthorized = app.http.post(app.url("/v1/flags/reload")).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    let response = app.http.post(app.url("/v1/flags/reload")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["flags"]["byok_only_mode"], true, "{body}");
}

#[tokio::test]
async fn the_flag_polls_keep_the_cache_fresh_so_no_request_waits_for_a_slow_directus() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let app = spawn_app_with(&[("FLAG_CACHE_TTL_SECS", "3"), ("FLAG_POLL_SECS", "1")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    assert_eq!(app.route(&token_for(&user), "openai").await.status(), 200);
    // Directus answers the flags slowly from now on; the polls (one a second) still confirm them in time.
    Mock::given(method("GET"))
        .and(path("/items/feature_flags"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(flag_rows(true, false, false))
                .set_delay(std::time::Duration::from_millis(800)),
        )
        .with_priority(1)
        .mount(&app.directus)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_millis(400), "waited {:?}", started.elapsed());
        assert_eq!(body["flags_stale"], false);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
