//! Durable jobs against wiremock providers and a wiremock Directus, on a clock the tests move: hours of
//! retries run in moments, while sockets and providers run in real time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_bridge::clock::Clock;
use byok_bridge::crypto::webhook_signature::{Delivery, WebhookSecret};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::gateway::{CHAT_OK, byok_user, gateway_app_tweaked, hello, openai_answers};
use crate::helpers::*;

const FLOWS: &str = "flows-token-for-the-jobs-tests-0123456789";

fn start_clock() -> Clock {
    Clock::manual(time::OffsetDateTime::now_utc().unix_timestamp() * 1000)
}

async fn jobs_app(overrides: &[(&'static str, &str)], clock: &Clock) -> TestApp {
    let mut all = vec![("JOB_CALLBACKS_ALLOW_PRIVATE", "true"), ("CIRCUIT_COOL_DOWN_SECS", "1")];
    all.extend_from_slice(overrides);
    let clock = clock.clone();
    gateway_app_tweaked(&all, move |settings| settings.clock = clock).await
}

async fn submit(app: &TestApp, user: &str, body: Value) -> reqwest::Response {
    app.http.post(app.url("/v1/jobs")).bearer_auth(token_for(user)).json(&body).send().await.unwrap()
}

async fn submit_keyed(app: &TestApp, user: &str, idempotency_key: &str, body: Value) -> reqwest::Response {
    let request = app.http.post(app.url("/v1/jobs")).bearer_auth(token_for(user));
    request.header("idempotency-key", idempotency_key).json(&body).send().await.unwrap()
}

fn chat_job(content: &str) -> Value {
    let mut request = hello(false);
    request["messages"][0]["content"] = json!(content);
    json!({"api": "chat.completions", "request": request})
}

/// `GET /v1/jobs` with `query` (`""`, or `"?status=queued"`...), as the user.
async fn jobs_of(app: &TestApp, user: &str, query: &str) -> Value {
    let response = app.http.get(app.url(&format!("/v1/jobs{query}"))).bearer_auth(token_for(user)).send().await;
    response.unwrap().json().await.unwrap()
}

async fn job(app: &TestApp, user: &str, id: &str) -> Value {
    let response = app.http.get(app.url(&format!("/v1/jobs/{id}"))).bearer_auth(token_for(user)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the job until `done` says so; the bounded wait is the assertion.
async fn wait_for_job(app: &TestApp, user: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1_000 {
        let job = job(app, user, id).await;
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never got {what}: {}", job(app, user, id).await);
}

async fn submitted_id(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    body["id"].as_str().unwrap().to_owned()
}

fn millis(rfc3339: &Value) -> i64 {
    let at = time::OffsetDateTime::parse(rfc3339.as_str().unwrap(), &time::format_description::well_known::Rfc3339);
    (at.unwrap().unix_timestamp_nanos() / 1_000_000) as i64
}

/// OpenAI down (503) while `down` is set, answering normally otherwise; counts the calls.
fn flaky_openai(down: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> Mock {
    Mock::given(method("POST")).and(path("/v1/chat/completions")).respond_with(move |_: &Request| {
        calls.fetch_add(1, Ordering::SeqCst);
        if down.load(Ordering::SeqCst) {
            ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "overloaded"}}))
        } else {
            ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json")
        }
    })
}

#[tokio::test]
async fn a_job_survives_a_ten_minute_outage_and_completes_once_the_provider_is_back() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, false).await;
    let (down, calls) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
    flaky_openai(Arc::clone(&down), Arc::clone(&calls)).mount(&app.providers).await;
    let id = submitted_id(submit(&app, &user, chat_job("Hello")).await).await;
    let started = clock.now();

    // Ten minutes of outage, attempt after attempt: each failure puts the job back with a later time.
    let mut attempts = 0;
    let mut waits = Vec::new();
    loop {
        let job = wait_for_job(&app, &user, &id, "another attempt", |j| j["attempts"].as_u64() > Some(attempts)).await;
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(job["error"]["code"], "ai_unavailable", "{job}");
        attempts = job["attempts"].as_u64().unwrap();
        let next = millis(&job["next_attempt_at"]);
        assert!(next > clock.now(), "the next attempt is later: {job}");
        waits.push(next - clock.now());
        if next - started >= 10 * 60_000 {
            // The provider is back before the next attempt.
            down.store(false, Ordering::SeqCst);
        }
        clock.advance(Duration::from_millis((next - clock.now()) as u64));
        if !down.load(Ordering::SeqCst) {
            break;
        }
    }
    assert!(attempts >= 6, "kept trying through the outage: {attempts} attempts");
    assert!(waits.last() > waits.first(), "backed off: {waits:?}");

    // The circuit opened during the outage and lets a probe through after its (real-time) cool-down: until
    // then an attempt is put back without calling the provider.
    let job = loop {
        let job = wait_for_job(&app, &user, &id, "another attempt", |j| j["attempts"].as_u64() > Some(attempts)).await;
        attempts = job["attempts"].as_u64().unwrap();
        if job["status"] == "succeeded" {
            break job;
        }
        assert_eq!(job["error"]["code"], "ai_unavailable", "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = millis(&job["next_attempt_at"]);
        clock.advance(Duration::from_millis((next - clock.now()).max(0) as u64));
    };
    assert_eq!(job["result"]["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(job["source"], "byok");
    assert_eq!(job["cost_cents"], 0.000345);
    assert!(job["error"].is_null() && job["next_attempt_at"].is_null() && job["finished_at"].is_string());
    let usage = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 1).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["request_id"], job["usage_id"]);
    assert!(calls.load(Ordering::SeqCst) as u64 <= attempts, "one provider call per attempt at most");
}

#[tokio::test]
async fn a_quota_exhausted_key_pauses_the_users_jobs_notifies_once_and_a_working_key_resumes_them() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, true).await;
    let exhausted = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&exhausted);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
        .respond_with(move |_: &Request| {
            if flag.load(Ordering::SeqCst) {
                let quota = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
                ResponseTemplate::new(429).set_body_json(quota)
            } else {
                ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json")
            }
        })
        .mount(&app.providers)
        .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submitted_id(submit(&app, &user, chat_job(&format!("job {n}"))).await).await);
    }
    for id in &ids {
        let job = wait_for_job(&app, &user, id, "paused", |j| j["status"] == "paused").await;
        assert_eq!(job["error"]["code"], "provider_quota_exhausted", "{job}");
        assert!(job["next_attempt_at"].is_null());
    }
    let notifications = wait_for_requests(&app.directus, "POST", "/notifications", 1).await;
    assert_eq!(notifications.len(), 1, "one incident, one notification: {notifications:?}");
    assert!(notifications[0]["subject"].as_str().unwrap().contains("out of quota"));
    clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(job(&app, &user, &ids[0]).await["status"], "paused", "paused jobs wait for the key, not the clock");

    // The user adds credit and verifies the key: the provider accepts it, and the jobs run.
    exhausted.store(false, Ordering::SeqCst);
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&app.providers)
        .await;
    let verified = app.http.post(app.url("/v1/keys/openai/verify")).bearer_auth(token_for(&user)).send().await.unwrap();
    assert_eq!(verified.status(), 200);
    for id in &ids {
        let job = wait_for_job(&app, &user, id, "success", |j| j["status"] == "succeeded").await;
        assert_eq!(job["attempts"], 2, "{job}");
    }
    assert_eq!(wait_for_requests(&app.directus, "POST", "/notifications", 1).await.len(), 1);
}

