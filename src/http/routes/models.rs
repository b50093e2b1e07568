//! `GET /v1/models`, in OpenAI's list format (what `client.models.list()` reads): the models this user can
//! call right now, given the flags, their plan, their keys and their credits.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::provider::Provider;
use crate::domain::routing::Source;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthenticatedUser;
use crate::services::gateway::Gateway;
use crate::services::standing::Standings;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    object: &'static str,
    data: Vec<Model>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    /// What to send as `model`: the name the price table lists, or `provider/name` when an earlier provider
    /// lists the same name.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Unknown here; `0` keeps the SDKs' type.
    created: i64,
    /// The provider that serves it.
    #[schema(value_type = String, example = "openai")]
    owned_by: Provider,
    /// Who would pay for a call now: `byok` (the user's own key) or `internal` (their credits).
    #[schema(value_type = String, example = "byok")]
    x_byok_source: Source,
}

/// Every listed model of every provider the routing matrix lets this user call now, by provider in catalog
/// order, then by name. A provider without a usable key or credits to pay has no models here.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", security(("directus_token" = [])),
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<ModelList>, ApiError> {
    let standing = standings.of(user).await?;
    let prices = gateway.prices();
    let mut data = Vec::new();
    for provider in Provider::all() {
        let Ok(decision) = standing.decide_any_call(provider) else { continue };
        for name in prices.listed_models(provider) {
            let id = match prices.provider_of(provider.style(), name) {
                Some(first) if first == provider => name.to_owned(),
                _ => format!("{provider}/{name}"),
            };
            data.push(Model { id, object: "model", created: 0, owned_by: provider, x_byok_source: decision.source });
        }
    }
    Ok(Json(ModelList { object: "list", data }))
}
