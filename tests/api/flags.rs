use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn operators_see_the_flags_in_force_with_the_service_token() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, true, false).await;
    app.wait_until_ready("ready").await;
    let response = app.http.get(app.url("/v1/flags")).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
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
async fn user_tokens_and_wrong_tokens_cannot_read_flags() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    for token in [token_for(&new_user_id()), format!("{SERVICE_TOKEN}x"), String::new()] {
        let response = app.http.get(app.url("/v1/flags")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(error_code(response).await, "unauthorized");
    }
}
