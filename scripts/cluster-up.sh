#!/usr/bin/env bash
# The "several replicas" topology without Docker (docker-compose.yml is the same topology in containers),
# for the end-to-end tests and for developers:
#
#   scripts/cluster-up.sh --dir DIR --sidecar-bin PATH [--replicas N] [--lb] [--sidecar-env KEY=VALUE]...
#
#   PostgreSQL   Debian's server binaries (installed when missing), a throwaway cluster in DIR/postgres on a free
#                loopback port, run as the postgres account (never root), trust authentication on 127.0.0.1
#   Redis        Debian's redis-server (installed when missing) in DIR/redis on a free loopback port, run as the
#                redis account; appendonly yes, appendfsync everysec (deploy/redis.conf, shared with compose)
#   Directus     12.4.0 on that PostgreSQL (DB_CLIENT=pg) with REDIS=redis://.../0 (cache, schema sync, rate
#                limiter store, bus), our schema, hook (EXTENSIONS_MUST_LOAD=true) and seed: scripts/directus-up.sh
#                --db-client pg --redis ..., so exactly the steps of the SQLite instances. Its hook posts flag
#                webhooks to replica a (the replicas fan changes out to each other through Redis).
#   sidecars     N replicas (default 2: a, b) of PATH (`serve`), each with its own port and DATA_DIR
#                (DIR/sidecar-<x>), the same Directus settings and secrets, REDIS_URL=redis://.../1
#   --lb         also nginx (Debian's, installed when missing) on a free port in front of the replicas:
#                round robin, SSE-friendly (deploy/nginx-proxy.conf, shared with docker-compose.yml)
#   --sidecar-env KEY=VALUE   an extra setting for every replica (e.g. OPENAI_BASE_URL=...); repeatable
#
# DIR must be missing, empty, or a previous cluster made by this script (stopped and replaced); the service
# accounts must be able to reach it (a folder under /tmp is fine). Everything keeps running after this script:
# stop it with scripts/cluster-down.sh DIR. Redis alone: scripts/cluster-redis.sh DIR stop|kill|start|status;
# one replica: scripts/cluster-sidecar.sh DIR NAME stop|kill|start|restart|status.
#
# DIR/cluster.env (mode 600): what DIR/directus/instance.env has (DIRECTUS_URL, DIRECTUS_TOKEN,
# DIRECTUS_ADMIN_TOKEN, DIRECTUS_SECRET, WEBHOOK_SECRET, the demo users, ...) plus REDIS_URL (the sidecars'),
# DIRECTUS_REDIS_URL, REDIS_PORT, PG_PORT, PG_URL, OPERATOR_TOKEN, ENCRYPTION_KEY, SIDECAR_COUNT,
# SIDECAR_NAMES (a,b,...), SIDECAR_BIN, for each replica SIDECAR_<X>_URL, _ADDR, _ENV (its env file), _PID,
# _LOG, _DATA_DIR, and LB_URL with --lb. Each replica's exact environment is DIR/sidecar-<x>.env (mode 600):
# restart it with just that.
# stdout: the path of DIR/cluster.env (last line). stderr: progress; no secret is ever printed.
# Bounded waits (CLUSTER_WAIT_SECONDS, default 60 each); on failure the last log lines are shown and
# everything started here is stopped again.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=scripts/cluster-lib.sh
source "${SCRIPT_DIR}/cluster-lib.sh"
CLUSTER_TOOL="cluster-up"
CLUSTER_START_S="${SECONDS}"
log() { cluster_log "$@"; }
die() { cluster_die "$@"; }
usage() {
	sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

dir="" sidecar_bin="" replicas=2 with_lb=false
declare -a extra_env=()
while (($# > 0)); do
	case "$1" in
	--dir | --sidecar-bin | --replicas | --sidecar-env)
		(($# >= 2)) || die "$1 needs a value"
		case "$1" in
		--dir) dir="$2" ;;
		--sidecar-bin) sidecar_bin="$2" ;;
		--replicas) replicas="$2" ;;
		--sidecar-env) extra_env+=("$2") ;;
		esac
		shift 2
		;;
	--lb) with_lb=true && shift ;;
	-h | --help) usage ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[[ -n "${dir}" ]] || die "--dir is required"