/// Callbacks an app received: the three Standard Webhooks headers and the body of each.
type Received = Arc<Mutex<Vec<([String; 3], String)>>>;

/// An app receiving callbacks, at the returned URL.
async fn callback_receiver() -> (String, Received) {
    let server = wiremock::MockServer::start().await;
    let seen = Received::default();
    let record = Arc::clone(&seen);
    Mock::given(method("POST"))
        .and(path("/hooks/jobs"))
        .respond_with(move |request: &Request| {
            let headers = ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .map(|name| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned());
            record.lock().unwrap().push((headers, String::from_utf8_lossy(&request.body).into_owned()));
            ResponseTemplate::new(204)
        })
        .mount(&server)
        .await;
    let url = format!("{}/hooks/jobs", server.uri());
    std::mem::forget(server);
    (url, seen)
}

#[tokio::test]
async fn the_completion_callback_is_signed_with_the_jobs_own_secret() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let (url, seen) = callback_receiver().await;
    let mut body = chat_job("Hello");
    body["callback_url"] = json!(url);
    body["metadata"] = json!({"note": 42});
    let response = submit(&app, &user, body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    let secret = WebhookSecret::parse(answer["callback_secret"].as_str().unwrap()).unwrap();

    let job = wait_for_job(&app, &user, &id, "a delivered callback", |j| j["callback"]["state"] == "delivered").await;
    assert_eq!(job["callback"]["attempts"], 1);
    let deliveries = seen.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let ([webhook_id, timestamp, signature], payload) = &deliveries[0];
    let delivery = Delivery {
        id: Some(webhook_id),
        timestamp: Some(timestamp),
        signature: Some(signature),
        body: payload.as_bytes(),
    };
    secret.verify(&delivery, now()).expect("the callback verifies with the job's secret");
    let other = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    assert!(other.verify(&delivery, now()).is_err(), "and with no other");
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["type"], "job.succeeded");
    assert_eq!(payload["data"]["id"], id.as_str());
    assert_eq!(payload["data"]["metadata"], json!({"note": 42}));
    assert_eq!(payload["data"]["result"]["choices"][0]["message"]["content"], "Hi!");
    assert!(!payload.to_string().contains(&user), "the payload carries no user id");
    let shown = job.to_string();
    assert!(!shown.contains("whsec_"), "the secret is shown once, at submit");
}

