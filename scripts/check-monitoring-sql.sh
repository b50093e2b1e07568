#!/usr/bin/env bash
# Prove that the spec's "Monitoring & Analytics" SQL (directus-schema/monitoring.sql, verbatim from
# shared/seeds/byok-feature-flags.md) runs unchanged on PostgreSQL against the tables that
# directus-schema/snapshot.yaml creates in Directus 12.4.0:
#
#   1. PostgreSQL server binaries (installed from Debian when missing; needs root for that),
#   2. a throwaway cluster in a temp dir on a free loopback port, run as a non-root user,
#   3. `directus bootstrap` on it (DB_CLIENT=pg), then `directus schema apply --yes snapshot.yaml`,
#   4. a few rows, then the four queries with `psql -v ON_ERROR_STOP=1`, and checks of their results,
#   5. everything removed on exit (trap), success or not.
#
#   scripts/check-monitoring-sql.sh          # exit 0 = all good; non-zero on any failure
#
# BYOK_SPEC=path overrides where the spec is looked for (default: ../shared/seeds/byok-feature-flags.md
# beside the repo); when found, monitoring.sql must still match its SQL blocks exactly.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"
readonly SNAPSHOT="${REPO_ROOT}/directus-schema/snapshot.yaml"
readonly MONITORING_SQL="${REPO_ROOT}/directus-schema/monitoring.sql"
readonly SPEC="${BYOK_SPEC:-${REPO_ROOT}/../shared/seeds/byok-feature-flags.md}"

START_S="${SECONDS}"
log() { printf '[check-monitoring-sql +%ss] %s\n' "$((SECONDS - START_S))" "$*" >&2; }
die() {
	printf '[check-monitoring-sql] FAILED: %s\n' "$*" >&2
	exit 1
}

