use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_even_before_directus_does() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn readyz_is_503_until_flags_load_then_ready() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "flags_not_loaded");

    mount_flags(&app.directus, true, false, false).await;
    app.wait_until_ready("ready").await;
}

#[tokio::test]
async fn directus_down_keeps_serving_the_last_known_flags_and_readyz_says_degraded() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, true, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { keys: &[("openai", "active")], ..Default::default() }).await;
    assert_eq!(app.route(&token_for(&user), "openai").await.status(), 200);

    // Directus goes down; a flag webhook forces a reload, which fails.
    app.directus.reset().await;
    Mock::given(method("GET"))
        .and(path("/items/feature_flags"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.directus)
        .await;
    let webhook = app.flag_webhook().await;
    assert_eq!(webhook.status(), 503, "the hook must retry a delivery that could not be applied");

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["reason"], "directus_unreachable");

    // The caller is still cached from the first request; the decision uses the stale BYOK-only flags.
    let routed: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(routed["source"], "byok");
    assert_eq!(routed["mode"], "byok_only");
    assert_eq!(routed["flags_stale"], true);

    // Directus comes back: the next webhook restores fresh flags.
    app.directus.reset().await;
    mount_flags(&app.directus, true, false, false).await;
    assert_eq!(app.flag_webhook().await.status(), 200);
    app.wait_until_ready("ready").await;
}
