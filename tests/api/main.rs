//! HTTP API tests: the real application on a random port, with Directus faked by wiremock.
//! The real-Directus end-to-end tests live in `tests/e2e`.

mod account;
mod calls;
mod credits;
mod errors;
mod flags;
mod gateway;
mod hardening;
mod health;
mod helpers;
mod isolation;
mod jobs;
mod keys;
mod log_secrecy;
mod metrics;
mod rewrap;
mod route;
mod sign_in;
#[path = "../common/streams.rs"]
mod streams;
mod webhooks;
