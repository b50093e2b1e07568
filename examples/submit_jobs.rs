//! Submits `JOBS` jobs to `URL` (`POST /v1/jobs`) as the holder of `TOKEN`, `CONCURRENCY` at a time, and prints
//! the rate and latency: the submitting half of `scripts/bench.sh`'s jobs section (wrk cannot stop at a count).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    let (url, token) = (var("URL"), var("TOKEN"));
    let total: usize = var("JOBS").parse().expect("JOBS is a number");
    let concurrency: usize = var("CONCURRENCY").parse().expect("CONCURRENCY is a number");
    let body = r#"{"api":"chat.completions","request":{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}}"#;
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, token, next) = (client.clone(), url.clone(), token.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("the sidecar answers");
                    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await.expect("a submitter finished"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "   {} jobs submitted in {:.1} s: {:.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    );
}