[[ -n "${sidecar_bin}" ]] || die "--sidecar-bin is required (e.g. target/debug/byok-bridge)"
[[ -x "${sidecar_bin}" && -f "${sidecar_bin}" ]] || die "--sidecar-bin ${sidecar_bin} is not an executable file"
sidecar_bin="$(cd "$(dirname "${sidecar_bin}")" && pwd)/$(basename "${sidecar_bin}")"
if ! [[ "${replicas}" =~ ^[0-9]+$ ]] || ((replicas < 1 || replicas > 26)); then die "--replicas must be 1..26"; fi
for kv in "${extra_env[@]}"; do
	[[ "${kv}" =~ ^[A-Za-z_][A-Za-z0-9_]*=[^$'\n']*$ ]] || die "--sidecar-env wants KEY=VALUE (one line)"
	case "${kv%%=*}" in
	BIND_ADDR | DATA_DIR) die "--sidecar-env cannot set ${kv%%=*}: the script gives each replica its own" ;;
	esac
done
for tool in node curl setsid; do
	command -v "${tool}" >/dev/null 2>&1 || die "${tool} is required"
done
((EUID != 0)) || command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is required when running as root"

# ---- the folder --------------------------------------------------------------------------------------
if [[ -d "${dir}" && -n "$(ls -A "${dir}")" ]]; then
	[[ -f "${dir}/${CLUSTER_MARKER}" ]] || die "${dir} is not empty and not a cluster made by cluster-up.sh; refusing to wipe it"
	log "replacing the previous cluster in ${dir}"
	"${SCRIPT_DIR}/cluster-down.sh" "${dir}" >&2
	find "${dir}" -mindepth 1 -delete
fi
mkdir -p "${dir}"
dir="$(cd "${dir}" && pwd)"
# Traversable (not listable) by the service accounts; secrets live in mode-600 files.
chmod 711 "${dir}"
touch "${dir}/${CLUSTER_MARKER}"

