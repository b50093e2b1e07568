#!/usr/bin/env bash
# Stop the Directus that scripts/directus-up.sh started in DIR:
#
#   scripts/directus-down.sh DIR
#
# Reads DIR/directus.pid, sends TERM, waits (bounded) for the process to exit, then KILL.
# A no-op (exit 0) when it is not running. Only a process whose command line is `directus start`
# is signalled (a stale pid file never hits an unrelated process). The instance's files stay: start it
# again with `scripts/directus-up.sh --dir DIR --start-only`, or delete DIR.
set -euo pipefail

readonly TERM_WAIT_S="${DIRECTUS_DOWN_TERM_WAIT:-10}"
readonly KILL_WAIT_S=5

log() { printf '[directus-down] %s\n' "$*" >&2; }

(($# == 1)) || {
	log "usage: $0 DIR"
	exit 2
}
dir="$1"
pid_file="${dir}/directus.pid"

if [[ ! -f "${pid_file}" ]]; then
	log "no ${pid_file}: not running"
	exit 0
fi
pid="$(tr -d '[:space:]' <"${pid_file}")"

is_our_directus() {
	[[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
		tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q '@directus/api/dist/cli/run.js start'
}

# Poll (bounded) until the process is gone.
wait_gone() {
	local deadline=$((SECONDS + $1))
	while ((SECONDS < deadline)); do
		is_our_directus || return 0
		sleep 0.1
	done
	! is_our_directus
}

if ! is_our_directus; then
	log "not running (stale pid file removed)"
	rm -f "${pid_file}"
	exit 0
fi

kill -TERM "${pid}" 2>/dev/null || true
if ! wait_gone "${TERM_WAIT_S}"; then
	log "pid ${pid} still running after ${TERM_WAIT_S}s: sending KILL"
	kill -KILL "${pid}" 2>/dev/null || true
	wait_gone "${KILL_WAIT_S}" || {
		log "pid ${pid} did not exit"
		exit 1
	}
fi
rm -f "${pid_file}"
log "stopped pid ${pid}"
