#!/usr/bin/env bash
# Stop and start the Redis of a scripts/cluster-up.sh cluster alone (same port, same data folder and
# append-only file), e.g. to take it away from the replicas mid-load and bring it back:
#
#   scripts/cluster-redis.sh DIR stop      TERM: Redis flushes its append-only file and exits
#   scripts/cluster-redis.sh DIR kill      KILL: a crash (at most ~1 s of writes lost: appendfsync everysec)
#   scripts/cluster-redis.sh DIR start     start again and wait (bounded) for PONG; a no-op when running
#   scripts/cluster-redis.sh DIR status    exit 0 when it answers PING, 1 otherwise
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=scripts/lib.sh
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=scripts/cluster-lib.sh
source "${SCRIPT_DIR}/cluster-lib.sh"
CLUSTER_TOOL="cluster-redis"
CLUSTER_START_S="${SECONDS}"

(($# == 2)) || cluster_die "usage: $0 DIR stop|kill|start|status"
[[ -f "$1/${CLUSTER_MARKER}" && -f "$1/redis/redis.conf" ]] || cluster_die "$1 is not a cluster made by cluster-up.sh"
dir="$(cd "$1" && pwd)"
case "$2" in
stop) redis_stop "${dir}" TERM ;;
kill) redis_stop "${dir}" KILL ;;
start) redis_start "${dir}" ;;
status) redis_ping "$(redis_port_of "${dir}")" ;;
*) cluster_die "usage: $0 DIR stop|kill|start|status" ;;
esac
