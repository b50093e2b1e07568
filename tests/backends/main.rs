//! The conformance suites of the shared-state interfaces, on the `memory` backends (the replica suite runs
//! the same suites on the `redis` ones).

mod suites;

use std::sync::Arc;
use std::time::Duration;

use byok_bridge::accounting::Outbox;
use byok_bridge::clock::Clock;
use byok_bridge::config::JobsConfig;
use byok_bridge::services::call_log::embedded::EmbeddedHistory;
use byok_bridge::services::jobs::embedded::EmbeddedJobs;
use byok_bridge::services::rate_limit::memory::MemoryRateLimit;
use byok_bridge::services::reservations::memory::MemoryReservations;
use byok_bridge::shared::bus::memory::MemoryBus;
use byok_bridge::shared::claims::memory::MemoryClaims;
use suites::TempStore;

#[tokio::test]
async fn memory_rate_limit() {
    suites::rate_limit::suite(&MemoryRateLimit::new()).await;
}

#[tokio::test]
async fn memory_claims() {
    suites::claims::suite(&MemoryClaims::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_credit_books() {
    suites::credit_books::suite(Arc::new(MemoryReservations::new(Duration::from_secs(5), Duration::from_secs(60))))
        .await;
}

#[tokio::test]
async fn memory_bus() {
    let a = MemoryBus::new();
    let b = MemoryBus::beside(&a);
    suites::bus::suite(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test]
async fn embedded_job_queue() {
    let temp = TempStore::new();
    let outbox = Arc::new(Outbox::open(Arc::clone(&temp.store)).unwrap());
    let queue =
        EmbeddedJobs::open(Arc::clone(&temp.store), Arc::clone(&outbox), &JobsConfig::default(), Clock::system())
            .unwrap();
    suites::job_queue::suite(Arc::new(queue), outbox).await;
}

#[tokio::test]
async fn embedded_call_history() {
    let temp = TempStore::new();
    let history = EmbeddedHistory::open(&temp.dir.join("calls.db"), suites::call_history::RETENTION).unwrap();
    suites::call_history::suite(&history).await;
}
