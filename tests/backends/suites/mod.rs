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

/// A store in a directory of its own, removed when dropped.
pub struct TempStore {
    pub dir: std::path::PathBuf,
    pub store: std::sync::Arc<byok_bridge::store::Store>,
}

impl TempStore {
    pub fn new() -> TempStore {
        let dir = std::env::temp_dir().join(fresh("byok-backends"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = std::sync::Arc::new(byok_bridge::store::Store::open(&dir.join("byok-bridge.db")).unwrap());
        TempStore { dir, store }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