#[tokio::test]
async fn a_failing_callback_is_retried_with_backoff() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let receiver = wiremock::MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).up_to_n_times(2).mount(&receiver).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let mut body = chat_job("Hello");
    body["callback_url"] = json!(format!("{}/hook", receiver.uri()));
    let id = submitted_id(submit(&app, &user, body).await).await;
    let job = wait_for_job(&app, &user, &id, "a failed delivery", |j| j["callback"]["attempts"] == 1).await;
    assert_eq!(job["callback"]["state"], "pending");
    assert_eq!(job["callback"]["last_error"], "the app answered HTTP 500");
    clock.advance(Duration::from_secs(5));
    wait_for_job(&app, &user, &id, "a second failure", |j| j["callback"]["attempts"] == 2).await;
    clock.advance(Duration::from_secs(30));
    let job = wait_for_job(&app, &user, &id, "delivery", |j| j["callback"]["state"] == "delivered").await;
    assert_eq!(job["callback"]["attempts"], 3);
    assert_eq!(receiver.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn the_same_idempotency_key_makes_no_second_job() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, false).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let send = |body: Value| submit_keyed(&app, &user, "order-7781", body);
    let first = send(chat_job("Hello")).await;
    let first_id = submitted_id(first).await;
    let again = send(chat_job("Hello")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first_id.as_str());
    wait_for_job(&app, &user, &first_id, "success", |j| j["status"] == "succeeded").await;
    assert_eq!(jobs_of(&app, &user, "").await["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(app.providers.received_requests().await.unwrap().len(), 1, "one job, one call");

    let mut other = chat_job("Hello");
    other["request"]["model"] = json!("gpt-4o");
    let mut callback = chat_job("Hello");
    callback["callback_url"] = json!("https://app.example.com/hooks/ai");
    // The same key with another request (same API and model, other words), callback or metadata: not the same job.
    let mut tagged = chat_job("Hello");
    tagged["metadata"] = json!({"document": 18});
    for different in [other, chat_job("Hello, but something else"), callback, tagged] {
        let reused = send(different.clone()).await;
        assert_eq!(reused.status(), 422, "{different}");
        assert!(!reused.headers().contains_key("location"));
        let body: Value = reused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
        assert!(body.get("callback_secret").is_none() && body["error"].get("callback_secret").is_none());
    }
    // Another user's same key is their own.
    let someone = byok_user(&app, false).await;
    let theirs = submit_keyed(&app, &someone, "order-7781", chat_job("Hello")).await;
    assert_ne!(submitted_id(theirs).await, first_id);
}

#[tokio::test]
async fn one_users_thousand_jobs_do_not_delay_another_users_job() {
    let clock = start_clock();
    let app = jobs_app(&[("JOB_WORKERS", "8"), ("JOB_PER_USER_CONCURRENCY", "2")], &clock).await;
    let busy = byok_user(&app, false).await;
    let other = byok_user(&app, false).await;
    let arrivals: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&arrivals);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |request: &Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            seen.lock().unwrap().push(body["messages"][0]["content"].as_str().unwrap().to_owned());
            ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json").set_delay(Duration::from_millis(20))
        })
        .mount(&app.providers)
        .await;
    for n in 0..1_000 {
        submitted_id(submit(&app, &busy, chat_job(&format!("busy {n}"))).await).await;
    }
    let before = arrivals.lock().unwrap().len();
    let id = submitted_id(submit(&app, &other, chat_job("other")).await).await;
    wait_for_job(&app, &other, &id, "success", |j| j["status"] == "succeeded").await;
    let arrivals = arrivals.lock().unwrap().clone();
    let position = arrivals.iter().position(|a| a == "other").unwrap();
    // A busy job or two per free slot may start while the other job's caller profile is read; the backlog waits.
    assert!(position <= before + 8, "the other user's job went ahead of the backlog: {position} after {before}");
    assert!(arrivals.len() < 900, "the busy user's backlog was still there: {}", arrivals.len());
}

