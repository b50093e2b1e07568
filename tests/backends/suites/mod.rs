//! One conformance suite per shared-state interface, generic over the backend: `tests/backends` runs them on
//! the `memory` backends, the replica suite on the `redis` ones against a real `redis-server`. A new backend
//! passes by implementing the interface and running these.

pub mod bus;
pub mod call_history;
pub mod claims;
pub mod credit_books;
pub mod job_queue;
pub mod rate_limit;

/// A name no earlier run used (a Redis keeps what runs before left).
pub fn fresh(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}
