#!/usr/bin/env bash
# Stop everything scripts/cluster-up.sh started in DIR: nginx, the sidecar replicas, Directus, Redis, PostgreSQL.
#
#   scripts/cluster-down.sh DIR [--wipe]
#
# Idempotent: what is not running is skipped (exit 0). Only processes that are provably this cluster's are
# signalled (a replica by the DATA_DIR in its environment, Directus by its command line, Redis and nginx by
# their pid files and command lines, PostgreSQL through pg_ctl). Files stay (logs, data) unless --wipe.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=scripts/cluster-lib.sh
source "${SCRIPT_DIR}/cluster-lib.sh"
CLUSTER_TOOL="cluster-down"
CLUSTER_START_S="${SECONDS}"

dir="" wipe=false
for arg in "$@"; do
	case "${arg}" in
	--wipe) wipe=true ;;
	-h | --help)
		sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
		exit 2
		;;
	*)
		[[ -z "${dir}" ]] || cluster_die "usage: $0 DIR [--wipe]"
		dir="${arg}"
		;;
	esac
done
[[ -n "${dir}" ]] || cluster_die "usage: $0 DIR [--wipe]"
if [[ ! -d "${dir}" ]]; then
	cluster_log "${dir} does not exist: nothing to stop"
	exit 0
fi
dir="$(cd "${dir}" && pwd)"
[[ -f "${dir}/${CLUSTER_MARKER}" ]] || cluster_die "${dir} is not a cluster made by cluster-up.sh"

failed=false
nginx_stop "${dir}" || failed=true
# The replicas in parallel: each may take up to 10 s to finish its in-flight requests.
declare -a stoppers=()
while IFS= read -r name; do
	sidecar_stop "${dir}" "${name}" &
	stoppers+=("$!")
done < <(sidecar_names "${dir}")
for pid in "${stoppers[@]}"; do wait "${pid}" || failed=true; done
if [[ -d "${dir}/directus" ]]; then
	"${SCRIPT_DIR}/directus-down.sh" "${dir}/directus" || failed=true
fi
[[ -f "${dir}/redis/redis.conf" ]] && { redis_stop "${dir}" || failed=true; }
[[ -d "${dir}/postgres/data" ]] && { pg_stop "${dir}" || failed=true; }

[[ "${failed}" == false ]] || cluster_die "something did not stop (see above)"
if [[ "${wipe}" == true ]]; then
	rm -rf -- "${dir}"
	cluster_log "stopped; ${dir} removed"
else
	cluster_log "stopped (files kept in ${dir})"
fi
