-- The four "Monitoring & Analytics" queries of the BYOK feature-flags spec (shared/seeds/byok-feature-flags.md),
-- copied verbatim, one per spec code block. scripts/check-monitoring-sql.sh runs them unchanged on PostgreSQL
-- against the tables of directus-schema/snapshot.yaml (and checks this file still matches the spec).

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
WHERE created_at >= NOW() - INTERVAL '30 days'
GROUP BY provider;

-- Internal credit usage in last 30 days
SELECT
  service_type,
  COUNT(*) as requests,
  SUM(cost_cents) / 100.0 as cost_dollars
FROM credit_transactions
WHERE transaction_type = 'deduction'
  AND created_at >= NOW() - INTERVAL '30 days'
GROUP BY service_type;

-- Percentage of requests using BYOK
WITH byok_stats AS (
  SELECT COUNT(*) as byok_count
  FROM api_key_usage
  WHERE created_at >= NOW() - INTERVAL '30 days'
),
internal_stats AS (
  SELECT COUNT(*) as internal_count
  FROM credit_transactions
  WHERE transaction_type = 'deduction'
    AND created_at >= NOW() - INTERVAL '30 days'
)
SELECT
  byok_count,
  internal_count,
  byok_count + internal_count as total,
  ROUND(100.0 * byok_count / (byok_count + internal_count), 2) as byok_percentage
FROM byok_stats, internal_stats;
