//! `byok-bridge rewrap`: re-seals every stored key under the current `ENCRYPTION_KEY`, so a previous key can
//! be retired. Prints counts only, never key material; safe to re-run (rows already current are skipped).
//! Rows are fetched by "not sealed by the current key", so keys saved or deleted meanwhile cannot be missed
//! or processed twice.

use std::collections::HashSet;

use serde::Serialize;

use crate::crypto::envelope::{KeyOwner, Keyring};
use crate::directus::{DirectusClient, DirectusError, SealedRow};
use crate::domain::user::UserId;

const PAGE_SIZE: usize = 500;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RewrapReport {
    /// Rows not sealed by the current key when they were looked at.
    pub scanned: usize,
    pub rewrapped: usize,
    pub already_current: usize,
    /// Rows that no configured key opens (tampered, or sealed with a key no longer configured).
    pub unusable: usize,
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
                Some(envelope) => resealed.push((row.id.clone(), envelope)),
                None => {
                    report.unusable += 1;
                    tracing::warn!(row = %row.id, "stored key cannot be opened by any configured key; left as is");
                }
            }
        }
        if !resealed.is_empty() {
            directus.replace_ciphertexts(&resealed).await?;
            report.rewrapped += resealed.len();
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
