//! `/metrics`: Prometheus text with the metrics operators need, no secret or user id in it, and optionally on
//! a listener of its own.

use std::collections::HashSet;

use byok_bridge::config::Settings;
use byok_bridge::startup::Application;
use wiremock::ResponseTemplate;

use crate::gateway::{CHAT_OK, INTERNAL_OPENAI, chat, free_user, gateway_app, hello, openai_answers};
use crate::helpers::*;

/// Checks the Prometheus text exposition format line by line and returns the metric names it holds.
fn parse_prometheus(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(comment.starts_with(" HELP ") || comment.starts_with(" TYPE "), "bad comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "bad value: {line}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "bad labels: {line}");
        }
        names.insert(name.to_owned());
    }
    names
}

#[tokio::test]
async fn metrics_cover_requests_upstream_flags_outbox_holds_and_limits() {
    let app = gateway_app(&[("RATE_LIMIT_FREE_PER_MIN", "1")]).await;
    let user = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    assert_eq!(chat(&app, &user, hello(false)).await.status(), 200);
    assert_eq!(chat(&app, &user, hello(false)).await.status(), 429, "the tier limit");
    wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    app.flag_webhook().await;

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "no auth by default");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let names = parse_prometheus(&text);
    for name in [
        "byok_http_requests_total",
        "byok_http_request_duration_seconds_bucket",
        "byok_gateway_calls_total",
        "byok_upstream_duration_seconds_bucket",
        "byok_circuit_open",
        "byok_rate_limit_refusals_total",
        "byok_flag_reload_duration_seconds_bucket",
        "byok_flags_age_seconds",
        "byok_webhook_lag_seconds_bucket",
        "byok_outbox_waiting_records",
        "byok_outbox_oldest_record_age_seconds",
        "byok_flusher_delivered_total",
        "byok_flusher_lag_seconds_bucket",
        "byok_credit_holds_open",
    ] {
        assert!(names.contains(name), "{name} missing from /metrics");
    }
    assert!(text.contains(r#"byok_gateway_calls_total{provider="openai",source="internal",code="ok"}"#), "{text}");
    assert!(text.contains(r#"code="rate_limited""#));
    assert!(text.contains(r#"route="/v1/chat/completions""#), "route templates, not raw paths");
    for secret in [user.as_str(), INTERNAL_OPENAI, SERVICE_TOKEN, OPERATOR_TOKEN] {
        assert!(!text.contains(secret), "a user id or secret in /metrics");
    }
}

#[tokio::test]
async fn metrics_addr_moves_metrics_off_the_public_port() {
    let directus = wiremock::MockServer::start().await;
    let vars = test_env(&directus.uri(), &[("METRICS_ADDR", "127.0.0.1:0")]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let app = Application::build(settings).await.unwrap();
    let (api, metrics) = (app.local_addr(), app.metrics_addr().expect("a metrics listener"));
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let http = reqwest::Client::new();
    let public = http.get(format!("http://{api}/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let private = http.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(private.status(), 200);
    parse_prometheus(&private.text().await.unwrap());
}
