# shellcheck shell=bash
# Shared by scripts/cluster-*.sh (the "several replicas" topology without Docker; docker-compose.yml is the
# same topology in containers). Layout of a cluster folder DIR:
#   .byok-cluster                    marker: DIR was made by cluster-up.sh (so it may be wiped and replaced)
#   cluster.env                      everything a test or developer needs (mode 600)
#   postgres/data, postgres/postgres.log
#   redis/redis.conf, redis/redis.pid, redis/redis.log, redis/appendonlydir/ (append-only file)
#   directus/                        a scripts/directus-up.sh instance (DB_CLIENT=pg, REDIS=...)
#   sidecar-<x>/                     DATA_DIR of replica x (a, b, ...)
#   sidecar-<x>.env, .log, .pid      its environment (mode 600), log, pid
#   nginx/                           the optional load balancer (--lb)
# Source scripts/lib.sh first.

# shellcheck disable=SC2034 # used by the scripts that source this file
readonly CLUSTER_MARKER=".byok-cluster"
readonly CLUSTER_WAIT_S="${CLUSTER_WAIT_SECONDS:-60}"

cluster_log() { printf '[%s +%ss] %s\n' "${CLUSTER_TOOL:-cluster}" "$((SECONDS - ${CLUSTER_START_S:-0}))" "$*" >&2; }
cluster_die() {
	printf '[%s] error: %s\n' "${CLUSTER_TOOL:-cluster}" "$*" >&2
	exit 1
}

# True when something listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Value of KEY in a KEY=VALUE file (first match), printing nothing else.
kv_get() { sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1; }

# Replica names: a, b, c, ... (index 0 -> a).
replica_name() {
	local letters=abcdefghijklmnopqrstuvwxyz
	printf '%s\n' "${letters:$1:1}"
}

# The last lines of a log, indented, on stderr (for failures).
show_log_tail() {
	local file="$1" lines="${2:-40}"
	printf -- '--- last %s lines of %s ---\n' "${lines}" "${file}" >&2
	tail -n "${lines}" "${file}" >&2 2>/dev/null || printf '(no log)\n' >&2
}

