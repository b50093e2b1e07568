//! `byok-bridge rewrap`: re-seals every stored key under the current `ENCRYPTION_KEY`, so a previous key can
//! be retired. Prints counts only, never key material; safe to re-run (rows already current are skipped).

use serde::Serialize;

use crate::crypto::envelope::{KeyOwner, Keyring};
use crate::directus::{DirectusClient, DirectusError, SealedRow};
use crate::domain::user::UserId;

const PAGE_SIZE: usize = 500;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RewrapReport {
    pub scanned: usize,
    pub rewrapped: usize,
    pub already_current: usize,
    /// Rows that no configured key opens (tampered, or sealed with a key no longer configured).
    pub unusable: usize,
}

pub async fn rewrap_all(directus: &DirectusClient, keyring: &Keyring) -> Result<RewrapReport, DirectusError> {
    let mut report = RewrapReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = directus.sealed_rows_after(after.as_deref(), PAGE_SIZE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let mut resealed = Vec::new();
        for row in &page {
            report.scanned += 1;
            if !keyring.needs_rewrap(&row.encrypted_key) {
                report.already_current += 1;
                continue;
            }
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
    Ok(report)
}

fn reseal(keyring: &Keyring, row: &SealedRow) -> Option<String> {
    let owner = KeyOwner { user: UserId::parse(&row.user).ok()?, provider: row.provider.parse().ok()? };
    let plaintext = keyring.open(owner, &row.encrypted_key).ok()?;
    Some(keyring.seal(owner, &plaintext))
}
