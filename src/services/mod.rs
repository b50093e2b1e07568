//! Stateful services between the HTTP layer and the clients: caches with explicit freshness rules.

pub mod callers;
pub mod flag_store;
pub mod key_vault;
