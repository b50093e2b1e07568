//! End-to-end tests against a real Directus 12.4.0 with our schema, seed and hook, and the real sidecar
//! binary. `scripts/test.sh` starts Directus and sets `BYOK_E2E_INSTANCE` and `BYOK_E2E_SIDECAR_ADDR`
//! (the address the Directus hook posts webhooks to). Run with `--features e2e`. With `BYOK_E2E_REDIS_URL` set,
//! every sidecar the tests start keeps its shared state in that Redis: test.sh runs the suite both ways.

mod abuse;
mod account;
mod credits;
mod fakes;
mod flows;
mod gateway;
mod harness;
mod jobs;
mod monitoring;
mod outage;
mod payments;
mod providers;
mod routing;
mod seed;
#[path = "../common/streams.rs"]
mod streams;
mod usage_route;
mod vault;
