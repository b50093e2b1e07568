//! `byok-bridge rewrap`: re-seals every stored key under the current `ENCRYPTION_KEY`, so a previous key can
//! be retired. Prints counts only, never key material; safe to re-run (rows already current are skipped).
//! Rows are fetched by "not sealed by the current key", so keys saved or deleted meanwhile cannot be missed
//! or processed twice, and each row is written only if its ciphertext is still the one read (compare and
//! swap), so a key saved during the run is never replaced by the old one re-sealed.

use std::collections::HashSet;

use futures_util::StreamExt;
use serde::Serialize;

use crate::crypto::envelope::{KeyOwner, Keyring};
use crate::directus::{DirectusClient, DirectusError, SealedRow};
use crate::domain::user::UserId;

const PAGE_SIZE: usize = 500;
/// Rows written at once: each is its own conditional update.
const CONCURRENT_WRITES: usize = 8;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RewrapReport {
    /// Rows read that were not sealed by the current key (a row changed meanwhile and still not sealed by it
    /// is read, and counted, again).
    pub scanned: usize,
    pub rewrapped: usize,
    pub already_current: usize,
    /// Rows that no configured key opens (tampered, or sealed with a key no longer configured).
    pub unusable: usize,
    /// Rows whose key was saved again or deleted between reading and writing: left as the user left them.
    pub changed_meanwhile: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    Directus(#[from] DirectusError),
    #[error("Directus returned rows that were already rewrapped; the writes did not take effect")]
    NoProgress,
}

pub async fn rewrap_all(directus: &DirectusClient, keyring: &Keyring) -> Result<RewrapReport, RewrapError> {
    let total = directus.count_keys().await?;
    let mut report = RewrapReport::default();
    let mut seen = HashSet::new();
    loop {
        let page = directus.sealed_rows_not_by(keyring.current_key_id(), report.unusable, PAGE_SIZE).await?;
        if page.is_empty() {
            break;
        }
        let mut resealed = Vec::new();
        for row in &page {
            if !seen.insert(row.id.clone()) {
                return Err(RewrapError::NoProgress);
            }
            report.scanned += 1;
            match reseal(keyring, row) {
                Some(envelope) => resealed.push((row.id.clone(), row.encrypted_key.clone(), envelope)),
                None => {
                    report.unusable += 1;
                    tracing::warn!(row = %row.id, "stored key cannot be opened by any configured key; left as is");
                }
            }
        }
        let writes = futures_util::stream::iter(resealed)
            .map(|(id, current, envelope)| async move {
                let written = directus.replace_ciphertext_if(&id, &current, &envelope).await;
                (id, written)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect::<Vec<_>>()
            .await;
        for (id, written) in writes {
            if written? {
                report.rewrapped += 1;
            } else {
                // Changed meanwhile: if it is still not sealed by the current key it is read again.
                seen.remove(&id);
                report.changed_meanwhile += 1;
            }
        }
        tracing::info!(?report, "rewrap progress");
    }
    report.already_current = usize::try_from(total).unwrap_or(usize::MAX).saturating_sub(report.scanned);
    Ok(report)
}

fn reseal(keyring: &Keyring, row: &SealedRow) -> Option<String> {
    let owner = KeyOwner { user: UserId::parse(&row.user).ok()?, provider: row.provider.parse().ok()? };
    let plaintext = keyring.open(owner, &row.encrypted_key).ok()?;
    Some(keyring.seal(owner, &plaintext))
}
