#!/usr/bin/env bash
# The one command that runs every check: formatting, lints, unit and API tests, the hook's tests, and the
# end-to-end tests against a real Directus 12.4.0 (installed on first use, cached in ~/.cache/byok-bridge).
#
#   scripts/test.sh
#
# Needs: cargo (with rustfmt and clippy), node >= 20, npm, python3 (with venv), curl. Everything else it installs
# itself: Directus 12.4.0 (npm), the OpenAI and Anthropic SDKs (PyPI, in a venv), PostgreSQL and redis-server
# (Debian) for the several-replicas tests and the monitoring SQL check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features --locked -- -D warnings

step "cargo doc (broken intra-doc links and bare URLs are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --locked

step "unit and API tests (Directus faked with wiremock)"
cargo test --locked

step "Directus 12.4.0 install (cached; the hook's SQLite tests use its knex)"
scripts/directus-install.sh >/dev/null

step "hook extension tests and the independent envelope implementation (node --test)"
node --test hooks/byok-bridge/test/ hooks/byok-bridge-flows/test/ hooks/byok-bridge-ops/test/ tests/interop/ web/account/test/

step "Python venv: the official OpenAI and Anthropic SDKs, an SMTP sink, an OpenAPI validator (cached)"
requirements_hash="$(sha256sum tests/sdk/requirements.txt | cut -c1-16)"
venv="${BYOK_CACHE_DIR:-${HOME}/.cache/byok-bridge}/sdk-venv-${requirements_hash}"
if [[ ! -x "${venv}/bin/python" ]] || ! "${venv}/bin/python" -c 'import openai, anthropic, pytest, aiosmtpd, openapi_spec_validator, standardwebhooks' 2>/dev/null; then
	rm -rf "${venv}"
	python3 -m venv "${venv}"
	"${venv}/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/byok-e2e.XXXXXX")"
cleanup() {
	for dir in "${work}"/directus*; do scripts/directus-down.sh "${dir}" >/dev/null 2>&1 || true; done
	scripts/smtp-sink.sh --dir "${work}/smtp" --stop || true
	[[ -d "${work}/cluster" ]] && { scripts/cluster-down.sh "${work}/cluster" >/dev/null 2>&1 || true; }
	rm -rf "${work}"
}
trap cleanup EXIT

directus_port="$(free_port)"
sidecar_port="$(free_port)"
smtp_port="$(free_port)"

step "SMTP sink on 127.0.0.1:${smtp_port} (Directus e-mails users there)"
maildir="$(scripts/smtp-sink.sh --dir "${work}/smtp" --port "${smtp_port}" --python "${venv}/bin/python")"

# The end-to-end suite, run once per shared-state backend: in memory (no REDIS_URL), then in Redis. Each run
# gets a freshly seeded Directus in work/<name> (the caller stops it).
e2e() {
	local dir="${work}/$1" instance_env
	shift
	step "real Directus on 127.0.0.1:${directus_port} (schema + hook + seed) in ${dir}"
	instance_env="$(scripts/directus-up.sh --dir "${dir}" --port "${directus_port}" \
		--bridge-url "http://127.0.0.1:${sidecar_port}" --smtp "127.0.0.1:${smtp_port}" | tail -n 1)"
	if ! BYOK_E2E_INSTANCE="${instance_env}" BYOK_E2E_SIDECAR_ADDR="127.0.0.1:${sidecar_port}" \
		BYOK_E2E_PYTHON="${venv}/bin/python" BYOK_E2E_MAILDIR="${maildir}" "$@" \
		cargo test --locked --features e2e --test e2e; then
		printf '\n--- last lines of the Directus log ---\n' >&2
		tail -n 40 "${dir}/directus.log" >&2 || true
		printf '\n--- last lines of the sidecar log ---\n' >&2
		tail -n 40 "${dir}/sidecar.log" >&2 || true
		exit 1
	fi
}
step "end-to-end tests (real Directus, real sidecar binary, no REDIS_URL)"
e2e directus env

step "the account page in real headless Chromium (puppeteer-core), real sidecar, same Directus"
browser_modules="$(scripts/browser-deps.sh | tail -n 1)"
BROWSER_NODE_MODULES="${browser_modules}" BYOK_E2E_INSTANCE="${work}/directus/instance.env" \
	BYOK_E2E_SIDECAR_ADDR="127.0.0.1:${sidecar_port}" BYOK_SCREENSHOT_DIR="${work}/screenshots" \
	node --test tests/browser/
scripts/directus-down.sh "${work}/directus" >/dev/null 2>&1 || true

step "several replicas: PostgreSQL, Redis, Directus on them, two sidecar replicas (scripts/cluster-up.sh)"
# The test build also builds target/debug/byok-bridge (as for every integration test): the replicas run it.
cargo test --locked --features e2e --test replicas --no-run
# The service accounts (postgres, redis) must reach the folder: mktemp -d makes it 700.
chmod 711 "${work}"
# The tests serve the fake provider on provider_port. A long caller cache: a change reaches the other replica
# through Redis or not for minutes. A small free-tier limit, to count across replicas; none to speak of for
# premium users, whom the load tests use.
provider_port="$(free_port)"
cluster_env="$(scripts/cluster-up.sh --dir "${work}/cluster" --sidecar-bin target/debug/byok-bridge \
	--sidecar-env "OPENAI_BASE_URL=http://127.0.0.1:${provider_port}/v1" \
	--sidecar-env INTERNAL_OPENAI_API_KEY=sk-internal-cluster-openai-00000000000 \
	--sidecar-env USER_CACHE_TTL_SECS=300 --sidecar-env RATE_LIMIT_FREE_PER_MIN=6 \
	--sidecar-env RATE_LIMIT_PREMIUM_PER_MIN=1000000 | tail -n 1)"
redis_port="$(sed -n 's/^REDIS_PORT=//p' "${cluster_env}")"

# Redis databases: Directus 0, the cluster's replicas 1, the shared-state tests 2, this suite 3.
step "end-to-end tests again, the sidecar keeping its shared state in Redis (REDIS_URL)"
e2e directus-redis env BYOK_E2E_REDIS_URL="redis://127.0.0.1:${redis_port}/3"
scripts/directus-down.sh "${work}/directus-redis" >/dev/null 2>&1 || true

step "several-replicas tests (real Redis; the cluster in BYOK_E2E_CLUSTER)"
if ! BYOK_E2E_REDIS_URL="redis://127.0.0.1:${redis_port}/2" BYOK_E2E_CLUSTER="${cluster_env}" \
	BYOK_E2E_PROVIDER_ADDR="127.0.0.1:${provider_port}" cargo test --locked --features e2e --test replicas; then
	for log in "${work}"/cluster/sidecar-*.log "${work}/cluster/directus/directus.log"; do
		printf '\n--- last lines of %s ---\n' "${log}" >&2
		tail -n 40 "${log}" >&2 || true
	done
	exit 1
fi
scripts/cluster-down.sh "${work}/cluster" >/dev/null

if [[ -x scripts/check-monitoring-sql.sh ]]; then
	step "the spec's monitoring SQL, its safe variant and the troubleshooting query on PostgreSQL"
	scripts/check-monitoring-sql.sh
fi

step "all checks passed"
