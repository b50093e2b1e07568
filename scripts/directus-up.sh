#!/usr/bin/env bash
# Create, start and seed a throwaway Directus 12.4.0 (SQLite, or PostgreSQL) for byok-bridge development and tests.
#
#   scripts/directus-up.sh --dir DIR --port PORT --bridge-url URL [--webhook-secret whsec_...] [--no-template]
#                          [--db-client sqlite3|pg --db-url postgres://USER[:PASSWORD]@HOST:PORT/DATABASE]
#                          [--redis redis://HOST:PORT/DB] [--smtp HOST:PORT]
#       Fresh instance in DIR (DIR must be empty, missing, or a previous instance made by this script,
#       which is stopped and wiped): bootstrap, start in the background, apply directus-schema/snapshot.yaml,
#       seed (scripts/directus-seed.mjs), check that the byok-bridge hook is loaded and working, and write
#       DIR/instance.env (mode 600). Without --webhook-secret a new one is generated.
#       The first run keeps its freshly bootstrapped (never started) database in the cache; later runs copy
#       it instead of running `directus bootstrap` again (saves 4-10 s) and give the admin a new password.
#       --no-template (or DIRECTUS_UP_NO_TEMPLATE=1) always runs `directus bootstrap`.
#       --db-client pg: the database is the (empty) PostgreSQL database at --db-url instead of DIR/data.db;
#       always bootstrapped (the template is SQLite only). --redis: Directus shares its caches, schema
#       synchronization, rate limiter store and event bus through that Redis (REDIS, CACHE_STORE,
#       SYNCHRONIZATION_STORE, RATE_LIMITER_STORE = redis), as several Directus instances need.
#       --smtp: Directus sends its e-mail (notifications of users with e-mail notifications on) to that plain
#       SMTP server, e.g. the local sink of scripts/smtp-sink.sh.
#       SEED_SERVICE_TOKEN / SEED_ADMIN_TOKEN in the environment reach the seed (fixed static tokens).
#   scripts/directus-up.sh --dir DIR --start-only
#       Start the existing instance in DIR again (after directus-down.sh or a kill), without re-seeding;
#       DIRECTUS_PID in DIR/instance.env is updated. A no-op when it is already running.
#
# Directus keeps running after this script exits: stop it with scripts/directus-down.sh DIR.
# stdout: the path of DIR/instance.env (last line). stderr: progress; no secret is ever printed.
# Files in DIR: .env (Directus config, mode 600), data.db, directus.log, directus.pid, instance.env,
# extensions/byok-bridge -> <repo>/hooks/byok-bridge, extensions/byok-bridge-flows -> <repo>/hooks/byok-bridge-flows
# (the Flows operations; their credential is FLOWS_TOKEN in instance.env, the sidecar's FLOWS_TOKEN),
# extensions/byok-bridge-ops -> <repo>/hooks/byok-bridge-ops (the admins' panel; it asks the sidecar with
# OPERATOR_TOKEN in instance.env), uploads/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly SNAPSHOT="${REPO_ROOT}/directus-schema/snapshot.yaml"
readonly HOOK_SRC="${REPO_ROOT}/hooks/byok-bridge"
readonly FLOWS_SRC="${REPO_ROOT}/hooks/byok-bridge-flows"
readonly OPS_SRC="${REPO_ROOT}/hooks/byok-bridge-ops"
readonly MARKER=".byok-directus-instance"
readonly ADMIN_EMAIL="admin@example.com"
readonly PING_TIMEOUT_S="${DIRECTUS_UP_PING_TIMEOUT:-60}"
# A `directus bootstrap`ped, never started SQLite database (bump the suffix when bootstrap inputs change).
readonly TEMPLATE_DIR="${BYOK_CACHE_DIR:-${HOME}/.cache/byok-bridge}/templates/directus-12.4.0-bootstrap-v1"

