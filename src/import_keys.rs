//! `byok-bridge import-keys`: moves users' provider keys in from an existing platform. Reads JSON lines
//! `{"user": "<Directus user id>", "provider": "openai" | "anthropic", "key": "sk-..."}` from standard input
//! and stores each sealed through the vault, so Directus only ever receives ciphertext. Reports counts on
//! standard output and one line per refused input line on standard error, by line number and reason: never a
//! key, never the line itself.

use std::io::BufRead;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::directus::DirectusClient;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;
use crate::services::key_vault::{KeyVault, VaultError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    user: String,
    provider: String,
    /// Zeroized once stored; never printed.
    key: SecretString,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Non-blank input lines.
    pub read: usize,
    pub imported: usize,
    /// Lines that are not a valid entry: not JSON of that shape, a user id that is not a UUID, an unknown
    /// provider, a key of the wrong form. Nothing was stored for them.
    pub invalid: usize,
    /// With `--verify`: keys their provider refused. Not stored.
    pub rejected: usize,
    /// Lines for a user Directus does not have, or that could not be stored (Directus unreachable).
    pub failed: usize,
}

/// Imports every line of `input`. `verify`: ask each key's provider first, as a user's own save does.
pub async fn import_keys(
    vault: &KeyVault,
    directus: &DirectusClient,
    input: impl BufRead,
    verify: bool,
) -> ImportReport {
    let mut report = ImportReport::default();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let Ok(line) = line else {
            eprintln!("line {number}: unreadable (not UTF-8?)");
            report.invalid += 1;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        report.read += 1;
        let Some((user, provider, key)) = parse(&line) else {
            eprintln!(r#"line {number}: not {{"user": "<uuid>", "provider": "openai" | "anthropic", "key": "..."}}"#);
            report.invalid += 1;
            continue;
        };
        match directus.user_profile(user).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                eprintln!("line {number}: no user {user} in Directus; not stored");
                report.failed += 1;
                continue;
            }
            Err(error) => {
                eprintln!("line {number}: not stored: {error}");
                report.failed += 1;
                continue;
            }
        }
        let stored =
            if verify { vault.save(user, provider, &key).await } else { vault.import(user, provider, &key).await };
        match stored {
            Ok(_) => report.imported += 1,
            Err(VaultError::Format(reason)) => {
                eprintln!("line {number}: {reason}");
                report.invalid += 1;
            }
            Err(VaultError::RejectedByProvider(provider)) => {
                eprintln!("line {number}: {} rejected this key; not stored", provider.display_name());
                report.rejected += 1;
            }
            Err(error) => {
                eprintln!("line {number}: not stored: {error}");
                report.failed += 1;
            }
        }
    }
    report
}

fn parse(line: &str) -> Option<(UserId, Provider, SecretString)> {
    let entry: Line = serde_json::from_str(line).ok()?;
    Some((UserId::parse(&entry.user).ok()?, entry.provider.parse().ok()?, entry.key))
}
