#!/usr/bin/env bash
# Brings up the whole system locally and shows how to use it:
# Directus 12.4.0 on SQLite (schema, hook extension, seed data) + the byok-bridge sidecar.
#
#   scripts/dev.sh          Ctrl-C stops both. State lives in .dev/ (rm -rf .dev for a fresh start).
#
# Ports: DIRECTUS_PORT (default 8055), SIDECAR_PORT (default 8787).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
directus_port="${DIRECTUS_PORT:-8055}"
sidecar_port="${SIDECAR_PORT:-8787}"
dir=".dev/directus"

scripts/directus-install.sh >/dev/null
printf '==> building the sidecar (release)\n' >&2
cargo build --release --locked --bin byok-bridge

mkdir -p .dev && chmod 700 .dev
if [[ -f "${dir}/instance.env" ]]; then
	scripts/directus-up.sh --dir "${dir}" --start-only >/dev/null
else
	scripts/directus-up.sh --dir "${dir}" --port "${directus_port}" \
		--bridge-url "http://127.0.0.1:${sidecar_port}" >/dev/null
fi
trap 'scripts/directus-down.sh "${dir}" >/dev/null 2>&1 || true' EXIT

# The vault key is generated once and kept with the local instance.
if [[ ! -f .dev/encryption.key ]]; then
	(umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >.dev/encryption.key)
fi
get() { sed -n "s/^$1=//p" "${dir}/instance.env" | head -n 1; }
directus_url="$(get DIRECTUS_URL)"

cat <<INFO

byok-bridge is starting.

  Directus admin   ${directus_url}/admin
                   $(get DIRECTUS_ADMIN_EMAIL) / $(get DIRECTUS_ADMIN_PASSWORD)
                   Feature flags: Content > Feature Flags (toggle byok_only_mode and watch the sidecar log)
  Sidecar          http://127.0.0.1:${sidecar_port}   (/healthz, /readyz)
  Demo users       $(get PREMIUM_USER_EMAIL) / $(get PREMIUM_USER_PASSWORD)   (premium, 1000 cents)
                   $(get FREE_USER_EMAIL) / $(get FREE_USER_PASSWORD)   (free, 500 cents)

Try it (in another terminal):

  TOKEN=\$(curl -s ${directus_url}/auth/login -H 'content-type: application/json' \\
      -d '{"email":"$(get PREMIUM_USER_EMAIL)","password":"$(get PREMIUM_USER_PASSWORD)"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')
  curl -s http://127.0.0.1:${sidecar_port}/v1/route -H "Authorization: Bearer \$TOKEN" \\
      -H 'content-type: application/json' -d '{"provider":"openai"}'
  curl -s http://127.0.0.1:${sidecar_port}/v1/flags -H "Authorization: Bearer \$(sed -n 's/^DIRECTUS_TOKEN=//p' ${dir}/instance.env)"

Ctrl-C stops the sidecar and Directus.

INFO

env -i PATH="${PATH}" BIND_ADDR="127.0.0.1:${sidecar_port}" DIRECTUS_URL="${directus_url}" \
	DIRECTUS_TOKEN="$(get DIRECTUS_TOKEN)" DIRECTUS_SECRET="$(get DIRECTUS_SECRET)" \
	WEBHOOK_SECRET="$(get WEBHOOK_SECRET)" ENCRYPTION_KEY="$(cat .dev/encryption.key)" \
	RUST_LOG="${RUST_LOG:-info}" LOG_FORMAT=text target/release/byok-bridge
