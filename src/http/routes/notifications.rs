//! The user's own Directus notifications (key incidents), read through the sidecar: end users have no
//! Directus role, so they cannot read them there. Only the verified token decides whose they are.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::directus::DirectusClient;
use crate::directus::Notification;
use crate::domain::error_code::Code;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthenticatedUser;

#[derive(Debug, Serialize, ToSchema)]
pub struct Notifications {
    /// Newest first, at most 50.
    notifications: Vec<Notification>,
}

/// The signed-in user's notifications.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", operation_id = "list_notifications", security(("directus_token" = [])),
    responses((status = 200, body = Notifications), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(directus): State<DirectusClient>,
) -> Result<Json<Notifications>, ApiError> {
    let notifications = directus.user_notifications(user, 50).await.map_err(ApiError::Directus)?;
    Ok(Json(Notifications { notifications }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkedRead {
    id: u64,
    read: bool,
}

/// Marks one of the user's notifications read (archived in Directus). Another user's id is a 404.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications", operation_id = "mark_notification_read", security(("directus_token" = [])),
    params(("id" = u64, Path, description = "The notification's id")),
    responses((status = 200, body = MarkedRead), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mark_read(
    AuthenticatedUser(user): AuthenticatedUser,
    State(directus): State<DirectusClient>,
    Path(raw): Path<String>,
) -> Result<Json<MarkedRead>, ApiError> {
    let not_found = || ApiError::from(Code::NotificationNotFound);
    let id: u64 = raw.parse().map_err(|_| not_found())?;
    match directus.mark_notification_read(user, id).await.map_err(ApiError::Directus)? {
        true => Ok(Json(MarkedRead { id, read: true })),
        false => Err(not_found()),
    }
}
