//! One file per resource; handlers stay thin and delegate to services and the domain.

pub mod account;
pub mod auth;
pub mod budget;
pub mod calls;
pub mod flags;
pub mod gateway;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod notifications;
pub mod openapi;
pub mod pages;
pub mod preflight;
pub mod route;
pub mod spend;
pub mod status;
pub mod usage;
pub mod webhooks;