#[tokio::test]
async fn requests_that_cannot_succeed_fail_at_once_with_the_gateways_code() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, false).await;
    let refused = json!({"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error"}});
    openai_answers(OPENAI_KEY, ResponseTemplate::new(404).set_body_json(refused.clone())).mount(&app.providers).await;
    let id = submitted_id(submit(&app, &user, chat_job("Hello")).await).await;
    let job = wait_for_job(&app, &user, &id, "failure", |j| j["status"] == "failed").await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["error"]["code"], "provider_refused_request");
    assert_eq!(job["error"]["provider_status"], 404);
    assert_eq!(job["error"]["provider_answer"], refused);

    // A free user without credits or key.
    mount_flags(&app.directus, true, false, false).await;
    let broke = new_user_id();
    mount_user(&app.directus, &broke, FakeUser { tier: "free", grants: 0, ..Default::default() }).await;
    let id = submitted_id(submit(&app, &broke, chat_job("Hello")).await).await;
    let job = wait_for_job(&app, &broke, &id, "failure", |j| j["status"] == "failed").await;
    assert_eq!(job["error"]["code"], "insufficient_credits", "{job}");

    // Retried by the user: queued again, and failing again.
    let retried =
        app.http.post(app.url(&format!("/v1/jobs/{id}/retry"))).bearer_auth(token_for(&broke)).send().await.unwrap();
    assert_eq!(retried.status(), 200);
    let job = wait_for_job(&app, &broke, &id, "a second failure", |j| j["attempts"] == 2).await;
    assert_eq!(job["status"], "failed");
}

