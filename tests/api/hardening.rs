//! The gateway against abuse and bad luck: slow generations, a provider coming back, huge or tricky bodies,
//! clients that stop reading, logged-out sessions, and per-user limits on what costs the platform.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::gateway::{CHAT_OK, byok_user, chat, free_user, gateway_app, hello, openai_answers};
use crate::helpers::*;

fn ok_after(delay: Duration) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json").set_delay(delay)
}

#[tokio::test]
async fn a_generation_longer_than_the_provider_timeout_is_served_and_opens_no_circuit() {
    let app = gateway_app(&[("PROVIDER_TIMEOUT_SECS", "1"), ("CIRCUIT_FAILURE_THRESHOLD", "1")]).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ok_after(Duration::from_millis(1_500))).mount(&app.providers).await;
    for _ in 0..2 {
        let response = chat(&app, &user, hello(false)).await;
        assert_eq!(response.status(), 200, "non-streaming answers come only when generation is done");
    }
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 2, "each went through, none retried");
}

#[tokio::test]
async fn a_generation_timeout_is_the_callers_alone_and_is_not_retried() {
    let app = gateway_app(&[("PROVIDER_GENERATION_TIMEOUT_SECS", "1"), ("CIRCUIT_FAILURE_THRESHOLD", "1")]).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ok_after(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.providers)
        .await;
    openai_answers(OPENAI_KEY, ok_after(Duration::ZERO)).mount(&app.providers).await;

    let slow = chat(&app, &user, hello(false)).await;
    assert_eq!(slow.status(), 504);
    assert_eq!(error_code(slow).await, "ai_timeout");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 1, "a long generation is not started again");
    let next = chat(&app, &user, hello(false)).await;
    assert_eq!(next.status(), 200, "one slow request opened no circuit, even at a threshold of one");
}

#[tokio::test]
async fn after_the_cool_down_a_single_probe_reaches_the_provider() {
    let config = [("CIRCUIT_FAILURE_THRESHOLD", "1"), ("CIRCUIT_COOL_DOWN_SECS", "1"), ("UPSTREAM_DEADLINE_SECS", "1")];
    let app = gateway_app(&config).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.providers)
        .await;
    openai_answers(OPENAI_KEY, ok_after(Duration::from_millis(500))).mount(&app.providers).await;
    assert_eq!(chat(&app, &user, hello(false)).await.status(), 503, "the outage opens the circuit");
    // The cool-down is a fixed time on the clock the sidecar reads; this waits it out.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let calls: Vec<_> = (0..10).map(|_| chat(&app, &user, hello(false))).collect();
    let statuses: Vec<u16> = futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 9, "the rest fail fast: {statuses:?}");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 2, "the outage, then the one probe");
    assert_eq!(chat(&app, &user, hello(false)).await.status(), 200, "the probe closed the circuit");
}

#[tokio::test]
async fn bodies_are_bounded_by_size_and_by_shape() {
    let app = gateway_app(&[("MAX_LLM_BODY_BYTES", "65536")]).await;
    let user = free_user(&app).await;
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    let response = chat(&app, &user, big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "payload_too_large");

    let mut wide = serde_json::Map::new();
    wide.insert("model".into(), json!("gpt-4o-mini"));
    for i in 0..200 {
        wide.insert(format!("x{i}"), json!(0));
    }
    let response = chat(&app, &user, Value::Object(wide)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_request");

    let twice = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token_for(&user))
        .header("content-type", "application/json")
        .body(r#"{"model": "gpt-4o-mini", "messages": [], "model": "o1-pro"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400, "the provider might read the other copy");
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_body_of_a_million_tiny_values_is_forwarded_without_being_built() {
    let app = gateway_app(&[]).await;
    let user = free_user(&app).await;
    openai_answers(crate::gateway::INTERNAL_OPENAI, ok_after(Duration::ZERO)).mount(&app.providers).await;
    let mut body = String::from(
        r#"{"model": "gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "metadata": {"x": ["#,
    );
    body.push_str(&"[],".repeat(1_000_000));
    body.push_str("[]]}}");
    let response = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token_for(&user))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let forwarded = &app.providers.received_requests().await.unwrap()[0];
    assert_eq!(forwarded.body, body.as_bytes(), "passed on byte for byte");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_loses_its_connection_and_frees_its_upstream_slot() {
    let config = [("MAX_UPSTREAM_CALLS", "1"), ("UPSTREAM_SLOT_WAIT_SECS", "1"), ("CLIENT_WRITE_TIMEOUT_SECS", "3")];
    let app = gateway_app(&config).await;
    let user = byok_user(&app, false).await;
    let event =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"0123456789012345678901234567890123456789\"}}]}\n\n";
    let sse = event.repeat(32 * 1024 * 1024 / event.len());
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
        .mount(&app.providers)
        .await;

    // A client that sends its request, reads the first bytes of the answer, and then never reads again.
    let body = hello(true).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        token_for(&user),
        body.len()
    );
    let mut stalled = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let read = stalled.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..read]).starts_with("HTTP/1.1 200"));

    let busy = chat(&app, &user, hello(false)).await;
    assert_eq!(busy.status(), 503, "the one slot is taken: a bounded wait, then a clear refusal");
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(error_code(busy).await, "gateway_busy");

    let mut served = false;
    for _ in 0..20 {
        if chat(&app, &user, hello(false)).await.status() == 200 {
            served = true;
            break;
        }
    }
    assert!(served, "the stalled client's slot was freed");
    // Its connection was closed: what is still buffered drains, then the socket ends.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = vec![0u8; 1 << 20];
        while let Ok(n) = stalled.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection ended");
}

