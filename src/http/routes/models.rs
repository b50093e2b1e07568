//! `GET /v1/models`: the models this user can call right now, given the flags, their plan, their keys and
//! their credits. In OpenAI's list format (what `openai`'s `client.models.list()` reads), or in Anthropic's
//! when the request says `anthropic-version` as the Anthropic SDKs do (then only the messages API's models).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::provider::{ApiStyle, Provider};
use crate::domain::routing::Source;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthenticatedUser;
use crate::services::gateway::Gateway;
use crate::services::standing::Standings;

/// Anthropic's shape of a model list.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnthropicModelList {
    data: Vec<AnthropicModel>,
    /// Always `false`: the whole list is one page.
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnthropicModel {
    /// Always `model`.
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    display_name: String,
    /// Unknown here: the epoch keeps the SDKs' type.
    created_at: &'static str,
}

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
    responses((status = 200, description = "OpenAI's list format, or Anthropic's (`AnthropicModelList`) when the request carries `anthropic-version`", body = ModelList),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let standing = standings.of(user).await?;
    let prices = gateway.prices();
    let anthropic = headers.contains_key("anthropic-version");
    let mut models = Vec::new();
    for provider in Provider::all().filter(|p| !anthropic || p.style() == ApiStyle::Anthropic) {
        let Ok(decision) = standing.decide_any_call(provider) else { continue };
        for name in prices.listed_models(provider) {
            let id = match prices.provider_of(provider.style(), name) {
                Some(first) if first == provider => name.to_owned(),
                _ => format!("{provider}/{name}"),
            };
            models.push((id, provider, decision.source));
        }
    }
    if anthropic {
        let (first_id, last_id) = (models.first().map(|m| m.0.clone()), models.last().map(|m| m.0.clone()));
        let data = models
            .into_iter()
            .map(|(id, ..)| AnthropicModel { kind: "model", display_name: id.clone(), id, created_at: EPOCH })
            .collect();
        return Ok(Json(AnthropicModelList { data, has_more: false, first_id, last_id }).into_response());
    }
    let data = models
        .into_iter()
        .map(|(id, owned_by, x_byok_source)| Model { id, object: "model", created: 0, owned_by, x_byok_source })
        .collect();
    Ok(Json(ModelList { object: "list", data }).into_response())
}

const EPOCH: &str = "1970-01-01T00:00:00Z";