work="" pg_bin="" pg_user="" pg_started=false
cleanup() {
	local rc=$?
	if [[ "${pg_started}" == true ]]; then
		as_pg "${pg_bin}/pg_ctl" -D "${work}/pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	fi
	[[ -n "${work}" && -d "${work}" ]] && rm -rf -- "${work}"
	exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 0. the SQL under test ---------------------------------------------------------------------------
extract_spec_sql() {
	awk '/^## Monitoring & Analytics/{f=1;next} /^## /{f=0} f' "$1" |
		awk '/^```sql/{f=1;next} /^```/{if(f)print "";f=0;next} f' | sed '$ d'
}
[[ -f "${MONITORING_SQL}" ]] || die "missing ${MONITORING_SQL}"
if [[ -f "${SPEC}" ]]; then
	# monitoring.sql = a comment header, one blank line, then the spec's blocks verbatim.
	diff <(extract_spec_sql "${SPEC}") <(sed '1,/^$/d' "${MONITORING_SQL}") >&2 ||
		die "directus-schema/monitoring.sql no longer matches the spec's Monitoring & Analytics SQL"
	log "monitoring.sql matches the spec ($(grep -c ';$' "${MONITORING_SQL}") queries)"
else
	log "spec not found at ${SPEC}: using monitoring.sql as is"
fi

# --- 1. PostgreSQL binaries ---------------------------------------------------------------------------
# find_pg_bin / ensure_pg_bin (scripts/lib.sh): newest major version first; installed from Debian when missing.
pg_bin="$(ensure_pg_bin)" || die "no PostgreSQL server binaries (and installing them failed)"
command -v psql >/dev/null 2>&1 || die "psql is missing"
command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is missing"
log "using ${pg_bin}"

# PostgreSQL refuses to run as root: use the postgres account (Debian package), else nobody (lib.sh).
pg_user="$(service_user postgres)"
as_pg() { as_user "${pg_user}" "$@"; }

# --- 2. throwaway cluster -----------------------------------------------------------------------------
install_dir="$("${SCRIPT_DIR}/directus-install.sh" | tail -n 1)"
(cd "${install_dir}" && node -e 'require.resolve("pg")') 2>/dev/null ||
	die "the pg driver is not in ${install_dir} (Directus' optional dependency)"

work="$(mktemp -d /tmp/byok-pgcheck.XXXXXX)"
chmod 711 "${work}"
mkdir -p "${work}/pgdata" "${work}/sock" "${work}/directus/extensions"
chown "${pg_user}" "${work}/pgdata" "${work}/sock" 2>/dev/null || true
chmod 700 "${work}/pgdata"

pg_port="$(free_port)"
log "initdb (as ${pg_user}) and start on 127.0.0.1:${pg_port}"
as_pg "${pg_bin}/initdb" -D "${work}/pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
	>"${work}/initdb.log" 2>&1 || {
	cat "${work}/initdb.log" >&2
	die "initdb failed"
}
pg_started=true
as_pg "${pg_bin}/pg_ctl" -D "${work}/pgdata" -l "${work}/sock/postgres.log" -w -t 60 \
	-o "-p ${pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${work}/sock -c fsync=off" \
	start >/dev/null || {
	tail -n 30 "${work}/sock/postgres.log" >&2 || true
	die "postgres did not start"
}
psql_do() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${pg_port}" -U postgres "$@"; }
psql_do -d postgres -c 'CREATE DATABASE directus' || die "CREATE DATABASE failed"

# --- 3. Directus on PostgreSQL: bootstrap + the snapshot ---------------------------------------------
printf '{"name":"byok-pgcheck","private":true,"version":"0.0.0"}\n' >"${work}/directus/package.json"
cat >"${work}/directus/.env" <<EOF
DB_CLIENT=pg
DB_HOST=127.0.0.1
DB_PORT=${pg_port}
DB_DATABASE=directus
DB_USER=postgres
DB_PASSWORD=unused-trust-auth
SECRET=$(node -e 'process.stdout.write(require("crypto").randomBytes(32).toString("hex"))')
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD=$(node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("base64url"))')
TELEMETRY=false
LOG_LEVEL=warn
EXTENSIONS_PATH=${work}/directus/extensions
PACKAGE_FILE_LOCATION=${work}/directus
EOF
chmod 600 "${work}/directus/.env"
directus_cli() {
	(cd "${work}/directus" && env -i PATH="${PATH}" HOME="${HOME}" LANG="${LANG:-C.UTF-8}" \
		CONFIG_PATH="${work}/directus/.env" node "${install_dir}/node_modules/@directus/api/dist/cli/run.js" "$@")
}
log "directus bootstrap (DB_CLIENT=pg)"
directus_cli bootstrap >"${work}/bootstrap.log" 2>&1 || {
	tail -n 30 "${work}/bootstrap.log" >&2
	die "directus bootstrap on PostgreSQL failed"
}
log "directus schema apply --yes directus-schema/snapshot.yaml"
directus_cli schema apply --yes "${SNAPSHOT}" >"${work}/apply.log" 2>&1 || {
	tail -n 30 "${work}/apply.log" >&2
	die "directus schema apply on PostgreSQL failed"
}

# The columns the queries and the sidecar rely on, with their PostgreSQL types.
columns="$(psql_do -d directus -At -F ' ' -c "
	SELECT table_name || '.' || column_name, data_type, coalesce(numeric_precision::text, '-'),
	       coalesce(numeric_scale::text, '-'), is_nullable
	FROM information_schema.columns
	WHERE table_schema = 'public'
	  AND table_name IN ('feature_flags', 'user_api_keys', 'api_key_usage', 'credit_transactions')
	   OR (table_name = 'directus_users' AND column_name = 'subscription_tier')
	ORDER BY 1")"
expect_column() {
	grep -qx -- "$1" <<<"${columns}" || die "expected column '$1'; PostgreSQL has:
${columns}"
}
expect_column "api_key_usage.estimated_cost_cents numeric 20 9 YES"
expect_column "api_key_usage.created_at timestamp with time zone - - YES"
expect_column "api_key_usage.total_tokens integer 32 0 YES"
expect_column "credit_transactions.cost_cents numeric 20 9 NO"
expect_column "credit_transactions.created_at timestamp with time zone - - YES"
# Usage of internal-credit LLM calls, written by the sidecar on deductions (nullable).
expect_column "credit_transactions.provider character varying - - YES"
expect_column "credit_transactions.model character varying - - YES"
for c in prompt_tokens completion_tokens total_tokens; do
	expect_column "credit_transactions.${c} integer 32 0 YES"
done
expect_column "feature_flags.is_enabled boolean - - NO"
expect_column "feature_flags.id integer 32 0 NO"
expect_column "user_api_keys.id uuid - - NO"
expect_column "user_api_keys.encrypted_key text - - NO"
expect_column "directus_users.subscription_tier character varying - - NO"
uniques="$(psql_do -d directus -At -c "
	SELECT tc.table_name || '.' || kcu.column_name
	FROM information_schema.table_constraints tc
	JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
	WHERE tc.constraint_type = 'UNIQUE' ORDER BY 1")"
for u in feature_flags.key api_key_usage.request_id credit_transactions.request_id; do
	grep -qx "${u}" <<<"${uniques}" || die "expected a UNIQUE constraint on ${u}"
done
log "schema on PostgreSQL: types, NOT NULLs and UNIQUE constraints as expected"

# --- 4. rows, then the spec's queries unchanged -------------------------------------------------------
psql_do -d directus <<'SQL' || die "inserting test rows failed"
INSERT INTO directus_users (id, email, subscription_tier) VALUES
  ('00000000-0000-4000-8000-000000000001', 'premium@example.com', 'premium');
INSERT INTO feature_flags (key, is_enabled, name, description, category, type, min_tier, sort_order) VALUES
  ('byok_only_mode', false, 'BYOK-only mode', 'Forces BYOK-only mode', 'system', 'system', NULL, 3),
  ('byok_enabled', true, 'BYOK enabled', 'Controls whether BYOK UI is visible', 'system', 'premium', 'premium', 1),
  ('byok_uses_internal_credits', false, 'BYOK uses internal credits', 'Credits first?', 'system', 'system', NULL, 2),
  ('byok_other_feature', true, 'Not a system flag', 'Must not be listed', 'feature', 'feature', NULL, 4);
INSERT INTO api_key_usage (id, "user", provider, model, prompt_tokens, completion_tokens, total_tokens,
                           estimated_cost_cents, request_id, created_at) VALUES
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'openai', 'gpt-4o-mini', 10, 20, 30, 1.2500, 'u1', NOW()),
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'openai', 'gpt-4o-mini', 5, 5, 10, 0.7500, 'u2', NOW() - INTERVAL '1 day'),
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'anthropic', 'claude-haiku', 1, 1, 2, 0.1234, 'u3', NOW()),
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'openai', 'old', 1, 1, 1000, 99, 'u4', NOW() - INTERVAL '45 days');
INSERT INTO credit_transactions (id, "user", transaction_type, service_type, cost_cents, description, request_id, created_at) VALUES
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'grant', 'signup_bonus', 1000, 'Signup bonus', 'c1', NOW()),
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'deduction', 'chat_completion', 250, 'chat', 'c2', NOW()),
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'deduction', 'chat_completion', 75, 'old', 'c3', NOW() - INTERVAL '40 days');
SQL

