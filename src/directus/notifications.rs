use reqwest::Method;
use serde_json::json;

use super::{DirectusClient, DirectusError};
use crate::domain::user::UserId;

impl DirectusClient {
    /// An in-app notification; Directus also emails it when the user has email notifications on.
    pub async fn notify(&self, recipient: UserId, subject: &str, message: &str) -> Result<(), DirectusError> {
        let body = json!({"recipient": recipient, "subject": subject, "message": message});
        self.send(self.request(Method::POST, "/notifications").json(&body)).await.map(drop)
    }
}
