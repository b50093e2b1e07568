#!/usr/bin/env bash
# Brings up the whole system locally and shows how to use it:
# Directus 12.4.0 on SQLite (schema, hook extension, seed data) + the byok-bridge sidecar.
#
#   scripts/dev.sh          Ctrl-C stops both. State lives in .dev/ (rm -rf .dev for a fresh start).
#
# Ports: DIRECTUS_PORT (default 8055), SIDECAR_PORT (default 8787), SMTP_PORT (default 8025: a local sink that
# keeps the e-mails Directus sends in .dev/smtp/mail).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
directus_port="${DIRECTUS_PORT:-8055}"
sidecar_port="${SIDECAR_PORT:-8787}"
smtp_port="${SMTP_PORT:-8025}"
dir=".dev/directus"

scripts/directus-install.sh >/dev/null
printf '==> building the sidecar (release)\n' >&2
cargo build --release --locked --bin byok-bridge --example fake_provider

mkdir -p .dev && chmod 700 .dev
if [[ ! -x .dev/venv/bin/python ]] || ! .dev/venv/bin/python -c 'import aiosmtpd' 2>/dev/null; then
	printf '==> a Python venv with aiosmtpd (the local SMTP sink)\n' >&2
	python3 -m venv .dev/venv && .dev/venv/bin/pip install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi
maildir="$(scripts/smtp-sink.sh --dir .dev/smtp --port "${smtp_port}" --python .dev/venv/bin/python)"
if [[ -f "${dir}/instance.env" ]]; then
	scripts/directus-up.sh --dir "${dir}" --start-only >/dev/null
else
	scripts/directus-up.sh --dir "${dir}" --port "${directus_port}" \
		--bridge-url "http://127.0.0.1:${sidecar_port}" --smtp "127.0.0.1:${smtp_port}" >/dev/null
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; scripts/directus-down.sh "${dir}" >/dev/null 2>&1 || true; scripts/smtp-sink.sh --dir .dev/smtp --stop' EXIT

# Without real provider settings, a local stand-in for the OpenAI API answers gateway calls (the demo works
# offline). Set OPENAI_BASE_URL and INTERNAL_OPENAI_API_KEY (and the Anthropic pair) to use the real APIs.
if [[ -z "${OPENAI_BASE_URL:-}" ]]; then
	fake_port="${FAKE_OPENAI_PORT:-8798}"
	BIND_ADDR="127.0.0.1:${fake_port}" target/release/examples/fake_provider &
	pids+=("$!")
	OPENAI_BASE_URL="http://127.0.0.1:${fake_port}/v1"
	INTERNAL_OPENAI_API_KEY="sk-local-fake-provider-key-000000"
fi

# The vault key and the operator token are generated once and kept with the local instance.
for secret in encryption.key operator.token; do
	if [[ ! -f ".dev/${secret}" ]]; then
		(umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >".dev/${secret}")
	fi
done
get() { sed -n "s/^$1=//p" "${dir}/instance.env" | head -n 1; }
directus_url="$(get DIRECTUS_URL)"

cat <<INFO

byok-bridge is starting.

  Directus admin   ${directus_url}/admin
                   $(get DIRECTUS_ADMIN_EMAIL) / $(get DIRECTUS_ADMIN_PASSWORD)
                   Feature flags: Content > Feature Flags (toggle byok_only_mode and watch the sidecar log)
  Account page     http://127.0.0.1:${sidecar_port}/account   (sign in as a demo user below)
  Sidecar          http://127.0.0.1:${sidecar_port}   (/healthz, /readyz, /v1/status, /openapi.json)
  E-mails          ${maildir}/new   (what Directus sends users: key incidents, spending alerts)
  Spending caps    free: \$2 a day on credits; premium: \$10 a day on credits, \$50 a day on own keys;
                   the platform: \$500 a day, admin@example.com told at 80%
  Demo users       $(get PREMIUM_USER_EMAIL) / $(get PREMIUM_USER_PASSWORD)   (premium, 1000 cents)
                   $(get FREE_USER_EMAIL) / $(get FREE_USER_PASSWORD)   (free, 500 cents)

Try it (in another terminal):

  TOKEN=\$(curl -s ${directus_url}/auth/login -H 'content-type: application/json' \\
      -d '{"email":"$(get PREMIUM_USER_EMAIL)","password":"$(get PREMIUM_USER_PASSWORD)"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')
  curl -s http://127.0.0.1:${sidecar_port}/v1/route -H "Authorization: Bearer \$TOKEN" \\
      -H 'content-type: application/json' -d '{"provider":"openai"}'
  curl -s http://127.0.0.1:${sidecar_port}/v1/chat/completions -H "Authorization: Bearer \$TOKEN" \\
      -H 'content-type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}'
  curl -s http://127.0.0.1:${sidecar_port}/v1/jobs -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
      -d '{"api":"chat.completions","request":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}}'
  curl -s http://127.0.0.1:${sidecar_port}/v1/jobs -H "Authorization: Bearer \$TOKEN"   (queued in the background)
  curl -s http://127.0.0.1:${sidecar_port}/v1/usage -H "Authorization: Bearer \$TOKEN"
  curl -s http://127.0.0.1:${sidecar_port}/v1/calls -H "Authorization: Bearer \$TOKEN"   (recent calls, failed ones too)
  curl -s http://127.0.0.1:${sidecar_port}/v1/budget -H "Authorization: Bearer \$TOKEN"
  curl -s http://127.0.0.1:${sidecar_port}/v1/flags -H "Authorization: Bearer \$(cat .dev/operator.token)"

OpenAI calls go to $( [[ -n "${fake_port:-}" ]] && echo "a local fake OpenAI on port ${fake_port}" || echo "${OPENAI_BASE_URL}").

Ctrl-C stops the sidecar and Directus.

INFO

env -i PATH="${PATH}" BIND_ADDR="127.0.0.1:${sidecar_port}" DIRECTUS_URL="${directus_url}" \
	DIRECTUS_TOKEN="$(get DIRECTUS_TOKEN)" DIRECTUS_SECRET="$(get DIRECTUS_SECRET)" \
	WEBHOOK_SECRET="$(get WEBHOOK_SECRET)" STRIPE_WEBHOOK_SECRET="$(get STRIPE_WEBHOOK_SECRET)" ENCRYPTION_KEY="$(cat .dev/encryption.key)" DATA_DIR=.dev/sidecar-data \
	OPERATOR_TOKEN="$(cat .dev/operator.token)" PUBLIC_URL="http://127.0.0.1:${sidecar_port}" \
	OPENAI_BASE_URL="${OPENAI_BASE_URL}" INTERNAL_OPENAI_API_KEY="${INTERNAL_OPENAI_API_KEY:-}" \
	ANTHROPIC_BASE_URL="${ANTHROPIC_BASE_URL:-https://api.anthropic.com}" \
	INTERNAL_ANTHROPIC_API_KEY="${INTERNAL_ANTHROPIC_API_KEY:-}" \
	BUDGET_FREE="credits.daily=200,credits.monthly=2000" BUDGET_PREMIUM="credits.daily=1000,own_keys.daily=5000" \
	PLATFORM_DAILY_BUDGET_CENTS=50000 PLATFORM_BUDGET_ALERT_EMAILS=admin@example.com LOW_BALANCE_ALERT_CENTS=100 \
	RUST_LOG="${RUST_LOG:-info}" LOG_FORMAT=text target/release/byok-bridge