log "running the four queries from monitoring.sql (psql -v ON_ERROR_STOP=1)"
out="$(psql_do -d directus -At -F '|' -f "${MONITORING_SQL}")" || die "a monitoring query failed on PostgreSQL"
printf '%s\n' "${out}" | sed 's/^/    /' >&2

expected="byok_enabled|t|BYOK enabled|Controls whether BYOK UI is visible
byok_uses_internal_credits|f|BYOK uses internal credits|Credits first?
byok_only_mode|f|BYOK-only mode|Forces BYOK-only mode
anthropic|1|2|0.00123400000000000000
openai|2|40|0.02000000000000000000
chat_completion|1|2.5000000000000000
3|1|4|75.00"
# GROUP BY output order is unspecified: the per-provider lines (4-5) are compared as a set.
normalise() {
	local -a l
	mapfile -t l
	printf '%s\n' "${l[@]:0:3}"
	printf '%s\n' "${l[@]:3:2}" | sort
	printf '%s\n' "${l[@]:5}"
}
if [[ "$(normalise <<<"${out}")" != "$(normalise <<<"${expected}")" ]]; then
	printf 'expected:\n%s\n' "${expected}" >&2
	die "the monitoring queries returned unexpected results"
fi
log "OK: all four Monitoring & Analytics queries run unchanged on PostgreSQL and give the expected results"

# --- 5. the safe variant, the troubleshooting query, and an empty install ----------------------------
safe="$(psql_do -d directus -At -F '|' -f "${REPO_ROOT}/directus-schema/monitoring-safe.postgres.sql")" ||
	die "a query of monitoring-safe.postgres.sql failed"
[[ "$(normalise <<<"${safe}")" == "$(normalise <<<"${expected}")" ]] ||
	die "monitoring-safe.postgres.sql answers differently from the spec's queries on the same rows: ${safe}"

psql_do -d directus <<'SQL' || die "inserting troubleshooting rows failed"
INSERT INTO directus_users (id, email, subscription_tier) VALUES
  ('00000000-0000-4000-8000-000000000002', 'has-key@example.com', 'lifetime'),
  ('00000000-0000-4000-8000-000000000003', 'refused-key@example.com', 'lifetime'),
  ('00000000-0000-4000-8000-000000000004', 'free@example.com', 'free');
INSERT INTO user_api_keys (id, "user", provider, encrypted_key, key_hint, is_active, status) VALUES
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000002', 'openai', 'byok:v1:k1:x', 'sk-...a', true, 'active'),
  (gen_random_uuid(), '00000000-0000-4000-8000-000000000003', 'openai', 'byok:v1:k1:y', 'sk-...b', true, 'invalid');
SQL
trouble="$(psql_do -d directus -At -F '|' -f "${REPO_ROOT}/directus-schema/troubleshooting.sql")" ||
	die "troubleshooting.sql failed on PostgreSQL"
expected_trouble="f
00000000-0000-4000-8000-000000000001|premium@example.com|premium
00000000-0000-4000-8000-000000000003|refused-key@example.com|lifetime"
[[ "${trouble}" == "${expected_trouble}" ]] || die "troubleshooting.sql listed: ${trouble}"
log "OK: troubleshooting.sql lists exactly the premium and lifetime users without a usable key"

psql_do -d directus -c 'TRUNCATE api_key_usage, credit_transactions' >/dev/null
if psql_do -d directus -At -f "${MONITORING_SQL}" >/dev/null 2>&1; then
	die "the spec's verbatim queries no longer fail on an empty install; monitoring-safe.postgres.sql may be moot"
fi
empty="$(psql_do -d directus -At -F '|' -f "${REPO_ROOT}/directus-schema/monitoring-safe.postgres.sql")" ||
	die "monitoring-safe.postgres.sql failed on an empty install"
[[ "$(tail -n 1 <<<"${empty}")" == "0|0|0|" ]] || die "on an empty install the BYOK share should be NULL: ${empty}"
log "OK: on an empty install the spec's share divides by zero; monitoring-safe.postgres.sql answers NULL"
