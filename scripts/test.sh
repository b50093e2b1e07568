#!/usr/bin/env bash
# The one command that runs every check: formatting, lints, unit and API tests, the hook's tests, and the
# end-to-end tests against a real Directus 12.4.0 (installed on first use, cached in ~/.cache/byok-bridge).
#
#   scripts/test.sh
#
# Needs: cargo (with rustfmt and clippy), node >= 20, npm, python3 (with venv), curl. Everything else it installs
# itself: Directus 12.4.0 (npm), the OpenAI and Anthropic SDKs (PyPI, in a venv), PostgreSQL (Debian) for the
# monitoring SQL check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features --locked -- -D warnings

step "unit and API tests (Directus faked with wiremock)"
cargo test --locked

step "hook extension tests and the independent envelope implementation (node --test)"
node --test hooks/byok-bridge/test/ tests/interop/

step "Python venv with the official OpenAI and Anthropic SDKs (cached)"
requirements_hash="$(sha256sum tests/sdk/requirements.txt | cut -c1-16)"
venv="${BYOK_CACHE_DIR:-${HOME}/.cache/byok-bridge}/sdk-venv-${requirements_hash}"
if [[ ! -x "${venv}/bin/python" ]] || ! "${venv}/bin/python" -c 'import openai, anthropic, pytest' 2>/dev/null; then
	rm -rf "${venv}"
	python3 -m venv "${venv}"
	"${venv}/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
fi

step "Directus 12.4.0 install (cached)"
scripts/directus-install.sh >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/byok-e2e.XXXXXX")"
cleanup() {
	scripts/directus-down.sh "${work}/directus" >/dev/null 2>&1 || true
	rm -rf "${work}"
}
trap cleanup EXIT

directus_port="$(free_port)"
sidecar_port="$(free_port)"

step "real Directus on 127.0.0.1:${directus_port} (schema + hook + seed)"
instance_env="$(scripts/directus-up.sh --dir "${work}/directus" --port "${directus_port}" \
	--bridge-url "http://127.0.0.1:${sidecar_port}" | tail -n 1)"

step "end-to-end tests (real Directus, real sidecar binary)"
if ! BYOK_E2E_INSTANCE="${instance_env}" BYOK_E2E_SIDECAR_ADDR="127.0.0.1:${sidecar_port}" \
	BYOK_E2E_PYTHON="${venv}/bin/python" \
	cargo test --locked --features e2e --test e2e; then
	printf '\n--- last lines of the Directus log ---\n' >&2
	tail -n 40 "${work}/directus/directus.log" >&2 || true
	printf '\n--- last lines of the sidecar log ---\n' >&2
	tail -n 40 "${work}/directus/sidecar.log" >&2 || true
	exit 1
fi

if [[ -x scripts/check-monitoring-sql.sh ]]; then
	step "the spec's monitoring SQL on PostgreSQL"
	scripts/check-monitoring-sql.sh
fi

step "all checks passed"
