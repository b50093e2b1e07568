//! One user cannot hurt the others: a failing key opens its own circuit only, calls in flight and own-key calls
//! are capped per user, and every generation the provider bills is charged, also when the client has gone.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::gateway::{CHAT_OK, INTERNAL_OPENAI, byok_user, chat, free_user, gateway_app, hello, openai_answers};
use crate::helpers::*;

/// OpenAI's answer to a call that wrote `completion_tokens` tokens, after `delay`.
fn long_answer(completion_tokens: u64, delay: Duration) -> ResponseTemplate {
    let body = json!({"id": "chatcmpl-long", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": completion_tokens, "total_tokens": completion_tokens + 12}});
    ResponseTemplate::new(200).set_body_json(body).set_delay(delay)
}

#[tokio::test]
async fn one_users_failing_key_never_refuses_another_users_calls() {
    let app = gateway_app(&[("UPSTREAM_DEADLINE_SECS", "2")]).await;
    let premium = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(500)).mount(&app.providers).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    for _ in 0..8 {
        assert_eq!(chat(&app, &premium, hello(false)).await.status(), 503);
    }
    // The user's own key's circuit is open now: their next call fails fast, without asking OpenAI.
    let before = app.providers.received_requests().await.unwrap().len();
    assert_eq!(error_code(chat(&app, &premium, hello(false)).await).await, "ai_unavailable");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), before);

    let free = free_user(&app).await;
    let response = chat(&app, &free, hello(false)).await;
    assert_eq!(response.status(), 200, "a free user's credit call is not refused for someone else's key");
    let (_, status) = app.get("/v1/status", None).await;
    assert!(!status.to_string().contains("\"down\""), "one key's failures are no outage: {status}");
}

#[tokio::test]
async fn an_outage_seen_by_several_users_opens_the_platform_circuit_as_fast_as_ever() {
    let app = gateway_app(&[("UPSTREAM_DEADLINE_SECS", "2")]).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(503)).mount(&app.providers).await;
    let (ann, bob) = (free_user(&app).await, free_user(&app).await);
    // Four attempts a call (the retries): the fifth failure, with two users among them, opens the circuit.
    assert_eq!(chat(&app, &ann, hello(false)).await.status(), 503);
    assert_eq!(chat(&app, &bob, hello(false)).await.status(), 503);
    let asked = app.providers.received_requests().await.unwrap().len();
    assert!(asked <= 8, "{asked}");
    let carol = free_user(&app).await;
    let refused = chat(&app, &carol, hello(false)).await;
    assert_eq!(error_code(refused).await, "ai_unavailable");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), asked, "the open circuit fails fast");

    // One user alone keeps failing without opening it: each call still asks the provider.
    let app = gateway_app(&[("UPSTREAM_DEADLINE_SECS", "2")]).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(500)).mount(&app.providers).await;
    let dan = free_user(&app).await;
    for n in 1..=3 {
        assert_eq!(chat(&app, &dan, hello(false)).await.status(), 503);
        assert!(app.providers.received_requests().await.unwrap().len() >= n * 2, "call {n} reached OpenAI");
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_is_charged_for_the_answer_it_never_read() {
    let app = gateway_app(&[]).await;
    let free = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, long_answer(50_000, Duration::from_secs(2))).mount(&app.providers).await;
    let mut body = hello(false);
    body["model"] = json!("gpt-4o");
    body["max_tokens"] = json!(60_000);
    let impatient = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token_for(&free))
        .json(&body)
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(impatient.is_err(), "the client hung up before the answer came");
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["completion_tokens"], 50_000, "the answer was read and charged: {}", ledger[0]);
    assert_eq!(ledger[0]["transaction_type"], "deduction");
}

#[tokio::test]
async fn a_call_that_times_out_is_charged_its_whole_budget_not_nothing() {
    let app = gateway_app(&[("PROVIDER_GENERATION_TIMEOUT_SECS", "1")]).await;
    let free = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, long_answer(40, Duration::from_secs(3))).mount(&app.providers).await;
    let slow = chat(&app, &free, hello(false)).await;
    assert_eq!(slow.status(), 504);
    let message: Value = slow.json().await.unwrap();
    assert!(message["error"]["message"].as_str().unwrap().contains("charged its whole budget"), "{message}");
    let ledger = wait_for_requests(&app.directus, "POST", "/items/credit_transactions", 1).await;
    assert_eq!(ledger[0]["completion_tokens"], 50, "the request's max_tokens: {}", ledger[0]);
    assert!(ledger[0]["prompt_tokens"].as_u64().unwrap() > 0);

    // An own-key call's usage record says the same.
    let premium = byok_user(&app, true).await;
    openai_answers(OPENAI_KEY, long_answer(40, Duration::from_secs(3))).mount(&app.providers).await;
    assert_eq!(chat(&app, &premium, hello(false)).await.status(), 504);
    let usage = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 1).await;
    assert_eq!(usage[0]["completion_tokens"], 50, "{}", usage[0]);
}

