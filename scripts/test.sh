#!/usr/bin/env bash
# The one command that runs every check: formatting, lints, unit and API tests, the hook's tests, and the
# end-to-end tests against a real Directus 12.4.0 (installed on first use, cached in ~/.cache/byok-bridge).
#
#   scripts/test.sh
#
# Needs: cargo (with rustfmt and clippy), node >= 20, npm, curl. Everything else it installs itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features --locked -- -D warnings

step "unit and API tests (Directus faked with wiremock)"
cargo test --locked

step "hook extension tests and the independent envelope implementation (node --test)"
node --test hooks/byok-bridge/test/ tests/interop/

step "Directus 12.4.0 install (cached)"
scripts/directus-install.sh >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/byok-e2e.XXXXXX")"
cleanup() {
	scripts/directus-down.sh "${work}/directus" >/dev/null 2>&1 || true
	rm -rf "${work}"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
directus_port="$(free_port)"
sidecar_port="$(free_port)"

step "real Directus on 127.0.0.1:${directus_port} (schema + hook + seed)"
instance_env="$(scripts/directus-up.sh --dir "${work}/directus" --port "${directus_port}" \
	--bridge-url "http://127.0.0.1:${sidecar_port}" | tail -n 1)"

step "end-to-end tests (real Directus, real sidecar binary)"
if ! BYOK_E2E_INSTANCE="${instance_env}" BYOK_E2E_SIDECAR_ADDR="127.0.0.1:${sidecar_port}" \
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
