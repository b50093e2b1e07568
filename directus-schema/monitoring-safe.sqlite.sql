-- monitoring-safe.postgres.sql for Directus on SQLite, which stores timestamps as milliseconds since 1970
-- and booleans as 0/1. Run with: sqlite3 data.db < monitoring-safe.sqlite.sql (tested by tests/e2e).

SELECT key, is_enabled, name, description
FROM feature_flags
WHERE category = 'system' AND key LIKE 'byok%'
ORDER BY sort_order;

-- BYOK usage in last 30 days
SELECT
  provider,
  COUNT(*) as requests,
  SUM(total_tokens) as tokens,
  SUM(estimated_cost_cents) / 100.0 as cost_dollars
FROM api_key_usage
WHERE created_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 30 * 86400) * 1000
GROUP BY provider;

-- Internal credit usage in last 30 days
SELECT
  service_type,
  COUNT(*) as requests,
  SUM(cost_cents) / 100.0 as cost_dollars
FROM credit_transactions
WHERE transaction_type = 'deduction'
  AND created_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 30 * 86400) * 1000
GROUP BY service_type;

-- Percentage of requests using BYOK (NULL when there were none)
WITH byok_stats AS (
  SELECT COUNT(*) as byok_count
  FROM api_key_usage
  WHERE created_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 30 * 86400) * 1000
),
internal_stats AS (
  SELECT COUNT(*) as internal_count
  FROM credit_transactions
  WHERE transaction_type = 'deduction'
    AND created_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 30 * 86400) * 1000
)
SELECT
  byok_count,
  internal_count,
  byok_count + internal_count as total,
  ROUND(100.0 * byok_count / NULLIF(byok_count + internal_count, 0), 2) as byok_percentage
FROM byok_stats, internal_stats;