ok=false
cleanup() {
	local rc=$?
	if [[ "${ok}" != true ]]; then
		log "failed: stopping what was started (files kept in ${dir})"
		"${SCRIPT_DIR}/cluster-down.sh" "${dir}" >/dev/null 2>&1 || true
	fi
	exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pg_bin="$(ensure_pg_bin)" || die "no PostgreSQL server binaries (and installing them failed)"
ensure_redis || die "no redis-server (and installing it failed)"
nginx_bin=""
if [[ "${with_lb}" == true ]]; then
	nginx_bin="$(command -v nginx || true)"
	[[ -z "${nginx_bin}" && -x /usr/sbin/nginx ]] && nginx_bin=/usr/sbin/nginx
	if [[ -z "${nginx_bin}" ]]; then
		((EUID == 0)) || die "--lb needs nginx (apt-get install nginx as root)"
		log "installing nginx from Debian"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2 || die "apt-get install nginx failed"
		nginx_bin=/usr/sbin/nginx
	fi
fi
pg_user="$(service_user postgres)"
redis_user="$(service_user redis)"
for user in "${pg_user}" "${redis_user}"; do
	as_user "${user}" test -x "${dir}" ||
		die "the ${user} account cannot reach ${dir} (a parent folder is closed to it): use a folder under /tmp"
done

# ---- ports and secrets -------------------------------------------------------------------------------
declare -A taken=()
pick_port() {
	local p
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		p="$(free_port)"
		[[ -z "${taken[${p}]:-}" ]] && {
			taken[${p}]=1
			printf '%s\n' "${p}"
			return 0
		}
	done
	die "could not find distinct free ports"
}
pg_port="$(pick_port)"
redis_port="$(pick_port)"
directus_port="$(pick_port)"
declare -a names=() sidecar_ports=()
for ((i = 0; i < replicas; i++)); do
	names+=("$(replica_name "${i}")")
	sidecar_ports+=("$(pick_port)")
done
lb_port=""
[[ "${with_lb}" == true ]] && lb_port="$(pick_port)"

random_hex() { node -e 'process.stdout.write(require("crypto").randomBytes(+process.argv[1]).toString("hex"))' "$1"; }
encryption_key="$(random_hex 32)"
service_token="$(random_hex 32)" # the sidecars' DIRECTUS_TOKEN, given to the seed (as docker-compose.yml does)

# ---- Redis -------------------------------------------------------------------------------------------
mkdir -p "${dir}/redis"
{
	printf '# Written by scripts/cluster-up.sh: deploy/redis.conf (shared with docker-compose.yml), then local settings.\n'
	cat "${REPO_ROOT}/deploy/redis.conf"
	printf '\n# Local: loopback only, files in this folder.\n'
	printf 'port %s\nbind 127.0.0.1\ndir %s\ndaemonize yes\npidfile %s\nlogfile %s\n' \
		"${redis_port}" "${dir}/redis" "${dir}/redis/redis.pid" "${dir}/redis/redis.log"
} >"${dir}/redis/redis.conf"
chmod 644 "${dir}/redis/redis.conf"
install -m 600 /dev/null "${dir}/redis/redis.log"
((EUID == 0)) && chown -R "${redis_user}:" "${dir}/redis"
chmod 700 "${dir}/redis"
redis_start "${dir}"

# ---- PostgreSQL --------------------------------------------------------------------------------------
mkdir -p "${dir}/postgres/data"
((EUID == 0)) && chown -R "${pg_user}:" "${dir}/postgres"
chmod 700 "${dir}/postgres" "${dir}/postgres/data"
log "initdb (${pg_bin%/bin}, as ${pg_user})"
as_user "${pg_user}" "${pg_bin}/initdb" -D "${dir}/postgres/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
	>"${dir}/postgres/initdb.log" 2>&1 || {
	show_log_tail "${dir}/postgres/initdb.log"
	die "initdb failed"
}
# In postgresql.conf, so that a plain `pg_ctl start` brings it back the same. Throwaway data: no fsync.
cat >>"${dir}/postgres/data/postgresql.conf" <<EOF

# scripts/cluster-up.sh
port = ${pg_port}
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
full_page_writes = off
EOF
as_user "${pg_user}" "${pg_bin}/pg_ctl" -D "${dir}/postgres/data" -l "${dir}/postgres/postgres.log" -w \
	-t "${CLUSTER_WAIT_S}" start >/dev/null || {
	show_log_tail "${dir}/postgres/postgres.log"
	die "PostgreSQL did not start within ${CLUSTER_WAIT_S}s"
}
"${pg_bin}/pg_isready" -q -h 127.0.0.1 -p "${pg_port}" -t 10 || die "PostgreSQL does not accept connections"
"${pg_bin}/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${pg_port}" -U postgres -d postgres \
	-c 'CREATE DATABASE directus' || die "CREATE DATABASE directus failed"
log "PostgreSQL up on 127.0.0.1:${pg_port} (database directus)"
pg_url="postgres://postgres@127.0.0.1:${pg_port}/directus"

# ---- Directus ----------------------------------------------------------------------------------------
directus_redis_url="redis://127.0.0.1:${redis_port}/0"
sidecar_redis_url="redis://127.0.0.1:${redis_port}/1"
log "Directus on PostgreSQL + Redis (scripts/directus-up.sh)"
instance_env="$(SEED_SERVICE_TOKEN="${service_token}" "${SCRIPT_DIR}/directus-up.sh" --dir "${dir}/directus" \
	--port "${directus_port}" --bridge-url "http://127.0.0.1:${sidecar_ports[0]}" \
	--db-client pg --db-url "${pg_url}" --redis "${directus_redis_url}" | tail -n 1)" ||
	die "Directus did not come up (log: ${dir}/directus/directus.log)"
