//! The BYOK-only pre-flight for operators (the spec: "check premium users have keys before BYOK-only mode"):
//! who would lose AI features if BYOK-only mode were switched on now, and a notice to each of them, once.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::directus::EntitledUser;
use crate::domain::user::UserId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::Operator;
use std::sync::Arc;

use crate::directus::DirectusClient;
use crate::services::flag_cache::FlagCache;
use crate::shared::claims::Claims;

/// A user is told once per this long, however often an operator presses the button.
const NOTICE_TTL: Duration = Duration::from_secs(30 * 86_400);

const SUBJECT: &str = "Add your own AI provider key";
const MESSAGE: &str = "AI features on this platform will soon run only with your own provider API key. Add an \
                       OpenAI or Anthropic key under \"Your API keys\" on your account page to keep using them.";

#[derive(Debug, Serialize, ToSchema)]
pub struct Preflight {
    /// Whether BYOK-only mode is on right now.
    byok_only_mode: bool,
    /// Active premium and lifetime users without a key routing can use, by e-mail.
    users_without_usable_key: Vec<EntitledUser>,
    /// How many active premium and lifetime users there are in all.
    entitled_users: usize,
}

async fn preflight_list(directus: &DirectusClient, flags: &FlagCache) -> Result<Preflight, ApiError> {
    let (users, with_keys, flags) =
        tokio::join!(directus.entitled_users(), directus.users_with_usable_keys(), flags.current());
    let (users, with_keys) = (users.map_err(ApiError::Directus)?, with_keys.map_err(ApiError::Directus)?);
    let entitled_users = users.len();
    let without: Vec<EntitledUser> = users.into_iter().filter(|u| !with_keys.contains(&u.id)).collect();
    Ok(Preflight {
        byok_only_mode: flags?.snapshot.flags.byok_only_mode,
        users_without_usable_key: without,
        entitled_users,
    })
}

/// Who would lose AI features if BYOK-only mode were on.
#[utoipa::path(get, path = "/v1/admin/preflight", tag = "operations", operation_id = "preflight", security(("operator_token" = [])),
    responses((status = 200, body = Preflight), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn show(
    _: Operator,
    State(directus): State<DirectusClient>,
    State(flags): State<Arc<FlagCache>>,
) -> Result<Json<Preflight>, ApiError> {
    Ok(Json(preflight_list(&directus, &flags).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Notified {
    /// Notified now (a Directus notification; e-mailed to those with e-mail notifications on).
    notified: usize,
    /// Told within the last 30 days already: not told again.
    already_notified: usize,
    /// Could not be notified (Directus refused or was unreachable); pressing again retries them.
    failed: usize,
}

/// Tells every user on the pre-flight list to add a key, each at most once per 30 days (across replicas).
#[utoipa::path(post, path = "/v1/admin/preflight/notify", tag = "operations", operation_id = "preflight_notify", security(("operator_token" = [])),
    responses((status = 200, body = Notified), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn notify(
    _: Operator,
    State(directus): State<DirectusClient>,
    State(flags): State<Arc<FlagCache>>,
    State(claims): State<Arc<dyn Claims>>,
) -> Result<Json<Notified>, ApiError> {
    let list = preflight_list(&directus, &flags).await?;
    let mut outcome = Notified { notified: 0, already_notified: 0, failed: 0 };
    for user in &list.users_without_usable_key {
        let Ok(id) = UserId::parse(&user.id) else { continue };
        let claim = format!("preflight:{id}");
        if !claims.claim(&claim, NOTICE_TTL).await {
            outcome.already_notified += 1;
            continue;
        }
        match directus.notify(id, SUBJECT, MESSAGE).await {
            Ok(()) => outcome.notified += 1,
            Err(error) => {
                claims.release(&claim).await;
                tracing::warn!(user = %id, %error, "pre-flight notice not delivered");
                outcome.failed += 1;
            }
        }
    }
    tracing::info!(
        notified = outcome.notified,
        already = outcome.already_notified,
        failed = outcome.failed,
        "pre-flight notices sent"
    );
    Ok(Json(outcome))
}
