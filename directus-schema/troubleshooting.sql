-- The spec's troubleshooting check for "Action Required" errors, on this schema (its own query names `users`
-- and `k.user_id`, which Directus does not have). Runs unchanged on PostgreSQL and SQLite; checked by
-- scripts/check-monitoring-sql.sh and tests/e2e.

-- Check if BYOK-only mode is enabled
SELECT is_enabled FROM feature_flags WHERE key = 'byok_only_mode';

-- Premium and lifetime users (active accounts) without a usable key: none active, or only keys the provider
-- refused or that are out of quota, which routing does not use either
SELECT u.id, u.email, u.subscription_tier
FROM directus_users u
LEFT JOIN user_api_keys k
  ON k."user" = u.id
  AND k.is_active
  AND COALESCE(k.status, 'unverified') NOT IN ('invalid', 'quota_exceeded')
WHERE u.subscription_tier IN ('premium', 'lifetime')
  AND u.status = 'active'
  AND k.id IS NULL
ORDER BY u.email;
