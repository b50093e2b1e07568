#!/usr/bin/env bash
# Write the .env of docker-compose.yml from deploy/compose.env.example, generating every secret:
#
#   scripts/compose-env.sh [FILE]      # FILE defaults to .env at the repository root; never overwritten
#
# Filled in: POSTGRES_PASSWORD, DIRECTUS_SECRET, DIRECTUS_ADMIN_PASSWORD, DIRECTUS_ADMIN_TOKEN, DIRECTUS_TOKEN,
# WEBHOOK_SECRET, ENCRYPTION_KEY, OPERATOR_TOKEN, FLOWS_TOKEN (from /dev/urandom); everything else is copied as it is (edit
# the provider keys and addresses afterwards). The file is mode 600; no secret is printed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly EXAMPLE="${REPO_ROOT}/deploy/compose.env.example"
out="${1:-${REPO_ROOT}/.env}"
[[ ! -e "${out}" ]] || {
	printf '[compose-env] %s exists; not overwriting it (delete it first to start over)\n' "${out}" >&2
	exit 1
}

hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
b64() { head -c "$1" /dev/urandom | base64 -w0; }
generate() {
	case "$1" in
	POSTGRES_PASSWORD) hex 24 ;;
	DIRECTUS_ADMIN_PASSWORD) hex 16 ;;
	DIRECTUS_SECRET | DIRECTUS_ADMIN_TOKEN | DIRECTUS_TOKEN | ENCRYPTION_KEY | OPERATOR_TOKEN | FLOWS_TOKEN) hex 32 ;;
	WEBHOOK_SECRET) printf 'whsec_%s' "$(b64 32)" ;;
	esac
}

tmp="$(mktemp "$(dirname "${out}")/.compose-env.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT
chmod 600 "${tmp}"
generated=0
while IFS= read -r line || [[ -n "${line}" ]]; do
	if [[ "${line}" =~ ^([A-Z_][A-Z0-9_]*)=$ ]] && value="$(generate "${BASH_REMATCH[1]}")" && [[ -n "${value}" ]]; then
		line="${line}${value}"
		generated=$((generated + 1))
	fi
	printf '%s\n' "${line}"
done <"${EXAMPLE}" >"${tmp}"
mv "${tmp}" "${out}"
trap - EXIT
printf '[compose-env] wrote %s (mode 600, %d secrets generated)\n' "${out}" "${generated}" >&2
printf '%s\n' "${out}"