#[tokio::test]
async fn bad_submissions_are_refused_and_users_see_only_their_own_jobs() {
    let clock = start_clock();
    let app = gateway_app_tweaked(&[("JOB_WORKERS", "0"), ("FLOWS_TOKEN", FLOWS)], {
        let clock = clock.clone();
        move |settings| settings.clock = clock
    })
    .await;
    let user = byok_user(&app, false).await;
    let code = |response: reqwest::Response, status: u16| async move {
        assert_eq!(response.status(), status);
        error_code(response).await
    };
    let mut streaming = chat_job("Hello");
    streaming["request"]["stream"] = json!(true);
    assert_eq!(code(submit(&app, &user, streaming).await, 422).await, "streaming_not_supported");
    assert_eq!(
        code(submit(&app, &user, json!({"api": "completions", "request": {}})).await, 400).await,
        "invalid_request"
    );
    assert_eq!(
        code(submit(&app, &user, json!({"api": "messages", "request": {"model": 3}})).await, 400).await,
        "invalid_request"
    );
    for internal in
        ["http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://localhost/x", "ftp://example.com/"]
    {
        let mut body = chat_job("Hello");
        body["callback_url"] = json!(internal);
        assert_eq!(code(submit(&app, &user, body).await, 422).await, "invalid_callback_url", "{internal}");
    }
    let mut body = chat_job("Hello");
    body["metadata"] = json!("not an object");
    assert_eq!(code(submit(&app, &user, body).await, 422).await, "invalid_metadata");
    let response = submit_keyed(&app, &user, "", chat_job("x")).await;
    assert_eq!(code(response, 400).await, "invalid_idempotency_key");
    let unauthenticated = app.http.post(app.url("/v1/jobs")).json(&chat_job("x")).send().await.unwrap();
    assert_eq!(code(unauthenticated, 401).await, "unauthorized");

    let id = submitted_id(submit(&app, &user, chat_job("mine")).await).await;
    let stranger = byok_user(&app, false).await;
    for request in [
        app.http.get(app.url(&format!("/v1/jobs/{id}"))),
        app.http.delete(app.url(&format!("/v1/jobs/{id}"))),
        app.http.post(app.url(&format!("/v1/jobs/{id}/retry"))),
        app.http.get(app.url("/v1/jobs/not-a-uuid")),
    ] {
        let response = request.bearer_auth(token_for(&stranger)).send().await.unwrap();
        assert_eq!(code(response, 404).await, "job_not_found");
    }
    assert_eq!(jobs_of(&app, &stranger, "").await["jobs"], json!([]));

    // No workers run here: the job waits, can be listed by status, cancelled once, and not retried.
    assert_eq!(jobs_of(&app, &user, "?status=queued").await["jobs"][0]["id"], id.as_str());
    let response = app.http.get(app.url("/v1/jobs?status=done")).bearer_auth(token_for(&user)).send().await.unwrap();
    assert_eq!(code(response, 400).await, "invalid_request");
    let retry =
        app.http.post(app.url(&format!("/v1/jobs/{id}/retry"))).bearer_auth(token_for(&user)).send().await.unwrap();
    assert_eq!(code(retry, 409).await, "job_not_retryable");
    let cancel = || app.http.delete(app.url(&format!("/v1/jobs/{id}"))).bearer_auth(token_for(&user)).send();
    let counts = |bearer: &'static str| app.http.get(app.url("/v1/admin/jobs")).bearer_auth(bearer).send();
    let seen: Value = counts(OPERATOR_TOKEN).await.unwrap().json().await.unwrap();
    assert_eq!((seen["backend"].as_str(), seen["counts"]["queued"].as_u64()), (Some("embedded"), Some(1)), "{seen}");
    assert_eq!(counts(FLOWS).await.unwrap().status(), 401);

    // A Flow may queue a job for a user, nothing more.
    let flow =
        |request: reqwest::RequestBuilder| request.bearer_auth(FLOWS).header("x-byok-on-behalf-of", &user).send();
    let queued = flow(app.http.post(app.url("/v1/jobs")).json(&chat_job("from a Flow"))).await.unwrap();
    let queued_id = submitted_id(queued).await;
    let flow_job = job(&app, &user, &queued_id).await;
    // It reports to Directus (the Flows bundle's endpoint), which the user is not shown.
    assert_eq!((flow_job["callback"]["state"].as_str(), &flow_job["callback"]["url"]), (Some("waiting"), &Value::Null));
    for request in [app.http.get(app.url("/v1/jobs")), app.http.get(app.url(&format!("/v1/jobs/{queued_id}")))] {
        assert_eq!(flow(request).await.unwrap().status(), 401);
    }

    let cancelled: Value = cancel().await.unwrap().json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(code(cancel().await.unwrap(), 409).await, "job_finished");
}

#[tokio::test]
async fn a_user_cannot_fill_the_queue_faster_than_the_submit_limit() {
    let clock = start_clock();
    let app = jobs_app(&[("JOB_WORKERS", "0"), ("RATE_LIMIT_JOB_SUBMITS_PER_MIN", "2")], &clock).await;
    let user = byok_user(&app, false).await;
    for n in 0..2 {
        submitted_id(submit(&app, &user, chat_job(&format!("job {n}"))).await).await;
    }
    let refused = submit(&app, &user, chat_job("one too many")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "rate_limited");
    assert_eq!(jobs_of(&app, &user, "").await["jobs"].as_array().unwrap().len(), 2, "the refused job was not stored");
    // Another user has their own allowance.
    let other = byok_user(&app, false).await;
    submitted_id(submit(&app, &other, chat_job("mine")).await).await;
}

