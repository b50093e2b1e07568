//! Pure business rules: no I/O, no clocks, no HTTP. Everything here is unit-testable in isolation.

pub mod api_key;
pub mod budget;
pub mod call;
pub mod client_address;
pub mod credit_book;
pub mod credits;
pub mod error_code;
pub mod flags;
pub mod jobs;
pub mod llm;
pub mod model_chains;
pub mod money;
pub mod payment;
pub mod pricing;
pub mod provider;
pub mod provider_key;
pub mod recommend;
pub mod retry;
pub mod routing;
pub mod sign_in;
pub mod tier;
pub mod upstream;
pub mod usage;
pub mod user;