[[ "$(kv_get "${instance_env}" DIRECTUS_TOKEN)" == "${service_token}" ]] ||
	die "the seed did not set the given service token"
directus_url="$(kv_get "${instance_env}" DIRECTUS_URL)"
# The replicas' OPERATOR_TOKEN is the one Directus's operations panel asks them with.
operator_token="$(kv_get "${instance_env}" OPERATOR_TOKEN)"

# ---- sidecar replicas --------------------------------------------------------------------------------
for i in "${!names[@]}"; do
	name="${names[${i}]}"
	mkdir -p "${dir}/sidecar-${name}"
	chmod 700 "${dir}/sidecar-${name}"
	declare -A settings=(
		[BIND_ADDR]="127.0.0.1:${sidecar_ports[${i}]}"
		[DIRECTUS_URL]="${directus_url}"
		[DIRECTUS_TOKEN]="${service_token}"
		[DIRECTUS_SECRET]="$(kv_get "${instance_env}" DIRECTUS_SECRET)"
		[WEBHOOK_SECRET]="$(kv_get "${instance_env}" WEBHOOK_SECRET)"
		[ENCRYPTION_KEY]="${encryption_key}"
		[OPERATOR_TOKEN]="${operator_token}"
		[REDIS_URL]="${sidecar_redis_url}"
		[DATA_DIR]="${dir}/sidecar-${name}"
		[RUST_LOG]="info"
		[LOG_FORMAT]="json"
	)
	order=(BIND_ADDR DIRECTUS_URL DIRECTUS_TOKEN DIRECTUS_SECRET WEBHOOK_SECRET ENCRYPTION_KEY OPERATOR_TOKEN
		REDIS_URL DATA_DIR RUST_LOG LOG_FORMAT)
	# Behind the balancer (on this machine), the client is the address nginx puts in X-Forwarded-For.
	if [[ "${with_lb}" == true ]]; then
		settings[TRUSTED_PROXIES]="127.0.0.1"
		order+=(TRUSTED_PROXIES)
	fi
	for kv in "${extra_env[@]}"; do
		[[ -n "${settings[${kv%%=*}]+set}" ]] || order+=("${kv%%=*}")
		settings[${kv%%=*}]="${kv#*=}"
	done
	env_file="${dir}/sidecar-${name}.env"
	(
		umask 077
		{
			printf '# byok-bridge replica %s (scripts/cluster-up.sh). Contains secrets.\n' "${name}"
			for key in "${order[@]}"; do printf '%s=%s\n' "${key}" "${settings[${key}]}"; done
		} >"${env_file}"
	)
	chmod 600 "${env_file}"
	unset settings
	sidecar_start "${dir}" "${name}" "${sidecar_bin}"
done
for name in "${names[@]}"; do
	sidecar_wait_ready "${dir}" "${name}"
	log "sidecar ${name} ready"
done

