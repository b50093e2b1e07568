//! What handlers share: the services [`crate::app`] builds once, behind one `Arc`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::accounting::Outbox;
use crate::auth::AccessTokenVerifier;
use crate::crypto::webhook_signature::WebhookSecret;
use crate::directus::DirectusClient;
use crate::domain::client_address::TrustedProxies;
use crate::domain::user::UserId;
use crate::http::guard::Guard;
use crate::http::routes::pages::AccountPage;
use crate::services::callers::CallerDirectory;
use crate::services::flag_cache::FlagCache;
use crate::services::gateway::{Gateway, KeyEvents};
use crate::services::in_flight::InFlight;
use crate::services::jobs::Jobs;
use crate::services::key_vault::KeyVault;
use crate::services::rate_limit::RateLimiter;
use crate::services::reservations::Reservations;
use crate::services::sessions::Sessions;
use crate::services::sign_in::SignInGuard;
use crate::services::standing::Standings;
use crate::shared::bus::Bus;
use crate::shared::claims::Claims;
use crate::shared::redis::Redis;

/// Shared by every handler; axum clones it for every request, so it is one `Arc` (one reference count to
/// touch) around [`Services`].
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub flags: Arc<FlagCache>,
    pub callers: Arc<CallerDirectory>,
    /// Flags, caller and credits: where routing, the account endpoints and the gateway start.
    pub standings: Arc<Standings>,
    pub key_events: Arc<KeyEvents>,
    pub vault: Arc<KeyVault>,
    pub gateway: Arc<Gateway>,
    /// Durable jobs, run by workers through the same gateway.
    pub jobs: Arc<Jobs>,
    pub reservations: Arc<Reservations>,
    pub directus: DirectusClient,
    /// Usage records waiting for Directus.
    pub outbox: Arc<Outbox>,
    pub tokens: Arc<AccessTokenVerifier>,
    pub sessions: Arc<Sessions>,
    pub webhook_secret: Arc<WebhookSecret>,
    /// SHA-256 of `OPERATOR_TOKEN`: enough to check a presented token, useless to anyone reading memory
    /// dumps of this struct. `None`: operator endpoints are off.
    pub operator_token_digest: Option<[u8; 32]>,
    /// SHA-256 of `FLOWS_TOKEN`: the Directus Flows operation's credential.
    pub flows_token_digest: Option<[u8; 32]>,
    pub vault_configured: bool,
    pub flag_cache_ttl: Duration,
    /// Claims shared by replicas: webhook ids applied, incidents notified.
    pub claims: Arc<dyn Claims>,
    /// `REDIS_URL`'s connection, for readiness.
    pub redis: Option<Arc<Redis>>,
    /// Tells the other replicas of flag and key changes.
    pub bus: Arc<dyn Bus>,
    /// Per-user limits on endpoints that cost the platform a provider call or a Directus aggregate.
    pub key_checks: Arc<RateLimiter>,
    pub key_checks_per_minute: u32,
    pub usage_reads: Arc<RateLimiter>,
    pub usage_reads_per_minute: u32,
    pub job_submits: Arc<RateLimiter>,
    pub job_submits_per_minute: u32,
    pub max_llm_body_bytes: usize,
    pub max_job_body_bytes: usize,
    /// Bounds on every request's body.
    pub guard: Guard,
    /// Requests in flight per signed-in user.
    pub user_requests: Arc<InFlight<UserId>>,
    /// Sign-in attempts, throttled per account and client address.
    pub sign_in: Arc<SignInGuard>,
    pub trusted_proxies: TrustedProxies,
    pub account_page: Arc<AccountPage>,
}

impl FromRef<AppState> for Arc<AccountPage> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.account_page)
    }
}
