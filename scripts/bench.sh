#!/usr/bin/env bash
# Benchmarks, not tests: prints numbers, asserts nothing about speed.
#  1. Flag propagation: Directus PATCH response -> sidecar answers with the new decision (200 flips).
#  2. /v1/route throughput and latency under wrk, beside an axum hello-world (the ceiling) on the same machine.
#  3. The credit reservation path alone (available, reserve, settle, stored), and what the budget checks add to
#     it (tier caps, platform budget, spending alerts), then the key vault:
#     encrypt+store and fetch+decrypt latency, and the rewrap rate over 10,000 stored keys.
#  4. Gateway overhead: the same fake OpenAI (nginx answering fixed completions, the fastest fake there is)
#     called directly and through the sidecar, non-streaming and streaming, same wrk settings; sidecar RSS after;
#     and a bare axum + reqwest proxy (examples/bare_proxy.rs), the ceiling for a gateway on that stack.
#  5. Delivery into Directus on SQLite: the backlog section 4 left (Directus was stopped) drained.
#  6. Two replicas on PostgreSQL and Redis (scripts/cluster-up.sh, release binary): flag propagation to both;
#     then a BENCH_LOAD_SECONDS load at BENCH_CONNECTIONS through replica a with Directus up, and its backlog
#     drained.
#  7. Durable jobs (embedded store): BENCH_JOBS (100,000) submitted to a replica without workers (the submit
#     rate, and RSS and store size with all of them waiting), then the replica restarted with workers on the
#     same store and the queue drained against the fake OpenAI (jobs per second).
#  8. Per-user limits and the body guard: what each adds to a call (benches/limits.rs); six 12 MiB bodies at
#     once (jobs, then the gateway), peak memory against the sidecar's resting memory; with BENCH_COMPARE_REV
#     (a git revision, e.g. the one before the limits), that revision is built too and both binaries are timed
#     at one connection through the gateway, alternating, BENCH_COMPARE_ROUNDS (3) times (BENCH_COMPARE_BIN: a
#     binary of that revision built already).
#  9. The gateway beside a Directus storing its usage records (the sidecar's usual neighbour): the sidecar's
#     memory at rest; one connection for BENCH_LATENCY_SECONDS (60) direct with Directus idle; then, in
#     BENCH_LATENCY_ROUNDS (6) turns, through the sidecar (Directus storing its records meanwhile) and direct
#     beside Directus storing as many records a second (scripts/directus-usage-load.mjs), each side's turns
#     merged (scripts/latency-histograms.py), and the added p50, p99 and slowest call against either direct
#     measurement; the two bare proxies (the floor for any proxy) beside the same storing; then
#     BENCH_CONNECTIONS for BENCH_SECONDS: direct with Directus idle, the sidecar, and direct, a bare axum +
#     reqwest proxy and a bare hyper proxy (examples/bare_hyper_proxy.rs, the ceiling) beside Directus storing
#     the sidecar's rate of records; the sidecar's calls per second as a share of either direct run. With
#     BENCH_PERF=1, perf records the sidecar during its run and the hottest functions are printed. With
#     BENCH_DIRECTUS_NICE=N, Directus runs at that nice level from 9b on (how much of the tail is its CPU); where
#     the kernel groups processes by session (autogroup, Debian's default) a thread's nice weighs only inside its
#     group, so Directus's group gets that nice too.
#
#   scripts/bench.sh   (BENCH_SECONDS=10 BENCH_CONNECTIONS=32 BENCH_LOAD_SECONDS=60 by default)
#   BENCH_SECTIONS=1,2 scripts/bench.sh   only those sections (5 goes with 4: it drains 4's backlog);
#   BENCH_LOAD_SECONDS=0 leaves out 6b and 6c; BENCH_JOBS sets section 7's queue length
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${BENCH_SECONDS:-10}"
connections="${BENCH_CONNECTIONS:-32}"
load_seconds="${BENCH_LOAD_SECONDS:-60}"
want() { [[ ",${BENCH_SECTIONS:-1,2,3,4,5,6,7,8,9}," == *",$1,"* ]]; }

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
if ((${#missing[@]})); then
	step "installing ${missing[*]} (Debian packages)"
	apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

step "release build"
cargo build --release --locked --features e2e --bin byok-bridge --example hello_world --example bare_proxy --example bare_hyper_proxy --example submit_jobs --bench flag_flip --bench vault --bench reservations --bench limits 2>&1 | tail -n 1 >&2
scripts/directus-install.sh >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/byok-bench.XXXXXX")"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "${pid}" 2>/dev/null || true; done
	scripts/directus-down.sh "${work}/directus" >/dev/null 2>&1 || true
	[[ -d "${work}/cluster" ]] && { scripts/cluster-down.sh "${work}/cluster" >/dev/null 2>&1 || true; }
	[[ -d "${work}/compare" ]] && { git worktree remove --force "${work}/compare" >/dev/null 2>&1 || true; }
	rm -rf "${work}"
}
trap cleanup EXIT
directus_port="$(free_port)"
sidecar_port="$(free_port)"
hello_port="$(free_port)"
fake_port="$(free_port)"

step "real Directus 12.4.0"
instance_env="$(scripts/directus-up.sh --dir "${work}/directus" --port "${directus_port}" \
	--bridge-url "http://127.0.0.1:${sidecar_port}" | tail -n 1)"
get() { sed -n "s/^$1=//p" "${instance_env}" | head -n 1; }

# A sidecar on 127.0.0.1:$1 with its data in $2, logging to $3, from binary $4, against this Directus and the fake
# OpenAI; further VAR=value arguments add to or override its environment. Returns once it is ready (its pid in
# sidecar_pid) and ends the run if it does not start.
start_sidecar() {
	local port="$1" data="$2" log="$3" bin="$4"
	shift 4
	env -i PATH="${PATH}" BIND_ADDR="127.0.0.1:${port}" DIRECTUS_URL="$(get DIRECTUS_URL)" \
		DIRECTUS_TOKEN="$(get DIRECTUS_TOKEN)" DIRECTUS_SECRET="$(get DIRECTUS_SECRET)" \
		WEBHOOK_SECRET="$(get WEBHOOK_SECRET)" RUST_LOG=warn DATA_DIR="${data}" \
		OPENAI_BASE_URL="http://127.0.0.1:${fake_port}/v1" INTERNAL_OPENAI_API_KEY=sk-bench-internal-key-0000000000 \
		RATE_LIMIT_FREE_PER_MIN=10000000 USER_CACHE_TTL_SECS=300 "$@" "${bin}" >>"${log}" 2>&1 &
	sidecar_pid="$!"
	pids+=("${sidecar_pid}")
	for _ in $(seq 1 600); do
		curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && return
		sleep 0.05
	done
	tail -n 20 "${log}" >&2
	echo "the sidecar on 127.0.0.1:${port} did not start" >&2
	exit 1
}
# One call as the free user, so its profile is cached before a measurement.
cache_caller() {
	curl -fsS -o /dev/null "http://127.0.0.1:$1/v1/chat/completions" -H "Authorization: Bearer ${free_token}" \
		-H 'content-type: application/json' -d '{"model":"gpt-4o-mini","max_tokens":16,"messages":[]}'
}

step "sidecar (release) on 127.0.0.1:${sidecar_port}"
start_sidecar "${sidecar_port}" "${work}/sidecar-data" "${work}/sidecar.log" target/release/byok-bridge \
	RUST_LOG=info RATE_LIMIT_PREMIUM_PER_MIN=10000000 \
	ENCRYPTION_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
main_pid="${sidecar_pid}"

if want 1; then
	step "1. flag propagation (200 flips)"
	BYOK_E2E_INSTANCE="${instance_env}" BYOK_E2E_SIDECAR_ADDR="127.0.0.1:${sidecar_port}" \
		cargo bench --locked --features e2e --bench flag_flip 2>"${work}/flag_flip.err" ||
		{ cat "${work}/flag_flip.err" >&2; exit 1; }
fi

token="$(curl -fsS "$(get DIRECTUS_URL)/auth/login" -H 'content-type: application/json' \
	-d "{\"email\":\"$(get PREMIUM_USER_EMAIL)\",\"password\":\"$(get PREMIUM_USER_PASSWORD)\"}" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')"
free_token="$(curl -fsS "$(get DIRECTUS_URL)/auth/login" -H 'content-type: application/json' \
	-d "{\"email\":\"$(get FREE_USER_EMAIL)\",\"password\":\"$(get FREE_USER_PASSWORD)\"}" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')"
cat >"${work}/route.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"provider":"openai"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
LUA

# Directus running (sections that follow 4 or 7 find it stopped), and enough credit for every call of a run,
# so no call is refused for balance.
credit_free_user() {
	curl -fsS "$(get DIRECTUS_URL)/server/ping" >/dev/null 2>&1 || scripts/directus-up.sh --dir "${work}/directus" --start-only >/dev/null
	curl -fsS -o /dev/null "$(get DIRECTUS_URL)/items/credit_transactions" -H "Authorization: Bearer $(get DIRECTUS_ADMIN_TOKEN)" \
		-H 'content-type: application/json' \
		-d "{\"user\":\"$(get FREE_USER_ID)\",\"transaction_type\":\"grant\",\"service_type\":\"bench\",\"cost_cents\":1000000000}"
}
summarize() { grep -E '^\s+(50|99)%|Requests/sec|Non-2xx|Socket errors' | sed 's/^/   /'; }
# The same with wrk's latency line (average, deviation, and the slowest call).
summarize_max() { grep -E '^\s+Latency |^\s+(50|99)%|Requests/sec|Non-2xx|Socket errors' | sed 's/^/   /'; }
# A non-streaming chat completion under wrk: chat_load BEARER CONNECTIONS SECONDS BASE_URL prints wrk's report.
chat_load() {
	BENCH_TOKEN="$1" wrk -t1 -c"$2" -d"$3s" --latency -s "${work}/chat-false.lua" "$4/v1/chat/completions"
}
# Starts a ceiling proxy (an example binary) on port $2 in front of the fake OpenAI; returns once it answers.
start_proxy() {
	BIND_ADDR="127.0.0.1:$2" UPSTREAM="http://127.0.0.1:${fake_port}/v1/chat/completions" "target/release/examples/$1" &
	pids+=("$!")
	for _ in $(seq 1 100); do
		curl -fsS -X POST "http://127.0.0.1:$2/v1/chat/completions" -d '{}' >/dev/null 2>&1 && return
		sleep 0.05
	done
	echo "$1 did not start" >&2
	exit 1
}
# wrk's calls per second (whole) from its report on standard input.
calls_per_second() { awk '/Requests\/sec/ { print int($2) }'; }
# "N%": the calls per second of wrk report $1 as a share of report $2's.
share() { python3 -c "import sys; print(f'{100 * float(sys.argv[1]) / float(sys.argv[2]):.0f}%')" "$(calls_per_second <"$1")" "$(calls_per_second <"$2")"; }
# The latency sidecar's own count of chat completions (request read to response head: what waits inside it),
# and of those over 25 ms and over 100 ms, from its histogram on METRICS_ADDR.
inside_sidecar() {
	curl -fsS "http://${latency_metrics}/metrics" | python3 -c '
import re, sys
series = {}
for line in sys.stdin:
    m = re.match(r"byok_http_request_duration_seconds_(bucket|count)\{route=\"/v1/chat/completions\"(?:,le=\"([^\"]+)\")?\} (\d+)", line)
    if m:
        series[m.group(2) or "count"] = int(m.group(3))
total = series.get("count", 0)
print(total, total - series.get("0.025", 0), total - series.get("0.1", 0))'
}
# Directus stores records at $1 a second for $2 seconds in the background, delivered as a sidecar making $1
# calls a second delivers them (scripts/directus-usage-load.mjs): its pid in load_pid, its report in load.json.
start_usage_load() {
	DIRECTUS_URL="$(get DIRECTUS_URL)" DIRECTUS_TOKEN="$(get DIRECTUS_TOKEN)" LOAD_USER="$(get FREE_USER_ID)" \
		LOAD_RATE="$1" LOAD_SECONDS="$2" node scripts/directus-usage-load.mjs >"${work}/load.json" &
	load_pid="$!"
	pids+=("${load_pid}")
}
# chat_load beside Directus storing RATE records a second: beside_load RATE BEARER CONNECTIONS SECONDS BASE_URL
# prints wrk's report, then what Directus stored meanwhile (on standard error, to keep the report parseable).
beside_load() {
	local rate="$1"
	shift
	start_usage_load "${rate}" "$(($3 + 1))"
	chat_load "$@"
	wait "${load_pid}"
	sed 's/^/   Directus stored: /' "${work}/load.json" >&2
}
waiting() { curl -fsS "http://$1/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["usage_records_waiting"])'; }
# Polls a sidecar's outbox until it is empty (at most BENCH_DRAIN_MAX_SECONDS, 300): how many records, how
# long, how many per second; if it had to stop, the rate so far and the time the rest would take at that rate.
drain() {
	local addr="$1" start_count start count limit="${BENCH_DRAIN_MAX_SECONDS:-300}"
	start_count="$(waiting "${addr}")"
	start="${SECONDS}"
	count="${start_count}"
	while ((count > 0 && SECONDS - start < limit)); do
		sleep 1
		count="$(waiting "${addr}")"
	done
	python3 -c "
n0, n, t = ${start_count}, ${count}, max(${SECONDS} - ${start}, 1)
rate = (n0 - n) / t
if n == 0:
    print(f'   {n0} records delivered in {t} s: {rate:.0f} records/s')
else:
    print(f'   stopped after {t} s: {n0 - n} of {n0} delivered, {rate:.0f} records/s; the rest would take {n / rate if rate else float(\"inf\"):.0f} s more')
"
}

if want 2; then
step "2a. /v1/route: wrk -t2 -c${connections} -d${seconds}s (JWT check + cached flags + cached caller)"
BENCH_TOKEN="${token}" wrk -t2 -c"${connections}" -d"${seconds}s" --latency -s "${work}/route.lua" \
	"http://127.0.0.1:${sidecar_port}/v1/route" | summarize

BIND_ADDR="127.0.0.1:${hello_port}" target/release/examples/hello_world &
pids+=("$!")
for _ in $(seq 1 100); do
	curl -fsS -X POST "http://127.0.0.1:${hello_port}/" >/dev/null 2>&1 && break
	sleep 0.05
done
step "2b. ceiling: axum hello-world, same wrk settings"
BENCH_TOKEN="${token}" wrk -t2 -c"${connections}" -d"${seconds}s" --latency -s "${work}/route.lua" \
	"http://127.0.0.1:${hello_port}/" | summarize

rss_kb="$(ps -o rss= -p "${main_pid}" | tr -d ' ')"
step "sidecar RSS after the run: $((rss_kb / 1024)) MiB"
fi

if want 3; then
step "3. credit reservation path alone: available, reserve, settle, stored (200,000 calls)"
cargo bench --locked --bench reservations 2>"${work}/reservations.err" | sed 's/^/   /' ||
	{ cat "${work}/reservations.err" >&2; exit 1; }

step "3b. key vault: encrypt+store, fetch+decrypt, rewrap of 10,000 keys (real Directus)"
BYOK_E2E_INSTANCE="${instance_env}" cargo bench --locked --features e2e --bench vault 2>"${work}/vault.err" ||
	{ cat "${work}/vault.err" >&2; exit 1; }
fi

step "fake OpenAI: nginx on 127.0.0.1:${fake_port}"
for mode in false true; do
	cat >"${work}/chat-${mode}.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","stream":${mode},"max_tokens":16,"messages":[{"role":"user","content":"Hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
-- With BENCH_HISTOGRAM set, the run's whole latency histogram ("<microseconds> <calls>" per line) goes to that
-- file, for scripts/latency-histograms.py to merge runs.
done = function(summary, latency, requests)
	local path = os.getenv("BENCH_HISTOGRAM")
	if not path then return end
	local out = assert(io.open(path, "w"))
	for i = 1, #latency do
		local value, calls = latency(i)
		out:write(value, " ", calls, "\\n")
	end
	out:close()
end
LUA
done
proxy_port="$(free_port)"
# nginx with one worker answers a fixed completion, or a fixed SSE stream when asked for one (the sidecar sends
# Accept: text/event-stream for streams).
mkdir -p "${work}/nginx"
cat >"${work}/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid ${work}/nginx/nginx.pid;
error_log ${work}/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${work}/nginx/body;
  keepalive_requests 10000000;
  client_max_body_size 64m;
  server {
    listen 127.0.0.1:${fake_port};
    location = /v1/chat/completions {
      if (\$http_accept ~ "event-stream") { rewrite ^ /sse last; }
      default_type application/json;
      return 200 '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}';
    }
    location = /sse {
      internal;
      default_type text/event-stream;
      return 200 'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\ndata: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"}}]}\n\ndata: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}\n\ndata: [DONE]\n\n';
    }
  }
}
NGINX
"${nginx_bin}" -e "${work}/nginx/error.log" -c "${work}/nginx/nginx.conf" &
pids+=("$!")
for _ in $(seq 1 100); do
	curl -fsS -X POST "http://127.0.0.1:${fake_port}/v1/chat/completions" -d '{}' >/dev/null 2>&1 && break
	sleep 0.05
done
if want 4; then
step "4. gateway overhead: fake OpenAI directly vs through the sidecar (wrk, ${seconds}s per run)"
credit_free_user
# Warm the caller cache, then take Directus away for the measurement: on this 2-core machine Directus ingesting
# every usage record would compete with the sidecar for the CPU, which a deployment does not share. Records wait
# in the outbox (as in an outage) and are delivered when Directus is back.
cache_caller "${sidecar_port}"
scripts/directus-down.sh "${work}/directus" >/dev/null
for mode in false true; do
	# One connection measures the added latency of a single call; 32 saturate both cores (throughput, queueing).
	for conns in 1 "${connections}"; do
		step "4a. stream=${mode}, ${conns} connection(s): direct"
		BENCH_TOKEN="${token}" wrk -t1 -c"${conns}" -d"${seconds}s" --latency -s "${work}/chat-${mode}.lua" \
			"http://127.0.0.1:${fake_port}/v1/chat/completions" | summarize
		step "4b. stream=${mode}, ${conns} connection(s): through the sidecar (auth, routing, balance, rate limit, metering, outbox)"
		BENCH_TOKEN="${free_token}" wrk -t1 -c"${conns}" -d"${seconds}s" --latency -s "${work}/chat-${mode}.lua" \
			"http://127.0.0.1:${sidecar_port}/v1/chat/completions" | summarize
	done
done
# The ceiling for any gateway built on axum and reqwest, same settings: a proxy doing nothing else.
start_proxy bare_proxy "${proxy_port}"
step "4c. ceiling: a bare axum + reqwest proxy, non-streaming, ${connections} connections"
chat_load "${token}" "${connections}" "${seconds}" "http://127.0.0.1:${proxy_port}" | summarize
rss_kb="$(ps -o rss= -p "${main_pid}" | tr -d ' ')"
step "sidecar RSS after the gateway runs: $((rss_kb / 1024)) MiB; usage records waiting: $(waiting "127.0.0.1:${sidecar_port}")"

step "5. delivery into Directus on SQLite: the backlog of section 4, Directus started again"
scripts/directus-up.sh --dir "${work}/directus" --start-only >/dev/null
drain "127.0.0.1:${sidecar_port}"
kill "${main_pid}" 2>/dev/null || true
scripts/directus-down.sh "${work}/directus" >/dev/null
fi

if want 6; then
step "6. two replicas on PostgreSQL and Redis (scripts/cluster-up.sh, release binary)"
chmod 711 "${work}"
cluster_env="$(scripts/cluster-up.sh --dir "${work}/cluster" --sidecar-bin target/release/byok-bridge \
	--sidecar-env "OPENAI_BASE_URL=http://127.0.0.1:${fake_port}/v1" \
	--sidecar-env INTERNAL_OPENAI_API_KEY=sk-bench-internal-key-0000000000 \
	--sidecar-env RATE_LIMIT_FREE_PER_MIN=10000000 --sidecar-env RATE_LIMIT_PREMIUM_PER_MIN=10000000 \
	--sidecar-env USER_CACHE_TTL_SECS=300 --sidecar-env USAGE_DELIVERY_CONCURRENCY=2 | tail -n 1)"
cget() { sed -n "s/^$1=//p" "${cluster_env}" | head -n 1; }
step "6a. flag propagation to both replicas (the hook tells a, a tells b through Redis; 200 flips)"
BYOK_E2E_INSTANCE="${cluster_env}" BYOK_E2E_SIDECAR_ADDR="$(cget SIDECAR_A_ADDR),$(cget SIDECAR_B_ADDR)" \
	cargo bench --locked --features e2e --bench flag_flip 2>"${work}/flag_flip.err" ||
	{ cat "${work}/flag_flip.err" >&2; exit 1; }
if ((load_seconds > 0)); then
step "6b. ${load_seconds} s of calls at ${connections} connections through replica a, Directus (PostgreSQL) up"
cluster_token="$(curl -fsS "$(cget DIRECTUS_URL)/auth/login" -H 'content-type: application/json' \
	-d "{\"email\":\"$(cget FREE_USER_EMAIL)\",\"password\":\"$(cget FREE_USER_PASSWORD)\"}" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')"
curl -fsS -o /dev/null "$(cget DIRECTUS_URL)/items/credit_transactions" -H "Authorization: Bearer $(cget DIRECTUS_ADMIN_TOKEN)" \
	-H 'content-type: application/json' \
	-d "{\"user\":\"$(cget FREE_USER_ID)\",\"transaction_type\":\"grant\",\"service_type\":\"bench\",\"cost_cents\":1000000000}"
chat_load "${cluster_token}" "${connections}" "${load_seconds}" "$(cget SIDECAR_A_URL)" | summarize
step "6c. delivery into Directus on PostgreSQL: what was left when the load ended"
drain "$(cget SIDECAR_A_ADDR)"
fi
scripts/cluster-down.sh "${work}/cluster" >/dev/null 2>&1 || true
fi

if want 7; then
jobs_total="${BENCH_JOBS:-100000}"
step "7. durable jobs: ${jobs_total} submitted and waiting, then drained by one replica"
credit_free_user
jobs_port="$(free_port)"
# One user's jobs, so the per-user caps are raised: running ones to the worker count, waiting ones to the whole
# load (1,000 by default); caller and flags cached for the run.
start_jobs_sidecar() {
	start_sidecar "${jobs_port}" "${work}/jobs-data" "${work}/jobs-sidecar.log" target/release/byok-bridge \
		FLAG_CACHE_TTL_SECS=3600 RATE_LIMIT_JOB_SUBMITS_PER_MIN=10000000 JOB_WORKERS="$1" JOB_PER_USER_CONCURRENCY=64 \
		JOB_MAX_WAITING_PER_USER="${jobs_total}"
	jobs_pid="${sidecar_pid}"
}
succeeded() {
	curl -fsS "http://127.0.0.1:${jobs_port}/metrics" |
		awk '/^byok_job_attempts_total\{outcome="succeeded"\}/ { print $2; found = 1 } END { if (!found) print 0 }'
}
start_jobs_sidecar 0
step "7a. submitting ${jobs_total} jobs (${connections} at a time; no workers run)"
URL="http://127.0.0.1:${jobs_port}/v1/jobs" TOKEN="${free_token}" JOBS="${jobs_total}" CONCURRENCY="${connections}" \
	target/release/examples/submit_jobs
rss_kb="$(ps -o rss= -p "${jobs_pid}" | tr -d ' ')"
store_kb="$(du -sk "${work}/jobs-data" | cut -f1)"
step "7b. with the jobs waiting: RSS $((rss_kb / 1024)) MiB, store $((store_kb / 1024)) MiB on disk"
kill "${jobs_pid}"
wait "${jobs_pid}" 2>/dev/null || true
step "7c. the replica started again on the same store with 32 workers: draining (Directus stopped once the caller is cached)"
start_jobs_sidecar 32
until (( $(succeeded | cut -d. -f1) > 0 )); do sleep 0.1; done
scripts/directus-down.sh "${work}/directus" >/dev/null
python3 - "${jobs_port}" "${jobs_total}" <<'PY'
import re, sys, time, urllib.request
port, total = sys.argv[1], int(sys.argv[2])
def done():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    match = re.search(r'^byok_job_attempts_total\{outcome="succeeded"\} (\S+)', text, re.M)
    return int(float(match.group(1))) if match else 0
start, n0 = time.monotonic(), done()
while done() < total and time.monotonic() - start < 600:
    time.sleep(0.2)
n, t = done(), time.monotonic() - start
print(f"   {n - n0} jobs drained in {t:.1f} s: {(n - n0) / t:.0f} jobs/s ({n} of {total} done)")
PY
rss_kb="$(ps -o rss= -p "${jobs_pid}" | tr -d ' ')"
step "7d. RSS after the drain: $((rss_kb / 1024)) MiB"
fi

if want 8; then
step "8. per-user limits and the body guard"
step "8a. what each adds to a call (one call at a time, 10,000 users)"
cargo bench --locked --bench limits 2>"${work}/limits.err" | sed 's/^/   /' || { cat "${work}/limits.err" >&2; exit 1; }

credit_free_user
limits_port="$(free_port)"
# A sidecar (binary $1) for this section, on its own data directory: its pid in limits_pid.
start_limits_sidecar() {
	start_sidecar "${limits_port}" "${work}/limits-data-${RANDOM}" "${work}/limits-sidecar.log" "$1" \
		FLAG_CACHE_TTL_SECS=3600 JOB_WORKERS=0 MAX_JOB_BODY_BYTES=16777216
	limits_pid="${sidecar_pid}"
	cache_caller "${limits_port}"
}
memory_kib() { awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"; }

step "8b. six 12 MiB bodies at once (a 4-million-element array each): peak memory against resting"
python3 - "${work}" <<'PY'
import sys
work = sys.argv[1]
tags = ", ".join(["0"] * (4 * 1024 * 1024))
chat = '{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi"}],"tags":[' + tags + ']}'
open(f"{work}/big-chat.json", "w").write(chat)
open(f"{work}/big-job.json", "w").write('{"api":"chat.completions","request":' + chat + '}')
PY
for target in jobs chat/completions; do
	body="${work}/big-job.json"
	[[ "${target}" == jobs ]] || body="${work}/big-chat.json"
	start_limits_sidecar target/release/byok-bridge
	resting="$(memory_kib "${limits_pid}" VmRSS)"
	senders=()
	for _ in 1 2 3 4 5 6; do
		curl -sS -o /dev/null -w '%{http_code} ' "http://127.0.0.1:${limits_port}/v1/${target}" \
			-H "Authorization: Bearer ${free_token}" -H 'content-type: application/json' --data-binary "@${body}" &
		senders+=("$!")
	done
	wait "${senders[@]}"
	echo
	peak="$(memory_kib "${limits_pid}" VmHWM)"
	printf '   /v1/%s, six bodies of %s MiB at once: resting %s MiB, peak %s MiB (+%s MiB)\n' "${target}" \
		"$(( $(stat -c %s "${body}") / 1048576 ))" "$((resting / 1024))" "$((peak / 1024))" "$(((peak - resting) / 1024))"
	kill "${limits_pid}"
	wait "${limits_pid}" 2>/dev/null || true
done

if [[ -n "${BENCH_COMPARE_REV:-}" ]]; then
	step "8c. the gateway at one connection: this build against ${BENCH_COMPARE_REV}, alternating"
	compare_bin="${BENCH_COMPARE_BIN:-}"
	if [[ -z "${compare_bin}" ]]; then
		git worktree add --detach "${work}/compare" "${BENCH_COMPARE_REV}" >/dev/null 2>&1
		(cd "${work}/compare" && CARGO_TARGET_DIR="${work}/compare-target" cargo build --release --locked --bin byok-bridge 2>&1 | tail -n 1 >&2)
		compare_bin="${work}/compare-target/release/byok-bridge"
	fi
	for round in $(seq 1 "${BENCH_COMPARE_ROUNDS:-3}"); do
		for build in "${BENCH_COMPARE_REV}:${compare_bin}" "this build:target/release/byok-bridge"; do
			start_limits_sidecar "${build#*:}"
			printf '   round %s, %s\n' "${round}" "${build%%:*}"
			chat_load "${free_token}" 1 "${seconds}" "http://127.0.0.1:${limits_port}" | summarize
			kill "${limits_pid}"
			wait "${limits_pid}" 2>/dev/null || true
		done
	done
fi
fi

if want 9; then
latency_seconds="${BENCH_LATENCY_SECONDS:-60}"
step "9. the gateway beside Directus storing its usage records (SQLite, same machine)"
credit_free_user
latency_port="$(free_port)"
latency_metrics="127.0.0.1:$(free_port)"
start_sidecar "${latency_port}" "${work}/latency-data" "${work}/latency.log" target/release/byok-bridge \
	METRICS_ADDR="${latency_metrics}"
cache_caller "${latency_port}"
rss_kb="$(ps -o rss= -p "${sidecar_pid}" | tr -d ' ')"
step "9a. sidecar RSS at rest (started, flags and one caller loaded): $((rss_kb / 1024)) MiB"
if [[ -n "${BENCH_DIRECTUS_NICE:-}" ]]; then
	directus_pid="$(cat "${work}/directus/directus.pid")"
	renice -n "${BENCH_DIRECTUS_NICE}" -p "${directus_pid}" >/dev/null
	if [[ -w "/proc/${directus_pid}/autogroup" ]]; then echo "${BENCH_DIRECTUS_NICE}" >"/proc/${directus_pid}/autogroup"; fi
	step "9a. Directus at nice ${BENCH_DIRECTUS_NICE}"
fi
step "9b. one connection, ${latency_seconds} s, non-streaming: direct (Directus idle)"
mkdir -p "${work}/hist"
BENCH_HISTOGRAM="${work}/hist/direct-idle" chat_load "${token}" 1 "${latency_seconds}" "http://127.0.0.1:${fake_port}" |
	summarize_max
# The sidecar's runs take turns with direct runs beside the sidecar's neighbour: Directus storing as many records a
# second, delivered the way the sidecar delivers them, on the same two cores. Its bursts of CPU slow any call made
# meanwhile, direct ones included, so the difference is what the sidecar itself adds; taking turns gives both
# the machine's slow drifts, and each side's rounds are merged into one measurement of latency_seconds.
rounds="${BENCH_LATENCY_ROUNDS:-6}"
round_seconds="$(((latency_seconds + rounds - 1) / rounds))"
sidecar_runs=() direct_runs=() rates=()
inside_before="$(inside_sidecar)"
for round in $(seq 1 "${rounds}"); do
	BENCH_HISTOGRAM="${work}/hist/sidecar-${round}" \
		chat_load "${free_token}" 1 "${round_seconds}" "http://127.0.0.1:${latency_port}" >"${work}/sidecar-1.txt"
	rate="$(calls_per_second <"${work}/sidecar-1.txt")"
	# Only the histogram is kept; what Directus stored (or why it refused) still shows.
	BENCH_HISTOGRAM="${work}/hist/direct-load-${round}" \
		beside_load "${rate}" "${token}" 1 "${round_seconds}" "http://127.0.0.1:${fake_port}" >/dev/null
	sidecar_runs+=("${work}/hist/sidecar-${round}") direct_runs+=("${work}/hist/direct-load-${round}") rates+=("${rate}")
done
rate_1="$(python3 -c 'import sys; print(round(sum(map(int, sys.argv[1:])) / len(sys.argv[1:])))' "${rates[@]}")"
step "9c. one connection, ${rounds} x ${round_seconds} s in turns: through the sidecar (Directus storing its records), ${rate_1} calls/s"
scripts/latency-histograms.py summary "${sidecar_runs[@]}"
step "9c. ... and direct, Directus storing as many records a second (${rates[*]})"
scripts/latency-histograms.py summary "${direct_runs[@]}"
step "9c. records still waiting: $(waiting "127.0.0.1:${latency_port}")"
read -r calls_before over25_before over100_before <<<"${inside_before}"
read -r calls_after over25_after over100_after <<<"$(inside_sidecar)"
step "9c. the same calls timed inside the sidecar (request read to response head): $((over25_after - over25_before)) over 25 ms and $((over100_after - over100_before)) over 100 ms of $((calls_after - calls_before))"
step "9c. what the sidecar adds at one connection (p50, p99, slowest call)"
sidecar_list="$(IFS=,; echo "${sidecar_runs[*]}")"
scripts/latency-histograms.py added "direct, Directus storing as many records" "${sidecar_list}" "$(IFS=,; echo "${direct_runs[*]}")"
scripts/latency-histograms.py added "direct, Directus idle" "${sidecar_list}" "${work}/hist/direct-idle"
axum_port="$(free_port)"
hyper_port="$(free_port)"
start_proxy bare_proxy "${axum_port}"
start_proxy bare_hyper_proxy "${hyper_port}"
# The floor for any proxy here: the bare ones make the same two hops per call and do nothing else.
for target in "bare-axum-reqwest ${axum_port}" "bare-hyper ${hyper_port}"; do
	read -r name port <<<"${target}"
	step "9c. one connection, ${latency_seconds} s: ${name}, Directus storing ${rate_1} records/s"
	beside_load "${rate_1}" "${token}" 1 "${latency_seconds}" "http://127.0.0.1:${port}" | summarize_max
done
step "9d. ${connections} connections, ${seconds} s: direct (Directus idle), then the sidecar, then direct and the two bare proxies beside Directus storing the sidecar's records/s"
chat_load "${token}" "${connections}" "${seconds}" "http://127.0.0.1:${fake_port}" >"${work}/direct-idle-n.txt"
summarize_max <"${work}/direct-idle-n.txt"
step "9d. sidecar"
# BENCH_PERF=1: where the sidecar's time goes under this load (perf, call graphs), printed after the run.
if [[ -n "${BENCH_PERF:-}" ]]; then
	perf record -F 999 -g -o "${work}/perf.data" -p "${sidecar_pid}" -- sleep "${seconds}" >/dev/null 2>&1 &
	perf_pid="$!"
fi
chat_load "${free_token}" "${connections}" "${seconds}" "http://127.0.0.1:${latency_port}" >"${work}/sidecar-n.txt"
summarize_max <"${work}/sidecar-n.txt"
rate_n="$(calls_per_second <"${work}/sidecar-n.txt")"
for target in "direct ${fake_port}" "bare-axum-reqwest ${axum_port}" "bare-hyper ${hyper_port}"; do
	read -r name port <<<"${target}"
	step "9d. ${name}, Directus storing ${rate_n} records/s"
	beside_load "${rate_n}" "${token}" "${connections}" "${seconds}" "http://127.0.0.1:${port}" >"${work}/${name}-load-n.txt"
	summarize_max <"${work}/${name}-load-n.txt"
done
step "9d. the sidecar's calls/s against direct's: $(share "${work}/sidecar-n.txt" "${work}/direct-load-n.txt") of direct beside the same records, $(share "${work}/sidecar-n.txt" "${work}/direct-idle-n.txt") of direct beside an idle Directus"
if [[ -n "${BENCH_PERF:-}" ]]; then
	wait "${perf_pid}" || true
	step "9f. the sidecar's hottest functions at ${connections} connections (perf, self time)"
	perf report -i "${work}/perf.data" --no-children --percent-limit 1 --stdio --sort symbol 2>/dev/null |
		grep -E '^ +[0-9]' | head -n 40
fi
step "9e. usage records still waiting for Directus: $(waiting "127.0.0.1:${latency_port}")"
fi
