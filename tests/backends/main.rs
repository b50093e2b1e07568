//! The conformance suites of the shared-state interfaces, on the `memory` backends (the replica suite runs
//! the same suites on the `redis` ones).

mod suites;

use std::sync::Arc;
use std::time::Duration;

use byok_bridge::clock::Clock;
use byok_bridge::config::JobsConfig;
use byok_bridge::services::call_log::embedded::EmbeddedHistory;
use byok_bridge::services::jobs::embedded::EmbeddedJobs;
use byok_bridge::services::rate_limit::memory::MemoryRateLimit;
use byok_bridge::services::reservations::memory::MemoryReservations;
use byok_bridge::shared::bus::memory::MemoryBus;
use byok_bridge::shared::claims::memory::MemoryClaims;
use byok_bridge::store::Store;

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

/// A store in a directory of its own, removed when dropped.
struct TempStore {
    dir: std::path::PathBuf,
    store: Arc<Store>,
}

impl TempStore {
    fn new() -> TempStore {
        let dir = std::env::temp_dir().join(format!("byok-backends-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(Store::open(&dir.join("byok-bridge.db")).unwrap());
        TempStore { dir, store }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn embedded_job_queue() {
    let temp = TempStore::new();
    let queue = EmbeddedJobs::open(Arc::clone(&temp.store), &JobsConfig::default(), Clock::system()).unwrap();
    suites::job_queue::suite(Arc::new(queue)).await;
}

#[tokio::test]
async fn embedded_call_history() {
    let temp = TempStore::new();
    let history = EmbeddedHistory::open(&temp.dir.join("calls.db"), suites::call_history::RETENTION).unwrap();
    suites::call_history::suite(&history).await;
}
