//! Records left by the file spool of versions before the store (`<DATA_DIR>/spool`: `*.jsonl` batches of JSON
//! lines, `*.json` single records, `rejected/*.json` refused ones) are moved into the outbox at startup and the
//! files removed, so an upgrade loses nothing. A file that does not parse is left where it is, with a warning.

use std::fs;
use std::path::Path;

use super::outbox::Outbox;
use crate::domain::usage::UsageRecord;
use crate::store::StoreError;

/// Moves every record found under `dir` into `outbox`; returns how many. Nothing to do without `dir`.
pub fn import_legacy_spool(dir: &Path, outbox: &Outbox) -> Result<usize, StoreError> {
    let mut imported = 0;
    for (folder, rejected) in [(dir.to_owned(), false), (dir.join("rejected"), true)] {
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if !(name.ends_with(".jsonl") || name.ends_with(".json")) {
                continue;
            }
            let Some(records) = read_records(&path) else {
                tracing::warn!(file = %path.display(), "cannot read an old spool file; left in place");
                continue;
            };
            outbox.import(&records, rejected.then_some("refused by Directus (imported from the old spool)"))?;
            imported += records.len();
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), %error, "imported an old spool file but cannot remove it");
            }
        }
    }
    if imported > 0 {
        tracing::info!(imported, dir = %dir.display(), "usage records moved from the old spool into the store");
    }
    Ok(imported)
}

fn read_records(path: &Path) -> Option<Vec<UsageRecord>> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).ok()).collect()
}