# ---- optional load balancer --------------------------------------------------------------------------
if [[ "${with_lb}" == true ]]; then
	mkdir -p "${dir}/nginx/tmp"
	{
		printf '# Written by scripts/cluster-up.sh --lb; the proxy settings are deploy/nginx-proxy.conf (as in compose).\n'
		printf 'daemon off;\nworker_processes 1;\npid %s;\nerror_log %s warn;\n' \
			"${dir}/nginx/nginx.pid" "${dir}/nginx/error.log"
		printf 'events { worker_connections 1024; }\nhttp {\n'
		printf '  access_log %s;\n' "${dir}/nginx/access.log"
		for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s;\n' "${t}" "${dir}/nginx/tmp/${t}"; done
		printf '  upstream byok_bridge {\n'
		for port in "${sidecar_ports[@]}"; do printf '    server 127.0.0.1:%s;\n' "${port}"; done
		printf '    keepalive 32;\n  }\n'
		printf '  server {\n    listen 127.0.0.1:%s;\n    include %s;\n  }\n}\n' "${lb_port}" "${REPO_ROOT}/deploy/nginx-proxy.conf"
	} >"${dir}/nginx/nginx.conf"
	"${nginx_bin}" -t -q -e "${dir}/nginx/error.log" -p "${dir}/nginx" -c "${dir}/nginx/nginx.conf" \
		>"${dir}/nginx/nginx.out" 2>&1 || {
		show_log_tail "${dir}/nginx/nginx.out"
		show_log_tail "${dir}/nginx/error.log"
		die "nginx refused its configuration"
	}
	(
		exec setsid "${nginx_bin}" -e "${dir}/nginx/error.log" -p "${dir}/nginx" -c "${dir}/nginx/nginx.conf" \
			</dev/null >>"${dir}/nginx/nginx.out" 2>&1
	) &
	deadline=$((SECONDS + CLUSTER_WAIT_S))
	until [[ "$(readyz_status "http://127.0.0.1:${lb_port}")" == ready ]]; do
		if ((SECONDS >= deadline)); then
			show_log_tail "${dir}/nginx/nginx.out"
			show_log_tail "${dir}/nginx/error.log"
			die "nginx on 127.0.0.1:${lb_port} did not pass /readyz through within ${CLUSTER_WAIT_S}s"
		fi
		sleep 0.1
	done
	log "nginx up on 127.0.0.1:${lb_port} (round robin over ${replicas} replicas)"
fi

# ---- cluster.env -------------------------------------------------------------------------------------
tmp="$(mktemp "${dir}/.cluster.env.XXXXXX")"
chmod 600 "${tmp}"
{
	grep -E '^[A-Z_][A-Z0-9_]*=' "${instance_env}"
	printf 'CLUSTER_DIR=%s\n' "${dir}"
	printf 'DIRECTUS_LOG=%s\n' "${dir}/directus/directus.log"
	printf 'PG_PORT=%s\nPG_URL=%s\n' "${pg_port}" "${pg_url}"
	printf 'REDIS_PORT=%s\nREDIS_URL=%s\nDIRECTUS_REDIS_URL=%s\n' "${redis_port}" "${sidecar_redis_url}" "${directus_redis_url}"
	printf 'ENCRYPTION_KEY=%s\n' "${encryption_key}"
	printf 'SIDECAR_BIN=%s\nSIDECAR_COUNT=%s\nSIDECAR_NAMES=%s\n' "${sidecar_bin}" "${replicas}" "$(IFS=,; printf '%s' "${names[*]}")"
	for i in "${!names[@]}"; do
		name="${names[${i}]}"
		upper="${name^^}"
		printf 'SIDECAR_%s_URL=http://127.0.0.1:%s\n' "${upper}" "${sidecar_ports[${i}]}"
		printf 'SIDECAR_%s_ADDR=127.0.0.1:%s\n' "${upper}" "${sidecar_ports[${i}]}"
		printf 'SIDECAR_%s_ENV=%s\n' "${upper}" "${dir}/sidecar-${name}.env"
		printf 'SIDECAR_%s_PID=%s\n' "${upper}" "$(cat "${dir}/sidecar-${name}.pid")"
		printf 'SIDECAR_%s_LOG=%s\n' "${upper}" "${dir}/sidecar-${name}.log"
		printf 'SIDECAR_%s_DATA_DIR=%s\n' "${upper}" "${dir}/sidecar-${name}"
	done
	[[ -z "${lb_port}" ]] || printf 'LB_URL=http://127.0.0.1:%s\n' "${lb_port}"
} >"${tmp}"
mv -f "${tmp}" "${dir}/cluster.env"

ok=true
log "cluster up in $((SECONDS - CLUSTER_START_S))s: Directus ${directus_url}, ${replicas} replicas (${names[*]})${lb_port:+, nginx on 127.0.0.1:${lb_port}}"
printf '%s\n' "${dir}/cluster.env"
