//! `directus_notifications`: in-app notices to users (Directus e-mails them too, to users with e-mail
//! notifications on, when its mailer is configured). The sidecar writes key incidents and reads a user's own
//! for them; every read and update is filtered on the recipient, so one user never sees another's.

use reqwest::Method;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{DirectusClient, DirectusError};
use crate::domain::user::UserId;

/// A notification as its recipient sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Notification {
    pub id: u64,
    pub subject: String,
    pub message: Option<String>,
    pub timestamp: Option<String>,
    /// Directus keeps read ones as `archived`.
    pub read: bool,
}

#[derive(Deserialize)]
struct Row {
    id: u64,
    subject: String,
    message: Option<String>,
    timestamp: Option<String>,
    status: Option<String>,
}

impl DirectusClient {
    /// An in-app notification; Directus also emails it when the user has email notifications on.
    pub async fn notify(&self, recipient: UserId, subject: &str, message: &str) -> Result<(), DirectusError> {
        let body = json!({"recipient": recipient, "subject": subject, "message": message});
        self.send(self.request(Method::POST, "/notifications").json(&body)).await.map(drop)
    }

    /// The user's newest notifications.
    pub async fn user_notifications(&self, user: UserId, limit: u32) -> Result<Vec<Notification>, DirectusError> {
        let request = self.request(Method::GET, "/notifications").query(&[
            ("fields", "id,subject,message,timestamp,status"),
            ("filter[recipient][_eq]", &user.to_string()),
            ("sort", "-timestamp"),
            ("limit", &limit.to_string()),
        ]);
        let rows: Vec<Row> = self.data(request).await?;
        Ok(rows
            .into_iter()
            .map(|r| Notification {
                id: r.id,
                subject: r.subject,
                message: r.message,
                timestamp: r.timestamp,
                read: r.status.as_deref() == Some("archived"),
            })
            .collect())
    }

    /// Marks notification `id` read if it is the user's: one update by query, so the ownership check and the
    /// change are one step. False when the user has no such notification.
    pub async fn mark_notification_read(&self, user: UserId, id: u64) -> Result<bool, DirectusError> {
        let body = json!({
            "query": {"filter": {"id": {"_eq": id}, "recipient": {"_eq": user}}},
            "data": {"status": "archived"},
        });
        let request = self.request(Method::PATCH, "/notifications").query(&[("fields", "id")]).json(&body);
        let updated: Vec<IgnoredAny> = self.data(request).await?;
        Ok(!updated.is_empty())
    }
}
