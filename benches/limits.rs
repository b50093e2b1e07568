//! What the per-user limits and the body guard add to one gateway call (run through `scripts/bench.sh`, or
//! `cargo bench --bench limits`): each piece on its own, one call at a time, over 10,000 users, and the body
//! guard as a router layer against the same router without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::routing::post;
use byok_bridge::domain::provider::Provider;
use byok_bridge::domain::user::UserId;
use byok_bridge::http::guard::Guard;
use byok_bridge::services::circuit_breaker::{Circuit, CircuitBreaker};
use byok_bridge::services::in_flight::InFlight;
use byok_bridge::services::rate_limit::RateLimiter;
use tokio::sync::Semaphore;
use tower::ServiceExt;

const CALLS: usize = 200_000;
const USERS: usize = 10_000;

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("{label}: p50 {:.3} µs, p99 {:.3} µs", us(at(0.50)), us(at(0.99)));
}

fn users() -> Vec<UserId> {
    (0..USERS).map(|_| UserId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()).collect()
}

async fn timed<F: std::future::Future<Output = ()>>(calls: usize, mut one: impl FnMut(usize) -> F) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(calls);
    for n in 0..calls {
        let started = Instant::now();
        one(n).await;
        samples.push(started.elapsed());
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users = Arc::new(users());

    // Requests in flight and calls running per user: two counts taken and given back per call.
    let requests = InFlight::new(64);
    let calls = InFlight::new(32);
    let counted = timed(CALLS, |n| {
        let user = users[n % USERS];
        let (requests, calls) = (Arc::clone(&requests), Arc::clone(&calls));
        async move {
            let request = requests.try_acquire(&user).unwrap();
            let call = calls.try_acquire(&user).unwrap();
            drop((call, request));
        }
    })
    .await;
    percentiles("requests in flight + calls running per user (two counts)", counted);

    // The own-key rate limit: one token from the user's bucket (this replica's; Redis adds a round trip).
    let limiter: RateLimiter = RateLimiter::new("own_keys", None);
    let limited = timed(CALLS, |n| {
        let user = users[n % USERS];
        let limiter = &limiter;
        async move { limiter.acquire(user, 10_000_000).await.unwrap() }
    })
    .await;
    percentiles("own-key rate limit (one bucket)", limited);

    // The user key's circuit: admitted, then told the provider answered.
    let breaker = CircuitBreaker::new(5, Duration::from_secs(30));
    let circuits = timed(CALLS, |n| {
        let circuit = Circuit::UserKey(users[n % USERS], Provider::openai());
        let breaker = &breaker;
        async move {
            breaker.admit(circuit, std::time::Instant::now()).unwrap();
            breaker.record_success(circuit);
        }
    })
    .await;
    percentiles("a user key's circuit (admit, success)", circuits);

    // The body guard: a request with a 300-byte body through a router with it and one without.
    let guard = Guard {
        grace: Duration::from_secs(10),
        min_bytes_per_sec: 32 * 1024,
        body_budget: Arc::new(Semaphore::new(512 << 20)),
    };
    let handler = post(|body: Bytes| async move { body.len().to_string() });
    let bare = Router::new().route("/", handler.clone());
    let guarded = Router::new().route("/", handler).layer(guard);
    let body = Bytes::from(vec![b'x'; 300]);
    for (label, router) in [("router without the body guard", bare), ("router with the body guard", guarded)] {
        let samples = timed(CALLS, |_| {
            let (router, body) = (router.clone(), body.clone());
            async move {
                let request = Request::post("/").body(Body::from(body)).unwrap();
                let response = router.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
            }
        })
        .await;
        percentiles(label, samples);
    }
}