START_S="${SECONDS}"
log() { printf '[directus-up +%ss] %s\n' "$((SECONDS - START_S))" "$*" >&2; }
die() {
	printf '[directus-up] error: %s\n' "$*" >&2
	exit 1
}
usage() {
	sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

dir="" port="" bridge_url="" webhook_secret="" start_only=false
db_client="sqlite3" db_url="" redis_url="" smtp=""
use_template=true
[[ "${DIRECTUS_UP_NO_TEMPLATE:-}" == 1 ]] && use_template=false
while (($# > 0)); do
	case "$1" in
	--dir | --port | --bridge-url | --webhook-secret | --db-client | --db-url | --redis | --smtp)
		(($# >= 2)) || die "$1 needs a value"
		case "$1" in
		--dir) dir="$2" ;;
		--port) port="$2" ;;
		--bridge-url) bridge_url="$2" ;;
		--webhook-secret) webhook_secret="$2" ;;
		--db-client) db_client="$2" ;;
		--db-url) db_url="$2" ;;
		--redis) redis_url="$2" ;;
		--smtp) smtp="$2" ;;
		esac
		shift 2
		;;
	--start-only) start_only=true && shift ;;
	--no-template) use_template=false && shift ;;
	-h | --help) usage ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[[ -n "${dir}" ]] || die "--dir is required"

for tool in node curl setsid; do
	command -v "${tool}" >/dev/null 2>&1 || die "${tool} is required"
done

random_hex() { node -e 'process.stdout.write(require("crypto").randomBytes(+process.argv[1]).toString("hex"))' "$1"; }
random_b64url() { node -e 'process.stdout.write(require("crypto").randomBytes(+process.argv[1]).toString("base64url"))' "$1"; }
random_b64() { node -e 'process.stdout.write(require("crypto").randomBytes(+process.argv[1]).toString("base64"))' "$1"; }

