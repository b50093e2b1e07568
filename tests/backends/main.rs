//! The conformance suites of the shared-state interfaces, on the `memory` backends (the replica suite runs
//! the same suites on the `redis` ones).

mod suites;

use byok_bridge::services::rate_limit::memory::MemoryRateLimit;
use byok_bridge::shared::claims::memory::MemoryClaims;

#[tokio::test]
async fn memory_rate_limit() {
    suites::rate_limit::suite(&MemoryRateLimit::new()).await;
}

#[tokio::test]
async fn memory_claims() {
    suites::claims::suite(&MemoryClaims::new()).await;
}
