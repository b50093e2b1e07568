//! byok-bridge: a sidecar beside Directus that decides, per LLM call, whether the user's own key (BYOK) or
//! platform credits pay, with feature flags that change the moment an admin flips them.
//!
//! Layers, each depending only on those above it in this list (`tests/layering.rs` holds the code to it):
//! - [`domain`]: pure rules (routing policy, flags, tiers, credits, pricing, jobs). No I/O. [`sync`]: the lock
//!   policy.
//! - [`store`]: the embedded local store (one SQLite file).
//! - [`crypto`], [`clock`], [`metrics`], [`auth`], [`providers`]: signatures and keys; time; every Prometheus
//!   metric, named once; token verification; the provider HTTP client.
//! - [`config`], [`telemetry`]: typed settings, parsed once; logging set up from them.
//! - [`shared`]: what replicas share through Redis (the connection, claims, the event bus).
//! - [`accounting`]: the durable usage outbox, its flusher, and the sink it delivers to.
//! - [`directus`]: the typed Directus client (the accounting sink among its resources).
//! - [`services`]: caches with freshness rules, standings, the key vault, the gateway, jobs, limits.
//! - [`http`], [`rewrap`], [`import_keys`]: thin axum handlers and the one place errors become responses; the
//!   `rewrap` and `import-keys` commands.
//! - [`app`]: builds every service once from the settings.
//! - [`startup`]: binds and serves.

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
