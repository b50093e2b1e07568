#!/usr/bin/env bash
# Stop and start one sidecar replica of a scripts/cluster-up.sh cluster, with exactly its DIR/sidecar-NAME.env:
#
#   scripts/cluster-sidecar.sh DIR NAME stop|kill|start|restart|status
#
# NAME: a, b, ... stop: TERM (in-flight requests get 10 s); kill: KILL (a crash); start: in the background,
# log appended to DIR/sidecar-NAME.log, pid in DIR/sidecar-NAME.pid, then waits (bounded) for /readyz
# "ready"; status: exit 0 when /readyz says ready. The binary is SIDECAR_BIN from DIR/cluster.env, or
# SIDECAR_BIN from the environment. SIDECAR_<NAME>_PID in cluster.env is updated on start.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=scripts/cluster-lib.sh
source "${SCRIPT_DIR}/cluster-lib.sh"
CLUSTER_TOOL="cluster-sidecar"
CLUSTER_START_S="${SECONDS}"

(($# == 3)) || cluster_die "usage: $0 DIR NAME stop|kill|start|restart|status"
[[ -f "$1/${CLUSTER_MARKER}" ]] || cluster_die "$1 is not a cluster made by cluster-up.sh"
dir="$(cd "$1" && pwd)"
name="$2"
[[ "${name}" =~ ^[a-z]$ && -f "${dir}/sidecar-${name}.env" ]] || cluster_die "no replica ${name} in ${dir}"

start() {
	local bin="${SIDECAR_BIN:-$(kv_get "${dir}/cluster.env" SIDECAR_BIN)}" upper="${name^^}" tmp
	[[ -n "${bin}" ]] || cluster_die "no SIDECAR_BIN in ${dir}/cluster.env or the environment"
	sidecar_start "${dir}" "${name}" "${bin}"
	sidecar_wait_ready "${dir}" "${name}"
	if [[ -f "${dir}/cluster.env" ]]; then
		tmp="$(mktemp "${dir}/.cluster.env.XXXXXX")"
		chmod 600 "${tmp}"
		sed "s/^SIDECAR_${upper}_PID=.*/SIDECAR_${upper}_PID=$(cat "${dir}/sidecar-${name}.pid")/" "${dir}/cluster.env" >"${tmp}"
		mv -f "${tmp}" "${dir}/cluster.env"
	fi
	cluster_log "sidecar ${name} ready (pid $(cat "${dir}/sidecar-${name}.pid"))"
}

case "$3" in
stop) sidecar_stop "${dir}" "${name}" TERM ;;
kill) sidecar_stop "${dir}" "${name}" KILL ;;
start) start ;;
restart)
	sidecar_stop "${dir}" "${name}" TERM
	start
	;;
status) [[ "$(readyz_status "http://$(kv_get "${dir}/sidecar-${name}.env" BIND_ADDR)")" == ready ]] ;;
*) cluster_die "usage: $0 DIR NAME stop|kill|start|restart|status" ;;
esac
