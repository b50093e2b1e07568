//! The credit reservation path on its own (run through `scripts/bench.sh`, or `cargo bench --bench
//! reservations`): what an internal-credit call adds for its hold, from reading what is available to
//! settling the real cost and Directus storing it. Single-threaded, then two threads on one user (the worst
//! contention: one lock, one book).

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_bridge::domain::credit_book::LedgerReading;
use byok_bridge::domain::money::Cents;
use byok_bridge::domain::provider::Provider;
use byok_bridge::domain::routing::Source;
use byok_bridge::domain::usage::{TokenUsage, UsageRecord};
use byok_bridge::domain::user::UserId;
use byok_bridge::services::reservations::{Reservations, now_millis};
use time::OffsetDateTime;
use uuid::Uuid;

const CALLS: usize = 200_000;

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!("p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs", us(at(0.50)), us(at(0.99)), us(at(0.999)))
}

/// One call's reservation path: available, reserve, settle, and the flusher's "stored".
async fn one_call(reservations: &Arc<Reservations>, user: UserId, ledger: LedgerReading) -> Duration {
    let started = Instant::now();
    let available = reservations.available(user, ledger).await;
    assert!(available.is_positive());
    let hold = reservations.reserve(user, ledger, Cents::parse("0.27").unwrap()).await.unwrap();
    let record = UsageRecord {
        request_id: Uuid::new_v4(),
        user,
        provider: Provider::OpenAi,
        model: "gpt-4o-mini".into(),
        source: Source::Internal,
        service_type: "openai.chat_completions".into(),
        usage: TokenUsage::default(),
        cost_cents: Cents::from_nanos(345_000),
        occurred_at: OffsetDateTime::now_utc(),
    };
    hold.settle(record.request_id, record.cost_cents);
    reservations.stored(&record, OffsetDateTime::now_utc()).await;
    started.elapsed()
}

async fn run(threads: usize) -> Vec<Duration> {
    let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(905), None);
    let user = UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap();
    let ledger = LedgerReading { balance: Cents::whole(1_000_000_000), read_at: now_millis() };
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            let reservations = Arc::clone(&reservations);
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(CALLS / threads);
                for _ in 0..CALLS / threads {
                    samples.push(one_call(&reservations, user, ledger).await);
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(CALLS);
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("reservation path, 1 thread:  {}", percentiles(run(1).await));
    println!("reservation path, 2 threads on one user: {}", percentiles(run(2).await));
}