/// The user's queued jobs, read page by page.
async fn all_listed(app: &TestApp, user: &str, page: usize) -> Vec<String> {
    let (mut ids, mut after) = (Vec::new(), None::<String>);
    loop {
        let query = after.as_ref().map_or(String::new(), |a| format!("&after={a}"));
        let listed = jobs_of(app, user, &format!("?status=queued&limit={page}{query}")).await;
        let jobs = listed["jobs"].as_array().unwrap();
        assert!(jobs.len() <= page);
        ids.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match listed["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn a_user_cannot_keep_more_jobs_waiting_than_the_cap_and_lists_come_in_pages() {
    let clock = start_clock();
    let app = jobs_app(&[("JOB_WORKERS", "0"), ("JOB_MAX_WAITING_PER_USER", "25")], &clock).await;
    let user = byok_user(&app, false).await;
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(submitted_id(submit(&app, &user, chat_job(&format!("job {n}"))).await).await);
    }
    let refused = submit(&app, &user, chat_job("one too many")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "job_queue_full");

    // Listed newest first, seven at a time, each job once.
    let listed = all_listed(&app, &user, 7).await;
    ids.reverse();
    assert_eq!(listed, ids);

    // A replay of a job already queued is still answered; a cancelled job makes room for one more.
    let first = submit_keyed(&app, &user, "kept-1", chat_job("keyed")).await;
    assert_eq!(error_code(first).await, "job_queue_full");
    let cancelled = app.http.delete(app.url(&format!("/v1/jobs/{}", ids[0]))).bearer_auth(token_for(&user));
    assert_eq!(cancelled.send().await.unwrap().status(), 200);
    let keyed = submitted_id(submit_keyed(&app, &user, "kept-1", chat_job("keyed")).await).await;
    let replay = submit_keyed(&app, &user, "kept-1", chat_job("keyed")).await;
    assert_eq!(replay.status(), 202, "a replay adds nothing, so the cap does not refuse it");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], keyed.as_str());
    assert_eq!(error_code(submit(&app, &user, chat_job("full again")).await).await, "job_queue_full");
    // Another user's queue is their own.
    let other = byok_user(&app, false).await;
    submitted_id(submit(&app, &other, chat_job("mine")).await).await;
}

