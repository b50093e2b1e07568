//! Stateful services between the HTTP layer and the clients: caches with explicit freshness rules.

pub mod call_log;
pub mod callers;
pub mod circuit_breaker;
pub mod flag_cache;
pub mod gateway;
pub mod in_flight;
pub mod jobs;
pub mod key_rechecks;
pub mod key_vault;
pub mod meter;
pub mod notifier;
pub mod payments;
pub mod platform_budget;
pub mod rate_limit;
pub mod reservations;
pub mod sessions;
pub mod sign_in;
pub mod spending_alerts;
pub mod standing;
