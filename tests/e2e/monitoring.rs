//! The monitoring and troubleshooting SQL shipped in `directus-schema/` run on a real Directus 12.4.0 SQLite
//! database (a copy of the test instance's, so Directus itself is not disturbed). PostgreSQL is checked by
//! `scripts/check-monitoring-sql.sh`.

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::harness::{Instance, serial};

/// Every statement of a `.sql` file, each answered as rows of text (NULL as "NULL").
fn run_file(db: &Connection, file: &str) -> Vec<Vec<Vec<String>>> {
    let path = format!("{}/directus-schema/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let sql: String = text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    sql.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|statement| {
            let mut prepared = db.prepare(statement).unwrap_or_else(|e| panic!("{file}: {e}\n{statement}"));
            let columns = prepared.column_count();
            let mut rows = prepared.query([]).unwrap();
            let mut out = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                out.push(
                    (0..columns)
                        .map(|i| match row.get_ref(i).unwrap() {
                            ValueRef::Null => "NULL".to_owned(),
                            ValueRef::Integer(n) => n.to_string(),
                            ValueRef::Real(x) => x.to_string(),
                            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                            ValueRef::Blob(_) => "<blob>".to_owned(),
                        })
                        .collect(),
                );
            }
            out
        })
        .collect()
}

/// A file removed when the test ends, pass or fail.
struct Scratch(String);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn copy_of_the_database(instance: &Instance) -> (Connection, Scratch) {
    let copy = Scratch(format!("{}/monitoring-copy-{}.db", instance.dir, uuid::Uuid::new_v4()));
    let source = Connection::open(format!("{}/data.db", instance.dir)).unwrap();
    source.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    source.execute("VACUUM INTO ?1", [copy.0.as_str()]).unwrap();
    (Connection::open(&copy.0).unwrap(), copy)
}

#[tokio::test]
async fn the_safe_monitoring_sql_and_the_troubleshooting_query_run_on_sqlite_also_on_an_empty_install() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let (db, _copy) = copy_of_the_database(&instance);
    let now_ms = "CAST(strftime('%s', 'now') AS INTEGER) * 1000";
    db.execute_batch(
        "DELETE FROM api_key_usage; DELETE FROM credit_transactions;
         INSERT INTO directus_users (id, email, subscription_tier, status) VALUES
           ('00000000-0000-4000-8000-0000000000a1', 'sql-no-key@example.com', 'premium', 'active'),
           ('00000000-0000-4000-8000-0000000000a2', 'sql-has-key@example.com', 'premium', 'active'),
           ('00000000-0000-4000-8000-0000000000a3', 'sql-refused-key@example.com', 'lifetime', 'active'),
           ('00000000-0000-4000-8000-0000000000a4', 'sql-free@example.com', 'free', 'active');
         INSERT INTO user_api_keys (id, user, provider, encrypted_key, key_hint, is_active, status) VALUES
           ('k-a2', '00000000-0000-4000-8000-0000000000a2', 'openai', 'byok:v1:k:x', 'sk-...a', 1, 'active'),
           ('k-a3', '00000000-0000-4000-8000-0000000000a3', 'openai', 'byok:v1:k:y', 'sk-...b', 1, 'invalid');",
    )
    .unwrap();

    // An empty install: no requests yet, so no share (not a division by zero).
    let empty = run_file(&db, "monitoring-safe.sqlite.sql");
    let flags: Vec<&str> = empty[0].iter().map(|row| row[0].as_str()).collect();
    assert_eq!(flags, ["byok_enabled", "byok_uses_internal_credits", "byok_only_mode"]);
    assert!(empty[1].is_empty() && empty[2].is_empty());
    assert_eq!(empty[3], [["0", "0", "0", "NULL"]]);

    db.execute_batch(&format!(
        "INSERT INTO api_key_usage (id, user, provider, model, prompt_tokens, completion_tokens, total_tokens,
                                    estimated_cost_cents, request_id, created_at) VALUES
           ('u1', '00000000-0000-4000-8000-0000000000a2', 'openai', 'gpt-4o-mini', 10, 20, 30, 1.25, 'sql-u1', {now_ms}),
           ('u2', '00000000-0000-4000-8000-0000000000a2', 'openai', 'gpt-4o-mini', 5, 5, 10, 0.75, 'sql-u2', {now_ms}),
           ('u3', '00000000-0000-4000-8000-0000000000a2', 'openai', 'old', 1, 1, 1000, 99, 'sql-u3', {now_ms} - 45 * 86400000);
         INSERT INTO credit_transactions (id, user, transaction_type, service_type, cost_cents, request_id, created_at) VALUES
           ('c1', '00000000-0000-4000-8000-0000000000a1', 'deduction', 'openai.chat_completions', 250, 'sql-c1', {now_ms}),
           ('c2', '00000000-0000-4000-8000-0000000000a1', 'grant', 'bonus', 1000, 'sql-c2', {now_ms});"
    ))
    .unwrap();
    let answers = run_file(&db, "monitoring-safe.sqlite.sql");
    assert_eq!(answers[1], [["openai", "2", "40", "0.02"]], "the 45-day-old row is outside the window");
    assert_eq!(answers[2], [["openai.chat_completions", "1", "2.5"]]);
    assert_eq!(answers[3], [["2", "1", "3", "66.67"]]);

    let trouble = run_file(&db, "troubleshooting.sql");
    let listed: Vec<&str> = trouble[1].iter().map(|row| row[1].as_str()).collect();
    assert!(
        listed.contains(&"sql-no-key@example.com") && listed.contains(&"sql-refused-key@example.com"),
        "{listed:?}"
    );
    assert!(!listed.contains(&"sql-has-key@example.com") && !listed.contains(&"sql-free@example.com"), "{listed:?}");
}