# True when PID is alive and its environment holds the exact line NEEDLE (e.g. DATA_DIR=/x/sidecar-a): a stale
# pid file never makes us signal an unrelated process.
pid_has_env() {
	local pid="$1" needle="$2"
	[[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
		tr '\0' '\n' 2>/dev/null <"/proc/${pid}/environ" | grep -qxF -- "${needle}"
}

# True when PID is alive and its command line contains PATTERN (fixed string).
pid_cmdline_has() {
	local pid="$1" pattern="$2"
	[[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
		tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline" | grep -qF -- "${pattern}"
}

# Sends TERM to PID, waits up to WAIT seconds while CHECK (a command taking the pid) says it is ours and
# alive, then KILL. Returns 1 if it survives even that.
terminate_pid() {
	local pid="$1" wait_s="$2" check="$3" signal="${4:-TERM}" deadline
	kill "-${signal}" "${pid}" 2>/dev/null || true
	deadline=$((SECONDS + wait_s))
	while ((SECONDS < deadline)); do
		"${check}" "${pid}" || return 0
		sleep 0.1
	done
	kill -KILL "${pid}" 2>/dev/null || true
	deadline=$((SECONDS + 5))
	while ((SECONDS < deadline)); do
		"${check}" "${pid}" || return 0
		sleep 0.1
	done
	return 1
}

# ---- Redis -------------------------------------------------------------------------------------------

redis_port_of() { sed -n 's/^port //p' "$1/redis/redis.conf" 2>/dev/null | head -n 1; }
redis_user_of() { stat -c %U "$1/redis" 2>/dev/null; }

redis_pid_alive() { pid_cmdline_has "$1" "redis-server"; }

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }

# Starts the cluster's Redis from DIR/redis/redis.conf (same port, same data folder) and waits for PONG.
redis_start() {
	local dir="$1" port user deadline pid
	port="$(redis_port_of "${dir}")"
	user="$(redis_user_of "${dir}")"
	[[ -n "${port}" && -n "${user}" ]] || cluster_die "${dir}/redis/redis.conf is missing: not a cluster folder"
	pid="$(cat "${dir}/redis/redis.pid" 2>/dev/null || true)"
	if redis_pid_alive "${pid}" && redis_ping "${port}"; then
		cluster_log "Redis already running (pid ${pid}, port ${port})"
		return 0
	fi
	rm -f "${dir}/redis/redis.pid"
	port_in_use "${port}" && cluster_die "port ${port} (Redis) is in use by another process"
	# daemonize yes: redis-server forks and writes its pid file; runs as ${user}.
	as_user "${user}" redis-server "${dir}/redis/redis.conf" >>"${dir}/redis/redis.log" 2>&1 || {
		show_log_tail "${dir}/redis/redis.log"
		cluster_die "redis-server did not start"
	}
	deadline=$((SECONDS + CLUSTER_WAIT_S))
	until redis_ping "${port}"; do
		if ((SECONDS >= deadline)); then
			show_log_tail "${dir}/redis/redis.log"
			cluster_die "Redis did not answer PING on 127.0.0.1:${port} within ${CLUSTER_WAIT_S}s"
		fi
		sleep 0.05
	done
	cluster_log "Redis up on 127.0.0.1:${port} (pid $(cat "${dir}/redis/redis.pid" 2>/dev/null), appendonly)"
}

# Stops the cluster's Redis: TERM (it flushes the append-only file and exits) or, with KILL, a crash.
redis_stop() {
	local dir="$1" signal="${2:-TERM}" pid
	pid="$(cat "${dir}/redis/redis.pid" 2>/dev/null || true)"
	if ! redis_pid_alive "${pid}"; then
		cluster_log "Redis not running"
		rm -f "${dir}/redis/redis.pid"
		return 0
	fi
	terminate_pid "${pid}" 15 redis_pid_alive "${signal}" || {
		cluster_log "error: Redis (pid ${pid}) did not exit"
		return 1
	}
	rm -f "${dir}/redis/redis.pid"
	cluster_log "Redis stopped (pid ${pid}, ${signal})"
}

# ---- PostgreSQL --------------------------------------------------------------------------------------

pg_user_of() { stat -c %U "$1/postgres/data" 2>/dev/null; }

pg_stop() {
	local dir="$1" pg_bin user
	[[ -f "${dir}/postgres/data/postmaster.pid" ]] || {
		cluster_log "PostgreSQL not running"
		return 0
	}
	pg_bin="$(find_pg_bin)" || {
		cluster_log "error: no PostgreSQL binaries to stop ${dir}/postgres/data with"
		return 1
	}
	user="$(pg_user_of "${dir}")"
	if ! as_user "${user}" "${pg_bin}/pg_ctl" -D "${dir}/postgres/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
		as_user "${user}" "${pg_bin}/pg_ctl" -D "${dir}/postgres/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
			true
	fi
	if [[ -f "${dir}/postgres/data/postmaster.pid" ]] &&
		as_user "${user}" "${pg_bin}/pg_ctl" -D "${dir}/postgres/data" status >/dev/null 2>&1; then
		cluster_log "error: PostgreSQL in ${dir}/postgres/data did not stop"
		return 1
	fi
	cluster_log "PostgreSQL stopped"
}

# ---- sidecar replicas --------------------------------------------------------------------------------

sidecar_alive() { pid_has_env "$1" "${SIDECAR_DATA_LINE}"; }

# Starts replica NAME of DIR in the background with exactly DIR/sidecar-NAME.env (and nothing else from the
# caller's environment), its own session (it outlives the script), log appended to DIR/sidecar-NAME.log.
sidecar_start() {
	local dir="$1" name="$2" bin="$3" env_file pid bind
	env_file="${dir}/sidecar-${name}.env"
	[[ -f "${env_file}" ]] || cluster_die "missing ${env_file}"
	[[ -x "${bin}" ]] || cluster_die "sidecar binary ${bin} is not executable"
	SIDECAR_DATA_LINE="DATA_DIR=$(kv_get "${env_file}" DATA_DIR)"
	pid="$(cat "${dir}/sidecar-${name}.pid" 2>/dev/null || true)"
	if sidecar_alive "${pid}"; then
		cluster_log "sidecar ${name} already running (pid ${pid})"
		return 0
	fi
	bind="$(kv_get "${env_file}" BIND_ADDR)"
	port_in_use "${bind##*:}" && cluster_die "port ${bind##*:} (sidecar ${name}) is in use by another process"
	local -a vars
	mapfile -t vars < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "${env_file}")
	(
		cd "${dir}" || exit 1
		exec env -i PATH="${PATH}" HOME="${HOME}" "${vars[@]}" setsid "${bin}" serve \
			</dev/null >>"${dir}/sidecar-${name}.log" 2>&1
	) &
	pid=$!
	printf '%s\n' "${pid}" >"${dir}/sidecar-${name}.pid"
	cluster_log "sidecar ${name} starting on ${bind} (pid ${pid})"
}

# The "status" of BASE/readyz ("ready", "degraded", "not_ready"), or nothing; never fails (set -e, pipefail).
readyz_status() {
	{ curl -s --max-time 2 "$1/readyz" 2>/dev/null || true; } |
		sed -n 's/.*"status"[[:space:]]*:[[:space:]]*"\([a-z_]*\)".*/\1/p'
}

# Waits (bounded) until replica NAME's /readyz answers "ready"; on failure shows its log and fails.
sidecar_wait_ready() {
	local dir="$1" name="$2" env_file bind pid deadline status=""
	env_file="${dir}/sidecar-${name}.env"
	bind="$(kv_get "${env_file}" BIND_ADDR)"
	SIDECAR_DATA_LINE="DATA_DIR=$(kv_get "${env_file}" DATA_DIR)"
	pid="$(cat "${dir}/sidecar-${name}.pid" 2>/dev/null || true)"
	deadline=$((SECONDS + CLUSTER_WAIT_S))
	while ((SECONDS < deadline)); do
		status="$(readyz_status "http://${bind}")"
		[[ "${status}" == ready ]] && return 0
		if ! kill -0 "${pid}" 2>/dev/null; then
			show_log_tail "${dir}/sidecar-${name}.log"
			cluster_die "sidecar ${name} exited during start-up"
		fi
		sleep 0.1
	done
	show_log_tail "${dir}/sidecar-${name}.log"
	cluster_die "sidecar ${name} did not report ready on http://${bind}/readyz within ${CLUSTER_WAIT_S}s (last: ${status:-no answer})"
}

sidecar_stop() {
	local dir="$1" name="$2" signal="${3:-TERM}" pid data_dir
	data_dir="$(kv_get "${dir}/sidecar-${name}.env" DATA_DIR)"
	SIDECAR_DATA_LINE="DATA_DIR=${data_dir}"
	pid="$(cat "${dir}/sidecar-${name}.pid" 2>/dev/null || true)"
	if [[ -z "${data_dir}" ]] || ! sidecar_alive "${pid}"; then
		rm -f "${dir}/sidecar-${name}.pid"
		return 0
	fi
	# Graceful stop: in-flight requests get 10 s.
	terminate_pid "${pid}" 15 sidecar_alive "${signal}" || {
		cluster_log "error: sidecar ${name} (pid ${pid}) did not exit"
		return 1
	}
	rm -f "${dir}/sidecar-${name}.pid"
	cluster_log "sidecar ${name} stopped (pid ${pid}, ${signal})"
}

# Names of the replicas of DIR (from their env files), in order.
sidecar_names() {
	local f
	for f in "$1"/sidecar-*.env; do
		[[ -f "${f}" ]] || continue
		f="${f##*/sidecar-}"
		printf '%s\n' "${f%.env}"
	done
}

# ---- nginx -------------------------------------------------------------------------------------------

nginx_alive() { pid_cmdline_has "$1" "nginx: master process"; }

nginx_stop() {
	local dir="$1" pid
	pid="$(cat "${dir}/nginx/nginx.pid" 2>/dev/null || true)"
	nginx_alive "${pid}" || return 0
	terminate_pid "${pid}" 10 nginx_alive QUIT || {
		cluster_log "error: nginx (pid ${pid}) did not exit"
		return 1
	}
	cluster_log "nginx stopped (pid ${pid})"
}