fn session_token(user: &str, session: &str) -> String {
    let mut claims = claims_for(user);
    claims["session"] = json!(session);
    token_with(&claims, jsonwebtoken::Algorithm::HS256, DIRECTUS_SECRET)
}

#[tokio::test]
async fn session_tokens_of_ended_sessions_are_refused_and_live_ones_checked_once_per_ttl() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    let (live, ended) = (session_token(&user, "session-live"), session_token(&user, "session-ended"));
    for (token, status) in [(&live, 200), (&ended, 401)] {
        Mock::given(method("GET"))
            .and(path("/users/me"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({"data": {"id": user}})))
            .mount(&app.directus)
            .await;
    }
    for _ in 0..3 {
        assert_eq!(app.route(&live, "openai").await.status(), 200);
        let refused = app.route(&ended, "openai").await;
        assert_eq!(refused.status(), 401);
        assert_eq!(error_code(refused).await, "unauthorized");
    }
    assert_eq!(app.directus_hits("/users/me").await, 2, "one check per session, then cached");
    assert_eq!(app.route(&token_for(&user), "openai").await.status(), 200, "tokens without a session need no check");
    assert_eq!(app.directus_hits("/users/me").await, 2);
}

#[tokio::test]
async fn usage_reads_are_limited_per_user() {
    let app = spawn_app_with(&[("RATE_LIMIT_USAGE_READS_PER_MIN", "2")]).await;
    for collection in ["/items/api_key_usage", "/items/credit_transactions"] {
        Mock::given(method("GET"))
            .and(path(collection))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
            .mount(&app.directus)
            .await;
    }
    let (user, other) = (new_user_id(), new_user_id());
    let usage = |user: &str| app.http.get(app.url("/v1/usage")).bearer_auth(token_for(user)).send();
    for _ in 0..2 {
        assert_eq!(usage(&user).await.unwrap().status(), 200);
    }
    let limited = usage(&user).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_code(limited).await, "rate_limited");
    assert_eq!(usage(&other).await.unwrap().status(), 200, "per user");
}

/// The Flows credential acts for the user it names, on the routing decision and the gateway only.
#[tokio::test]
async fn the_flows_credential_acts_for_a_named_user_on_the_flow_routes_only() {
    let flows = "flows-token-for-tests-0123456789abcdef";
    let app = spawn_app_with(&[("FLOWS_TOKEN", flows)]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    let route = |on_behalf: Option<&str>| {
        let mut request =
            app.http.post(app.url("/v1/route")).bearer_auth(flows).json(&serde_json::json!({"provider": "openai"}));
        if let Some(user) = on_behalf {
            request = request.header("x-byok-on-behalf-of", user);
        }
        request.send()
    };
    let response = route(Some(&user)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["source"], "internal");
    let response = route(None).await.unwrap();
    assert_eq!(response.status(), 400, "a Flow names its user");
    assert_eq!(route(Some("not-a-uuid")).await.unwrap().status(), 400);
    for (method, path) in
        [("GET", "/v1/keys"), ("GET", "/v1/account"), ("GET", "/v1/notifications"), ("GET", "/v1/flags")]
    {
        let request = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(flows)
            .header("x-byok-on-behalf-of", &user);
        assert_eq!(request.send().await.unwrap().status(), 401, "{path}: not a Flows route");
    }
}

#[tokio::test]
async fn a_live_sessions_next_check_runs_beside_its_request_and_a_logout_still_takes_effect() {
    let app = spawn_app_with(&[("SESSION_CHECK_TTL_SECS", "1")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    let token = session_token(&user, "session-soon-ended");
    Mock::given(method("GET"))
        .and(path("/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"id": user}})))
        .mount(&app.directus)
        .await;
    assert_eq!(app.route(&token, "openai").await.status(), 200);

    // The user logs out, and Directus is slow to say so.
    Mock::given(method("GET"))
        .and(path("/users/me"))
        .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(1_500)))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let started = std::time::Instant::now();
    assert_eq!(app.route(&token, "openai").await.status(), 200, "confirmed a moment ago: not kept waiting");
    assert!(started.elapsed() < Duration::from_millis(500), "waited {:?}", started.elapsed());
    let mut refused = false;
    for _ in 0..100 {
        if app.route(&token, "openai").await.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "once Directus has answered, the ended session is refused");
}