#[tokio::test]
async fn priority_and_flex_processing_are_refused_on_credits_and_passed_on_with_own_keys() {
    let app = gateway_app(&[]).await;
    let free = free_user(&app).await;
    openai_answers(INTERNAL_OPENAI, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    for tier in ["priority", "flex", "scale"] {
        let mut body = hello(false);
        body["service_tier"] = json!(tier);
        let refused = chat(&app, &free, body).await;
        assert_eq!(refused.status(), 422, "{tier}");
        assert_eq!(error_code(refused).await, "service_tier_not_available");
    }
    assert!(app.providers.received_requests().await.unwrap().is_empty(), "nothing reached OpenAI");
    let mut standard = hello(false);
    standard["service_tier"] = json!("auto");
    assert_eq!(chat(&app, &free, standard).await.status(), 200);

    let premium = byok_user(&app, true).await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
        .and(wiremock::matchers::body_partial_json(json!({"service_tier": "priority"})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let mut priority = hello(false);
    priority["service_tier"] = json!("priority");
    assert_eq!(chat(&app, &premium, priority).await.status(), 200, "the user's own key pays the provider directly");
}

#[tokio::test]
async fn one_user_cannot_hold_more_calls_at_once_than_their_cap() {
    let app = gateway_app(&[("MAX_UPSTREAM_CALLS_PER_USER", "2")]).await;
    let premium = byok_user(&app, true).await;
    openai_answers(OPENAI_KEY, long_answer(3, Duration::from_millis(800))).mount(&app.providers).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..3).map(|_| chat(&app, &premium, hello(false))).collect();
    let answers = futures_util::future::join_all(calls).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429]);
    let refused = answers.into_iter().find(|r| r.status() == 429).unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "too_many_concurrent_calls");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Another user's calls go through meanwhile.
    let other = byok_user(&app, true).await;
    let mine: Vec<_> = (0..2).map(|_| chat(&app, &premium, hello(false))).collect();
    let (mine, theirs) = tokio::join!(futures_util::future::join_all(mine), chat(&app, &other, hello(false)));
    assert!(mine.iter().all(|r| r.status() == 200));
    assert_eq!(theirs.status(), 200);
}

#[tokio::test]
async fn own_key_calls_are_rate_limited_per_user_too() {
    let app = gateway_app(&[("RATE_LIMIT_BYOK_PREMIUM_PER_MIN", "3")]).await;
    let premium = byok_user(&app, true).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    for _ in 0..3 {
        assert_eq!(chat(&app, &premium, hello(false)).await.status(), 200);
    }
    let refused = chat(&app, &premium, hello(false)).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "rate_limited");
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 3);
    let other = byok_user(&app, true).await;
    assert_eq!(chat(&app, &other, hello(false)).await.status(), 200, "per user");
}

/// Opens a request to `path` as `user` that announces `length` bytes of body and sends `sent` of them: the
/// stream stays open (and the body unfinished) for as long as it is kept.
async fn stalled_request(app: &TestApp, user: &str, path: &str, length: usize, sent: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n",
        token_for(user)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream
}

/// Reads what the server sends until it closes the connection, within `within`.
async fn answer_and_close(mut stream: tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .expect("the server answered and closed the connection in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let app = gateway_app(&[("BODY_READ_GRACE_SECS", "1")]).await;
    let user = byok_user(&app, false).await;
    let started = Instant::now();
    let stalled = stalled_request(&app, &user, "/v1/chat/completions", 100_000, 10).await;
    let answer = answer_and_close(stalled, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(app.providers.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_but_steady_body_is_read() {
    use tokio::io::AsyncWriteExt;
    let app = gateway_app(&[("BODY_READ_GRACE_SECS", "1"), ("BODY_MIN_BYTES_PER_SEC", "1024")]).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let body = format!("{}{}", " ".repeat(2_400), hello(false));
    let mut stream = stalled_request(&app, &user, "/v1/chat/completions", body.len(), 0).await;
    // About 1,200 bytes a second: above the minimum rate, though it takes longer than the grace period.
    for chunk in body.as_bytes().chunks(600) {
        stream.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stream.write_all(b"").await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut stream, &mut answer));
    let n = read.await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn one_user_cannot_hold_more_requests_in_flight_than_their_cap() {
    let app = gateway_app(&[("MAX_REQUESTS_IN_FLIGHT_PER_USER", "2")]).await;
    let user = byok_user(&app, false).await;
    let held: Vec<_> = futures_util::future::join_all(
        (0..2).map(|_| stalled_request(&app, &user, "/v1/chat/completions", 100_000, 10)),
    )
    .await;
    // Both are being read now; a third request of the same user is refused at once, whatever the route.
    let mut refused = None;
    for _ in 0..100 {
        let response = app.route(&token_for(&user), "openai").await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("the third request was refused");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "too_many_requests_in_flight");
    let other = byok_user(&app, false).await;
    assert_eq!(app.route(&token_for(&other), "openai").await.status(), 200, "another user is not affected");
    drop(held);
    for _ in 0..100 {
        if app.route(&token_for(&user), "openai").await.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the user's requests were still counted after their connections closed");
}

#[tokio::test]
async fn the_bytes_of_bodies_held_at_once_fit_a_budget() {
    let budget = [("MAX_LLM_BODY_BYTES", "65536"), ("MAX_BODY_BYTES_IN_FLIGHT", "65536")];
    let app = gateway_app(&budget).await;
    let (first, second) = (byok_user(&app, false).await, byok_user(&app, false).await);
    let held = stalled_request(&app, &first, "/v1/chat/completions", 65_000, 60_000).await;
    let mut refused = None;
    for _ in 0..100 {
        let mut body = hello(false);
        body["padding"] = json!(" ".repeat(10_000));
        let response = chat(&app, &second, body).await;
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a body past the budget was refused");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "server_busy");
    drop(held);
}
