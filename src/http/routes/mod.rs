//! One file per resource; handlers stay thin and delegate to services and the domain.

pub mod flags;
pub mod gateway;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod route;
pub mod usage;
pub mod webhooks;
