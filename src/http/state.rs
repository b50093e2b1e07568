//! What handlers share: the services [`crate::app`] builds once, behind one `Arc`. A handler asks for the
//! pieces it uses by type (`State<Arc<Gateway>>`), never for the whole.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::accounting::Outbox;
use crate::crypto::webhook_signature::WebhookSecret;
use crate::directus::DirectusClient;
use crate::http::extract::{Access, LlmBodyLimit};
use crate::http::guard::Guard;
use crate::http::limits::EndpointLimits;
use crate::http::purchase_link::PurchaseLink;
use crate::http::routes::pages::AccountPage;
use crate::services::call_log::CallLog;
use crate::services::callers::CallerDirectory;
use crate::services::flag_cache::FlagCache;
use crate::services::gateway::{Gateway, KeyEvents};
use crate::services::jobs::Jobs;
use crate::services::key_vault::KeyVault;
use crate::services::payments::Payments;
use crate::services::reservations::Reservations;
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

    /// What the router is built with: body limits and the guard.
    pub fn services(&self) -> &Services {
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
    /// Each user's recent calls, failed ones included.
    pub calls: Arc<CallLog>,
    /// Durable jobs, run by workers through the same gateway.
    pub jobs: Arc<Jobs>,
    pub reservations: Arc<Reservations>,
    pub directus: DirectusClient,
    /// Usage records waiting for Directus.
    pub outbox: Arc<Outbox>,
    /// Who may call: token checks, the operator and Flows credentials, client addresses, requests in flight.
    pub access: Arc<Access>,
    pub webhook_secret: Arc<WebhookSecret>,
    /// Claims shared by replicas: webhook ids applied, incidents notified.
    pub claims: Arc<dyn Claims>,
    /// `REDIS_URL`'s connection, for readiness.
    pub redis: Option<Arc<Redis>>,
    /// Tells the other replicas of flag and key changes.
    pub bus: Arc<dyn Bus>,
    /// Per-user limits on endpoints that cost the platform a provider call or a Directus aggregate.
    pub limits: Arc<EndpointLimits>,
    /// Sign-in attempts, throttled per account and client address.
    pub sign_in: Arc<SignInGuard>,
    /// Credits bought through Stripe; `None` without `STRIPE_WEBHOOK_SECRET`.
    pub payments: Option<Arc<Payments>>,
    /// `CREDITS_PURCHASE_URL`, for refusals and the account page.
    pub purchase_link: PurchaseLink,
    pub account_page: Arc<AccountPage>,
    pub llm_body_limit: LlmBodyLimit,
    pub max_job_body_bytes: usize,
    /// Bounds on every request's body.
    pub guard: Guard,
}

/// Each piece a handler may ask for, taken from the one shared state.
macro_rules! pieces {
    ($($field:ident: $piece:ty),* $(,)?) => {
        $(
            impl FromRef<AppState> for $piece {
                fn from_ref(state: &AppState) -> Self {
                    state.0.$field.clone()
                }
            }
        )*
    };
}

pieces! {
    flags: Arc<FlagCache>,
    callers: Arc<CallerDirectory>,
    standings: Arc<Standings>,
    key_events: Arc<KeyEvents>,
    vault: Arc<KeyVault>,
    gateway: Arc<Gateway>,
    calls: Arc<CallLog>,
    jobs: Arc<Jobs>,
    reservations: Arc<Reservations>,
    directus: DirectusClient,
    outbox: Arc<Outbox>,
    access: Arc<Access>,
    webhook_secret: Arc<WebhookSecret>,
    claims: Arc<dyn Claims>,
    redis: Option<Arc<Redis>>,
    bus: Arc<dyn Bus>,
    limits: Arc<EndpointLimits>,
    sign_in: Arc<SignInGuard>,
    payments: Option<Arc<Payments>>,
    purchase_link: PurchaseLink,
    account_page: Arc<AccountPage>,
    llm_body_limit: LlmBodyLimit,
}