# whsec_ + standard base64 of >= 24 bytes (Standard Webhooks).
valid_webhook_secret() {
	local b64="${1#whsec_}"
	[[ "$1" == whsec_* && "${b64}" =~ ^[A-Za-z0-9+/]+={0,2}$ ]] || return 1
	B64="${b64}" node -e '
		const s = process.env.B64, b = Buffer.from(s, "base64");
		process.exit(b.toString("base64").replace(/=+$/, "") === s.replace(/=+$/, "") && b.length >= 24 ? 0 : 1);
	'
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Directus' DB_* lines for a postgres:// URL (user and password percent-decoded by Node's URL); never printed.
pg_env_from_url() {
	# shellcheck disable=SC2016 # JavaScript, not shell, inside the single quotes
	DB_URL="$1" node -e '
		let u;
		try { u = new URL(process.env.DB_URL); } catch { process.exit(1); }
		const db = decodeURIComponent(u.pathname.replace(/^[/]/, ""));
		if (!["postgres:", "postgresql:"].includes(u.protocol) || !u.hostname || !u.username || !db) process.exit(1);
		const lines = [
			"DB_CLIENT=pg", `DB_HOST=${u.hostname}`, `DB_PORT=${u.port || 5432}`, `DB_DATABASE=${db}`,
			`DB_USER=${decodeURIComponent(u.username)}`,
			// Directus requires DB_PASSWORD; with trust authentication any value does.
			`DB_PASSWORD=${u.password ? decodeURIComponent(u.password) : "unused-trust-auth"}`,
		];
		if (lines.some((l) => /[\s"'"'"'$`#\\]/.test(l))) process.exit(1);
		process.stdout.write(lines.join("\n"));
	'
}

# Value of KEY in a KEY=VALUE file (first match), without printing anything else.
env_value() { sed -n "s/^$2=//p" "$1" | head -n 1; }

pid_is_directus() {
	local pid="$1"
	[[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
		tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q '@directus/api/dist/cli/run.js start'
}

# Start Directus from DIR/.env in the background, in its own session (it outlives this script), with a
# clean environment so nothing from the caller's (PORT, DB_*, REDIS, ...) leaks into it.
start_directus() {
	local run_js="${install_dir}/node_modules/@directus/api/dist/cli/run.js"
	(
		cd "${dir}"
		exec env -i PATH="${PATH}" HOME="${HOME}" LANG="${LANG:-C.UTF-8}" CONFIG_PATH="${dir}/.env" \
			setsid node "${run_js}" start </dev/null >>"${dir}/directus.log" 2>&1
	) &
	directus_pid=$!
	printf '%s\n' "${directus_pid}" >"${dir}/directus.pid"
}

# Poll GET /server/ping until "pong" (bounded); fail fast when the process dies.
wait_for_ping() {
	local url="$1" deadline=$((SECONDS + PING_TIMEOUT_S))
	while ((SECONDS < deadline)); do
		if [[ "$(curl -s --max-time 2 "${url}/server/ping" 2>/dev/null || true)" == "pong" ]]; then
			return 0
		fi
		if ! kill -0 "${directus_pid}" 2>/dev/null; then
			log "Directus exited during start-up; last log lines:"
			tail -n 40 "${dir}/directus.log" >&2 || true
			return 1
		fi
		sleep 0.1
	done
	log "Directus did not answer /server/ping within ${PING_TIMEOUT_S}s; last log lines:"
	tail -n 40 "${dir}/directus.log" >&2 || true
	return 1
}

directus_pid=""
ok=false
cleanup() {
	local rc=$?
	if [[ "${ok}" != true && -n "${directus_pid}" ]] && kill -0 "${directus_pid}" 2>/dev/null; then
		log "failed: stopping the Directus started here (pid ${directus_pid})"
		"${SCRIPT_DIR}/directus-down.sh" "${dir}" >&2 || true
		# Our own child, possibly caught before it exec'd node (directus-down.sh only signals `directus start`).
		kill -0 "${directus_pid}" 2>/dev/null && kill -KILL "${directus_pid}" 2>/dev/null
	fi
	exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_dir=""
ensure_install() {
	install_dir="$("${SCRIPT_DIR}/directus-install.sh" | tail -n 1)"
	[[ -d "${install_dir}" ]] || die "directus-install.sh did not return an install dir"
}

# ---------------------------------------------------------------------------------------------------
if [[ "${start_only}" == true ]]; then
	[[ -d "${dir}" ]] || die "--dir ${dir} does not exist"
	dir="$(cd "${dir}" && pwd)"
	[[ -f "${dir}/${MARKER}" && -f "${dir}/.env" && -f "${dir}/instance.env" ]] ||
		die "${dir} is not an instance made by directus-up.sh (run it without --start-only first)"
	url="$(env_value "${dir}/instance.env" DIRECTUS_URL)"
	old_pid="$(cat "${dir}/directus.pid" 2>/dev/null || true)"
	if pid_is_directus "${old_pid}"; then
		log "already running (pid ${old_pid})"
		ok=true
		printf '%s\n' "${dir}/instance.env"
		exit 0
	fi
	port="$(env_value "${dir}/.env" PORT)"
	port_in_use "${port}" && die "port ${port} is already in use by another process"
	ensure_install
	start_directus
	log "starting Directus (pid ${directus_pid})"
	wait_for_ping "${url}" || die "Directus did not start"
	tmp="$(mktemp "${dir}/.instance.env.XXXXXX")"
	sed "s/^DIRECTUS_PID=.*/DIRECTUS_PID=${directus_pid}/" "${dir}/instance.env" >"${tmp}"
	chmod 600 "${tmp}"
	mv -f "${tmp}" "${dir}/instance.env"
	ok=true
	log "Directus is up at ${url} (pid ${directus_pid})"
	printf '%s\n' "${dir}/instance.env"
	exit 0
fi

# ---------------------------------------------------------------------------------------------------
if ! [[ "${port}" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
	die "--port must be a TCP port number"
fi
[[ "${bridge_url}" =~ ^https?://[^[:space:]]+$ ]] || die "--bridge-url must be an http(s) URL"
[[ -z "${smtp}" || "${smtp}" =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || die "--smtp must be HOST:PORT"
bridge_url="${bridge_url%/}"
if [[ -z "${webhook_secret}" ]]; then
	webhook_secret="whsec_$(random_b64 32)"
	log "generated a webhook secret"
fi
valid_webhook_secret "${webhook_secret}" || die "--webhook-secret must be whsec_ followed by base64 of >= 24 bytes"
# Database settings for .env: SQLite in DIR (set once DIR is absolute, below) or PostgreSQL at --db-url.
db_env=""
case "${db_client}" in
sqlite3) [[ -z "${db_url}" ]] || die "--db-url is for --db-client pg" ;;
pg)
	[[ -n "${db_url}" ]] || die "--db-client pg needs --db-url postgres://USER[:PASSWORD]@HOST:PORT/DATABASE"
	db_env="$(pg_env_from_url "${db_url}")" ||
		die "--db-url must be postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (no spaces, quotes, \$, \` or #)"
	use_template=false
	;;
*) die "--db-client must be sqlite3 or pg" ;;
esac
redis_env=""
if [[ -n "${redis_url}" ]]; then
	[[ "${redis_url}" =~ ^rediss?://[^[:space:]\"\'\$\`#]+$ ]] || die "--redis must be a redis:// URL"
	redis_env="REDIS=${redis_url}
CACHE_STORE=redis
SYNCHRONIZATION_STORE=redis
RATE_LIMITER_STORE=redis"
fi
[[ -f "${SNAPSHOT}" ]] || die "missing ${SNAPSHOT}"
[[ -f "${HOOK_SRC}/package.json" ]] || die "missing ${HOOK_SRC}"

replace_previous=false
if [[ -d "${dir}" && -n "$(ls -A "${dir}")" ]]; then
	[[ -f "${dir}/${MARKER}" ]] || die "${dir} is not empty and not a directus-up instance; refusing to wipe it"
	replace_previous=true
	# Stop the previous instance first: it may hold the port.
	"${SCRIPT_DIR}/directus-down.sh" "${dir}" >&2
fi
port_in_use "${port}" && die "port ${port} is already in use"
ensure_install

mkdir -p "${dir}"
dir="$(cd "${dir}" && pwd)"
if [[ "${replace_previous}" == true ]]; then
	log "replacing the previous instance in ${dir}"
	find "${dir}" -mindepth 1 -delete
fi

chmod 700 "${dir}"
touch "${dir}/${MARKER}"
mkdir -p "${dir}/extensions" "${dir}/uploads"
ln -s "${HOOK_SRC}" "${dir}/extensions/byok-bridge"
ln -s "${FLOWS_SRC}" "${dir}/extensions/byok-bridge-flows"
ln -s "${OPS_SRC}" "${dir}/extensions/byok-bridge-ops"
# Directus reads the package.json of PACKAGE_FILE_LOCATION; without one NO extension loads.
printf '{\n  "name": "byok-directus-instance",\n  "private": true,\n  "version": "0.0.0"\n}\n' >"${dir}/package.json"

url="http://127.0.0.1:${port}"
if [[ "${db_client}" == sqlite3 ]]; then
	db_env="DB_CLIENT=sqlite3
DB_FILENAME=${dir}/data.db"
fi
secret="$(random_hex 32)"
flows_token="$(random_hex 32)"
operator_token="$(random_hex 32)"
admin_password="$(random_b64url 24)"
# Stripe's endpoint secrets are whsec_ and 32 alphanumerics; the sidecar and the hook both check payments with it.
stripe_secret="whsec_$(random_hex 16)"
(
	umask 077
	cat >"${dir}/.env" <<EOF
# Throwaway Directus for byok-bridge tests (written by scripts/directus-up.sh). Contains secrets.
HOST=127.0.0.1
PORT=${port}
PUBLIC_URL=${url}
${db_env}
SECRET=${secret}
ADMIN_EMAIL=${ADMIN_EMAIL}
ADMIN_PASSWORD=${admin_password}
TELEMETRY=false
LOG_LEVEL=warn
WEBSOCKETS_ENABLED=false
RATE_LIMITER_ENABLED=false
RATE_LIMITER_GLOBAL_ENABLED=false
RATE_LIMITER_REGISTRATION_ENABLED=false
PRESSURE_LIMITER_ENABLED=false
EMAIL_VERIFY_SETUP=false
EXTENSIONS_PATH=${dir}/extensions
EXTENSIONS_MUST_LOAD=true
EXTENSIONS_AUTO_RELOAD=false
PACKAGE_FILE_LOCATION=${dir}
STORAGE_LOCAL_ROOT=${dir}/uploads
BYOK_BRIDGE_URL=${bridge_url}
BYOK_BRIDGE_WEBHOOK_SECRET=${webhook_secret}
BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET=${stripe_secret}
BYOK_BRIDGE_FLOWS_TOKEN=${flows_token}
BYOK_BRIDGE_FLOW_RESULT_COLLECTIONS=byok_demo_notes
BYOK_BRIDGE_OPERATOR_TOKEN=${operator_token}
EOF
	[[ -z "${redis_env}" ]] || printf '%s\n' "${redis_env}" >>"${dir}/.env"
	if [[ -n "${smtp}" ]]; then
		printf '%s\n' "EMAIL_TRANSPORT=smtp" "EMAIL_FROM=byok-bridge@example.com" "EMAIL_SMTP_HOST=${smtp%:*}" \
			"EMAIL_SMTP_PORT=${smtp##*:}" "EMAIL_SMTP_SECURE=false" "EMAIL_SMTP_IGNORE_TLS=true" >>"${dir}/.env"
	fi
)

template_ready() { [[ -s "${TEMPLATE_DIR}/data.db" && -s "${TEMPLATE_DIR}/admin-password" ]]; }

# Keep DIR's freshly bootstrapped database (and its admin password) as the template, once (flock).
save_template() {
	local parent
	parent="$(dirname "${TEMPLATE_DIR}")"
	mkdir -p "${parent}"
	[[ -e "${dir}/data.db-wal" || -e "${dir}/data.db-journal" ]] && return 0 # not a clean, closed database
	(
		flock -w 60 9 || exit 0
		template_ready && exit 0
		tmp_tpl="$(mktemp -d "${parent}/.tmp.XXXXXX")"
		cp "${dir}/data.db" "${tmp_tpl}/data.db"
		(umask 077 && printf '%s' "${admin_password}" >"${tmp_tpl}/admin-password")
		rm -rf "${TEMPLATE_DIR}"
		mv "${tmp_tpl}" "${TEMPLATE_DIR}"
	) 9>"${parent}/.lock" || log "could not save the bootstrap template (continuing)"
}

from_template=false
if [[ "${use_template}" == true ]] && template_ready; then
	cp "${TEMPLATE_DIR}/data.db" "${dir}/data.db"
	template_password="$(cat "${TEMPLATE_DIR}/admin-password")"
	from_template=true
	log "database copied from the cached bootstrap template (no bootstrap needed)"
else
	log "bootstrapping (migrations + first admin)"
	if ! (cd "${dir}" && env -i PATH="${PATH}" HOME="${HOME}" LANG="${LANG:-C.UTF-8}" CONFIG_PATH="${dir}/.env" \
		node "${install_dir}/node_modules/@directus/api/dist/cli/run.js" bootstrap) >"${dir}/bootstrap.log" 2>&1; then
		tail -n 40 "${dir}/bootstrap.log" >&2 || true
		die "directus bootstrap failed"
	fi
	[[ "${use_template}" == true ]] && save_template
fi

start_directus
log "starting Directus (pid ${directus_pid})"
wait_for_ping "${url}" || die "Directus did not start"
log "Directus answers /server/ping"

# Secrets go to the node helpers through the environment, never through argv.
if [[ "${from_template}" == true ]]; then
	# The template's admin password is shared by every copy: give this instance its own.
	# shellcheck disable=SC2016 # JavaScript, not shell, inside the single quotes
	if ! DIRECTUS_URL="${url}" DIRECTUS_ADMIN_EMAIL="${ADMIN_EMAIL}" OLD_PASSWORD="${template_password}" \
		NEW_PASSWORD="${admin_password}" node --input-type=module -e '
			const { DIRECTUS_URL: url, DIRECTUS_ADMIN_EMAIL: email, OLD_PASSWORD: oldPw, NEW_PASSWORD: newPw } = process.env;
			const call = (method, path, body, token) => fetch(url + path, {
				method, body: JSON.stringify(body), signal: AbortSignal.timeout(15000),
				headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
			});
			const login = await call("POST", "/auth/login", { email, password: oldPw });
			if (!login.ok) { console.error(`admin login with the template password: HTTP ${login.status}`); process.exit(1); }
			const token = (await login.json()).data.access_token;
			const patch = await call("PATCH", "/users/me", { password: newPw }, token);
			if (!patch.ok) { console.error(`setting the admin password: HTTP ${patch.status}`); process.exit(1); }
		'; then
		rm -rf "${TEMPLATE_DIR}" # unusable: the next run bootstraps and saves a new one
		die "could not take over the admin account of the template database (template removed; run again)"
	fi
	log "admin password set"
fi

log "applying ${SNAPSHOT#"${REPO_ROOT}/"}"
# The snapshot is taken on SQLite: another vendor needs --force (as `directus schema apply` does).
# --only-if-new: as the docker-compose init service (a no-op difference on the fresh database here).
apply_flags=(--only-if-new)
[[ "${db_client}" == sqlite3 ]] || apply_flags+=(--force)
DIRECTUS_URL="${url}" DIRECTUS_ADMIN_EMAIL="${ADMIN_EMAIL}" DIRECTUS_ADMIN_PASSWORD="${admin_password}" \
	node "${SCRIPT_DIR}/directus-apply-schema.mjs" "${SNAPSHOT}" "${apply_flags[@]}" ||
	die "applying the schema snapshot failed"

log "seeding (and checking permissions and the byok-bridge hook)"
seed_out="$(DIRECTUS_URL="${url}" DIRECTUS_ADMIN_EMAIL="${ADMIN_EMAIL}" DIRECTUS_ADMIN_PASSWORD="${admin_password}" \
	SEED_CHECK_HOOK=1 node "${SCRIPT_DIR}/directus-seed.mjs")" || die "seeding failed"

tmp="$(mktemp "${dir}/.instance.env.XXXXXX")"
chmod 600 "${tmp}"
{
	printf 'DIRECTUS_URL=%s\n' "${url}"
	printf 'DIRECTUS_SECRET=%s\n' "${secret}"
	printf '%s\n' "${seed_out}" | grep '^DIRECTUS_TOKEN='
	printf 'DIRECTUS_ADMIN_EMAIL=%s\n' "${ADMIN_EMAIL}"
	printf 'DIRECTUS_ADMIN_PASSWORD=%s\n' "${admin_password}"
	printf '%s\n' "${seed_out}" | grep '^DIRECTUS_ADMIN_TOKEN='
	printf 'WEBHOOK_SECRET=%s\n' "${webhook_secret}"
	printf 'STRIPE_WEBHOOK_SECRET=%s\n' "${stripe_secret}"
	printf 'FLOWS_TOKEN=%s\n' "${flows_token}"
	printf 'OPERATOR_TOKEN=%s\n' "${operator_token}"
	printf '%s\n' "${seed_out}" | grep -E '^(PREMIUM|LIFETIME|FREE|BROKE)_USER_(EMAIL|PASSWORD|ID)='
	printf 'DIRECTUS_PID=%s\n' "${directus_pid}"
} >"${tmp}"
mv -f "${tmp}" "${dir}/instance.env"

ok=true
log "Directus is up at ${url} (pid ${directus_pid}); credentials in ${dir}/instance.env"
printf '%s\n' "${dir}/instance.env"