#[tokio::test]
async fn a_users_jobs_cannot_hold_more_bytes_than_the_cap_and_a_job_body_has_its_own_limit() {
    let clock = start_clock();
    let overrides = [("JOB_WORKERS", "0"), ("JOB_MAX_STORED_BYTES_PER_USER", "1048576")];
    let app = jobs_app(&overrides, &clock).await;
    let user = byok_user(&app, false).await;
    let big = chat_job(&"x".repeat(300 * 1024));
    for _ in 0..3 {
        submitted_id(submit(&app, &user, big.clone()).await).await;
    }
    let refused = submit(&app, &user, big.clone()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(error_code(refused).await, "job_storage_full");
    submitted_id(submit(&app, &user, chat_job("a small one still fits")).await).await;

    // Past MAX_JOB_BODY_BYTES (4 MiB by default), refused before it is parsed or stored.
    let someone = byok_user(&app, false).await;
    let huge = chat_job(&"y".repeat(5 * 1024 * 1024));
    let refused = submit(&app, &someone, huge).await;
    assert_eq!(refused.status(), 413);
    assert_eq!(error_code(refused).await, "payload_too_large");
    assert_eq!(jobs_of(&app, &someone, "").await["jobs"], json!([]));
}

#[tokio::test]
async fn an_inactive_account_cannot_queue_jobs() {
    let clock = start_clock();
    let app = jobs_app(&[("JOB_WORKERS", "0")], &clock).await;
    let suspended = new_user_id();
    mount_user(&app.directus, &suspended, FakeUser { status: "suspended", ..Default::default() }).await;
    let refused = submit(&app, &suspended, chat_job("Hello")).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(error_code(refused).await, "account_inactive");
    assert_eq!(jobs_of(&app, &suspended, "").await["jobs"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn with_the_shared_callback_secret_the_signed_payload_names_the_user_and_the_job() {
    let clock = start_clock();
    let shared = "whsec_c2hhcmVkLWNhbGxiYWNrLXNlY3JldC1mb3ItYWxsLWpvYnM=";
    let app = jobs_app(&[("JOB_CALLBACK_SECRET", shared)], &clock).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let (url, seen) = callback_receiver().await;
    let (alice, bob) = (byok_user(&app, false).await, byok_user(&app, false).await);
    let mut ids = Vec::new();
    for user in [&alice, &bob] {
        let mut body = chat_job("Hello");
        body["callback_url"] = json!(url);
        let response = submit(&app, user, body).await;
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        assert!(answer.get("callback_secret").is_none(), "the shared secret signs: no secret of the job's own");
        let id = answer["id"].as_str().unwrap().to_owned();
        wait_for_job(&app, user, &id, "a delivered callback", |j| j["callback"]["state"] == "delivered").await;
        ids.push((id, user.clone()));
    }
    let secret = WebhookSecret::parse(shared).unwrap();
    let deliveries = seen.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 2);
    for ([webhook_id, timestamp, signature], payload) in &deliveries {
        let delivery = Delivery {
            id: Some(webhook_id),
            timestamp: Some(timestamp),
            signature: Some(signature),
            body: payload.as_bytes(),
        };
        secret.verify(&delivery, now()).expect("signed with the shared secret");
        // What a receiver checks: the job it knows by this id belongs to the user the signed payload names.
        let payload: Value = serde_json::from_str(payload).unwrap();
        let (id, user) = (payload["data"]["id"].as_str().unwrap(), payload["data"]["user"].as_str().unwrap());
        assert!(ids.iter().any(|(i, u)| i == id && u == user), "{payload}");
        assert_eq!(webhook_id, &format!("msg_{}", id.replace('-', "")), "the signed id names the job too");
    }
}

#[tokio::test]
async fn failed_jobs_notify_their_user_once_an_hour_not_once_each() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    mount_flags(&app.directus, true, false, false).await;
    let broke = new_user_id();
    mount_user(&app.directus, &broke, FakeUser { tier: "free", grants: 0, ..Default::default() }).await;
    for n in 0..5 {
        let mut body = chat_job(&format!("job {n}"));
        body["notify_on_failure"] = json!(true);
        let id = submitted_id(submit(&app, &broke, body).await).await;
        wait_for_job(&app, &broke, &id, "failure", |j| j["status"] == "failed").await;
    }
    let notices = wait_for_requests(&app.directus, "POST", "/notifications", 1).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0]["message"].as_str().unwrap().contains("next hour"), "{}", notices[0]);
}

/// An app receiving callbacks slowly (each takes `delay`): how many it was sent at once at most, and when each
/// job's callback arrived (by `metadata.tag`).
struct SlowReceiver {
    url_host: String,
    max_at_once: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
}

