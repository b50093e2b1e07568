//! byok-bridge: a sidecar beside Directus that decides, per LLM call, whether the user's own key (BYOK) or
//! platform credits pay, with feature flags that change the moment an admin flips them.
//!
//! Layers, each depending only on those above it in this list:
//! - [`domain`]: pure rules (routing policy, flags, tiers, credits). No I/O.
//! - [`crypto`]: signatures and keys. No I/O.
//! - [`config`], [`auth`]: typed settings and token verification.
//! - [`directus`], [`providers`], [`store`]: typed clients for Directus and the LLM providers, and the
//!   embedded local store (SQLite).
//! - [`accounting`]: the durable usage outbox and its flusher.
//! - [`shared`]: what replicas share through Redis (claims, the event bus), or keep in memory alone.
//! - [`services`]: flag and caller caches, the key vault, and the LLM gateway.
//! - [`http`]: thin axum handlers, and the one place errors become responses.
//! - [`startup`], [`telemetry`], [`rewrap`]: wiring and the `rewrap` command; [`sync`]: the lock policy;
//!   [`metrics`]: every Prometheus metric, named once.

pub mod accounting;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod directus;
pub mod domain;
pub mod http;
pub mod import_keys;
pub mod metrics;
pub mod providers;
pub mod rewrap;
pub mod services;
pub mod shared;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
