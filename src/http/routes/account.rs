//! What an end user sees of their account: plan, mode, credits, which providers they can use with their own
//! key and how to get one, and the cheapest models for a request they have in mind.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::api_key::KeyStatus;
use crate::domain::error_code::{Code, Coded};
use crate::domain::flags::RoutingMode;
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::recommend::{self, MAX_OUTPUT_TOKENS};
use crate::domain::routing::{self, ByokAccessDenied, Source};
use crate::domain::tier::SubscriptionTier;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBody, RequestBody};
use crate::http::purchase_link::PurchaseLink;
use crate::http::routes::usage::prompt_size;
use std::sync::Arc;

use crate::directus::DirectusClient;
use crate::services::gateway::Gateway;
use crate::services::key_vault::KeySummary;
use crate::services::key_vault::KeyVault;
use crate::services::standing::CallContext;
use crate::services::standing::Standings;

/// A reason in the same `{code, message}` shape as an error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reason {
    code: &'static str,
    message: String,
}

impl Reason {
    fn new(code: Code, message: impl Into<String>) -> Reason {
        Reason { code: code.as_str(), message: message.into() }
    }

    fn denied(denied: ByokAccessDenied) -> Reason {
        Reason::new(denied.code(), denied.message())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUser {
    #[schema(value_type = String, example = "4600a673-878b-4e25-bff2-6b613a33852f")]
    id: crate::domain::user::UserId,
    email: Option<String>,
    #[schema(value_type = String, example = "premium")]
    tier: SubscriptionTier,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ByokAccess {
    /// The platform has bring-your-own-key switched on.
    enabled: bool,
    /// This user may save and use their own keys.
    allowed: bool,
    reason: Option<Reason>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Credits {
    /// The ledger balance as last read from Directus.
    #[schema(value_type = f64)]
    balance_cents: Cents,
    /// What can be spent now: the balance less calls in flight and costs the ledger does not show yet.
    #[schema(value_type = f64)]
    available_cents: Cents,
    /// Where to buy more (`CREDITS_PURCHASE_URL`); absent when the platform sells none.
    #[serde(skip_serializing_if = "Option::is_none")]
    purchase_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    user: AccountUser,
    #[schema(value_type = String, example = "byok_first")]
    mode: RoutingMode,
    byok: ByokAccess,
    credits: Credits,
    /// Directus is unreachable: this rests on the last known flags or profile.
    stale: bool,
}

/// The signed-in user's account: plan, routing mode in force, bring-your-own-key access and credits.
#[utoipa::path(get, path = "/v1/account", tag = "account", operation_id = "get_account", security(("directus_token" = [])),
    responses((status = 200, body = Account), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn account(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    State(directus): State<DirectusClient>,
    State(purchase): State<PurchaseLink>,
) -> Result<Json<Account>, ApiError> {
    let (standing, email) = tokio::join!(standings.of(user), directus.user_email(user));
    let standing = standing?;
    let (CallContext { flags, caller }, available) = (&standing.context, standing.available);
    let access = routing::byok_access(&flags.snapshot.flags, caller.profile.tier);
    Ok(Json(Account {
        // The e-mail is a nicety: a Directus hiccup reading it does not fail the page.
        user: AccountUser { id: user, email: email.ok().flatten(), tier: caller.profile.tier },
        mode: flags.snapshot.flags.mode(),
        byok: ByokAccess {
            enabled: flags.snapshot.flags.byok_enabled,
            allowed: access.is_ok(),
            reason: access.err().map(Reason::denied),
        },
        credits: Credits {
            balance_cents: caller.profile.ledger.balance,
            available_cents: available,
            purchase_url: purchase.0.as_deref().map(str::to_owned),
        },
        stale: flags.stale || caller.stale,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ByokReadiness {
    /// A call to this provider can use the user's own key right now.
    usable_now: bool,
    /// Why not: `byok_disabled`, `premium_required`, `byok_not_configured`, `no_key`, `key_invalid`,
    /// `key_quota_exceeded`.
    reason: Option<Reason>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderInfo {
    #[schema(value_type = String, example = "openai")]
    provider: Provider,
    name: &'static str,
    signup_url: &'static str,
    keys_url: &'static str,
    billing_url: &'static str,
    key_format: &'static str,
    byok: ByokReadiness,
    /// The saved key, masked; absent when there is none or the user may not manage keys.
    #[schema(value_type = Option<Object>)]
    key: Option<KeySummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Providers {
    providers: Vec<ProviderInfo>,
}

/// Onboarding facts per provider (where to sign up, create a key, add credit; what a key looks like) and
/// whether this user can use their own key with it now, and why not.
#[utoipa::path(get, path = "/v1/providers", tag = "account", security(("directus_token" = [])),
    responses((status = 200, body = Providers), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn providers(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    State(vault): State<Arc<KeyVault>>,
) -> Result<Json<Providers>, ApiError> {
    let CallContext { flags, caller } = standings.context(user).await?;
    let access = routing::byok_access(&flags.snapshot.flags, caller.profile.tier);
    // Keys are read fresh (not from the routing cache): this is the page that just saved one.
    let keys = match access {
        Ok(()) => vault.list(user).await?,
        Err(_) => Vec::new(),
    };
    let providers = Provider::all()
        .map(|provider| {
            let key = keys.iter().find(|k| k.provider == provider && k.is_active).cloned();
            let reason = match (access, vault.is_configured(), key.as_ref().map(|k| k.status)) {
                (Err(denied), _, _) => Some(Reason::denied(denied)),
                (Ok(()), false, _) => Some(Reason::new(
                    Code::ByokNotConfigured,
                    "Your own keys cannot be used on this platform right now.",
                )),
                (Ok(()), true, None) => {
                    Some(Reason::new(Code::NoKey, format!("Add your {} API key to use it.", provider.display_name())))
                }
                (Ok(()), true, Some(KeyStatus::Invalid)) => Some(Reason::new(
                    Code::KeyInvalid,
                    format!("{} rejected your key. Create a new one and save it.", provider.display_name()),
                )),
                (Ok(()), true, Some(KeyStatus::QuotaExceeded)) => Some(Reason::new(
                    Code::KeyQuotaExceeded,
                    format!(
                        "Your {} account is out of quota. Add credit: the key is checked again automatically, or verify it now.",
                        provider.display_name()
                    ),
                )),
                (Ok(()), true, Some(_)) => None,
            };
            ProviderInfo {
                provider,
                name: provider.display_name(),
                signup_url: provider.signup_url(),
                keys_url: provider.key_page_url(),
                billing_url: provider.billing_url(),
                key_format: provider.key_format_hint(),
                byok: ByokReadiness { usable_now: reason.is_none(), reason },
                key,
            }
        })
        .collect();
    Ok(Json(Providers { providers }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendationRequest {
    /// The prompt text, or `prompt_tokens` if the caller knows the count.
    prompt: Option<String>,
    prompt_tokens: Option<u64>,
    /// The answer's length in tokens (default 500).
    max_output_tokens: Option<u64>,
    /// How many models (1-20, default 5).
    limit: Option<usize>,
}

impl RequestBody for RecommendationRequest {
    const EXPECTED: &'static str = r#"{"prompt": "..." or "prompt_tokens": 123, "max_output_tokens": 500, "limit": 5}"#;
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Price {
    input_per_mtok_usd: f64,
    output_per_mtok_usd: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendedModel {
    #[schema(value_type = String, example = "openai")]
    provider: Provider,
    model: String,
    /// Who would pay: `byok` (the user's own key) or `internal` (their credits).
    #[schema(value_type = String, example = "byok")]
    source: Source,
    /// From the same table and estimate as `/v1/estimate` and the gateway's credit hold.
    #[schema(value_type = f64)]
    estimated_cost_cents: Cents,
    price: Price,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendations {
    prompt_tokens: u64,
    max_output_tokens: u64,
    recommendations: Vec<RecommendedModel>,
    price_table_version: String,
}

const DEFAULT_OUTPUT_TOKENS: u64 = 500;

/// The cheapest general-purpose text models for a request of this size, among the providers this user can
/// use right now (own key or credits), cheapest first.
#[utoipa::path(post, path = "/v1/recommendations", tag = "account", security(("directus_token" = [])),
    request_body = RecommendationRequest,
    responses((status = 200, body = Recommendations), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn recommendations(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    State(gateway): State<Arc<Gateway>>,
    JsonBody(request): JsonBody<RecommendationRequest>,
) -> Result<Json<Recommendations>, ApiError> {
    let prompt_tokens = prompt_size(request.prompt_tokens, request.prompt.as_deref())?;
    let output_tokens = request.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
    if !(1..=MAX_OUTPUT_TOKENS).contains(&output_tokens) {
        return Err(ApiError::new(Code::InvalidRequest, "max_output_tokens must be from 1 to 1000000."));
    }
    let limit = request.limit.unwrap_or(5);
    if !(1..=20).contains(&limit) {
        return Err(ApiError::new(Code::InvalidRequest, "limit must be from 1 to 20."));
    }
    let standing = standings.of(user).await?;
    // The same decision a call would get now; providers the user cannot use at all are left out.
    let usable: Vec<(Provider, Source)> = Provider::all()
        .filter_map(|provider| Some((provider, standing.decide_any_call(provider).ok()?.source)))
        .collect();
    let prices = gateway.prices();
    let recommendations = recommend::cheapest(prices, &usable, prompt_tokens, output_tokens, limit)
        .into_iter()
        .map(|r| RecommendedModel {
            provider: r.provider,
            model: r.model,
            source: r.source,
            estimated_cost_cents: r.estimated_cost,
            price: Price {
                input_per_mtok_usd: r.price.input_per_mtok_usd(),
                output_per_mtok_usd: r.price.output_per_mtok_usd(),
            },
        })
        .collect();
    Ok(Json(Recommendations {
        prompt_tokens,
        max_output_tokens: output_tokens,
        recommendations,
        price_table_version: prices.version().to_owned(),
    }))
}