async fn slow_receiver(host: &str, delay: Duration) -> SlowReceiver {
    let (active, max_at_once) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>> = Arc::default();
    let (a, m, seen) = (Arc::clone(&active), Arc::clone(&max_at_once), Arc::clone(&arrivals));
    let hook = move |body: axum::body::Bytes| {
        let (a, m, seen) = (Arc::clone(&a), Arc::clone(&m), Arc::clone(&seen));
        async move {
            let now = a.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let payload: Value = serde_json::from_slice(&body).unwrap();
            let tag = payload["data"]["metadata"]["tag"].as_str().unwrap_or_default().to_owned();
            seen.lock().unwrap().push((tag, std::time::Instant::now()));
            tokio::time::sleep(delay).await;
            a.fetch_sub(1, Ordering::SeqCst);
            axum::http::StatusCode::NO_CONTENT
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/hook", axum::routing::post(hook));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    SlowReceiver { url_host: format!("http://{host}:{port}/hook"), max_at_once, arrivals }
}

fn job_with_callback(url: &str, tag: &str) -> Value {
    let mut body = chat_job(tag);
    body["callback_url"] = json!(url);
    body["metadata"] = json!({"tag": tag});
    body
}

#[tokio::test]
async fn one_users_slow_callback_host_does_not_delay_another_users_callback() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let slow = slow_receiver("localhost", Duration::from_secs(3)).await;
    let fast = slow_receiver("127.0.0.1", Duration::ZERO).await;
    let (busy, other) = (byok_user(&app, false).await, byok_user(&app, false).await);
    let mut busy_jobs = Vec::new();
    for n in 0..40 {
        busy_jobs.push(
            submitted_id(submit(&app, &busy, job_with_callback(&slow.url_host, &format!("busy {n}"))).await).await,
        );
    }
    for id in &busy_jobs {
        wait_for_job(&app, &busy, id, "success", |j| j["status"] == "succeeded").await;
    }
    let id = submitted_id(submit(&app, &other, job_with_callback(&fast.url_host, "other")).await).await;
    let job = wait_for_job(&app, &other, &id, "success", |j| j["status"] == "succeeded").await;
    let finished = std::time::Instant::now();
    let delivered = wait_for_job(&app, &other, &id, "its callback", |j| j["callback"]["state"] == "delivered").await;
    assert!(
        finished.elapsed() < Duration::from_millis(1_500),
        "the other user's callback waited {:?} behind a slow host: {delivered}",
        finished.elapsed()
    );
    assert_eq!(job["status"], "succeeded");
    assert!(slow.max_at_once.load(Ordering::SeqCst) <= 4, "one user's callbacks at once: at most their share");
    assert!(!slow.arrivals.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_slow_host_gets_at_most_its_share_of_callback_senders() {
    let clock = start_clock();
    let app = jobs_app(&[("JOB_CALLBACKS_PER_HOST", "3")], &clock).await;
    openai_answers(OPENAI_KEY, ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json"))
        .mount(&app.providers)
        .await;
    let slow = slow_receiver("localhost", Duration::from_millis(400)).await;
    let mut jobs = Vec::new();
    for u in 0..3 {
        let user = byok_user(&app, false).await;
        for n in 0..4 {
            let id =
                submitted_id(submit(&app, &user, job_with_callback(&slow.url_host, &format!("{u}-{n}"))).await).await;
            jobs.push((user.clone(), id));
        }
    }
    for (user, id) in &jobs {
        wait_for_job(&app, user, id, "its callback", |j| j["callback"]["state"] == "delivered").await;
    }
    assert_eq!(slow.arrivals.lock().unwrap().len(), 12);
    assert_eq!(slow.max_at_once.load(Ordering::SeqCst), 3, "the host's cap, though three users had callbacks due");
}

/// Jobs take the Responses and Embeddings APIs too: each runs through the gateway and is charged by its own
/// usage.
#[tokio::test]
async fn responses_and_embeddings_run_as_jobs_and_are_charged_by_their_usage() {
    let clock = start_clock();
    let app = jobs_app(&[], &clock).await;
    let user = byok_user(&app, false).await;
    let answers = [
        (
            "/v1/responses",
            r#"{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":9,"output_tokens":3,"total_tokens":12}}"#,
        ),
        (
            "/v1/embeddings",
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"usage":{"prompt_tokens":5,"total_tokens":5}}"#,
        ),
    ];
    for (endpoint, answer) in answers {
        Mock::given(method("POST"))
            .and(path(endpoint))
            .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
            .expect(1)
            .mount(&app.providers)
            .await;
    }
    let jobs = [
        json!({"api": "responses", "request": {"model": "gpt-4o-mini", "input": "Hi", "max_output_tokens": 50}}),
        json!({"api": "embeddings", "request": {"model": "text-embedding-3-small", "input": "Hi"}}),
    ];
    for (body, tokens) in jobs.into_iter().zip([12, 5]) {
        let id = submitted_id(submit(&app, &user, body).await).await;
        let job = wait_for_job(&app, &user, &id, "success", |j| j["status"] == "succeeded").await;
        assert_eq!(job["source"], "byok", "{job}");
        assert_eq!(job["result"]["usage"]["total_tokens"], tokens, "{job}");
    }
    let records = wait_for_requests(&app.directus, "POST", "/items/api_key_usage", 2).await;
    let mut models: Vec<&str> = records.iter().map(|r| r["model"].as_str().unwrap()).collect();
    models.sort_unstable();
    assert_eq!(models, ["gpt-4o-mini", "text-embedding-3-small"]);
}
