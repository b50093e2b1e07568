#!/usr/bin/env bash
# Install what the real-browser test of the account page (tests/browser/) needs, when it is missing:
#
#   scripts/browser-deps.sh
#
#   - Debian's chromium (/usr/bin/chromium), with apt-get, only when /usr/bin/chromium is absent (needs root).
#   - puppeteer-core, pinned to PUPPETEER_CORE_VERSION below, into
#     ${BYOK_CACHE_DIR:-$HOME/.cache/byok-bridge}/browser-node (npm install --prefix), with
#     PUPPETEER_SKIP_DOWNLOAD=1: it drives the Debian chromium and never downloads a browser of its own.
#
# Idempotent: a second run with everything in place changes nothing and makes no network call.
# stdout: the node_modules directory that holds puppeteer-core (last line). stderr: progress.
# Run the test with it:
#   BROWSER_NODE_MODULES="$(scripts/browser-deps.sh | tail -n 1)" node --test tests/browser/
set -euo pipefail

# 24.x is the newest line that runs on Node 18/20 (25.x needs Node >= 22.12). Bump deliberately.
readonly PUPPETEER_CORE_VERSION="24.43.1"
readonly CHROMIUM="/usr/bin/chromium"
readonly PREFIX="${BYOK_CACHE_DIR:-${HOME}/.cache/byok-bridge}/browser-node"

log() { printf '[browser-deps] %s\n' "$*" >&2; }
die() {
	printf '[browser-deps] error: %s\n' "$*" >&2
	exit 1
}

command -v node >/dev/null 2>&1 || die "node is required"
command -v npm >/dev/null 2>&1 || die "npm is required"

# --- Chromium (Debian package) ---------------------------------------------------------------------
if [[ -x "${CHROMIUM}" ]]; then
	log "chromium present: ${CHROMIUM}"
else
	[[ "$(id -u)" == 0 ]] || die "${CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
	command -v apt-get >/dev/null 2>&1 || die "${CHROMIUM} is missing and apt-get is not available"
	log "installing Debian chromium"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq chromium >&2
	[[ -x "${CHROMIUM}" ]] || die "apt-get install chromium did not provide ${CHROMIUM}"
fi

# --- puppeteer-core (npm, exact version) -----------------------------------------------------------
installed_version() {
	local manifest="${PREFIX}/node_modules/puppeteer-core/package.json"
	[[ -f "${manifest}" ]] || return 0
	node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "${manifest}" 2>/dev/null || true
}

if [[ "$(installed_version)" == "${PUPPETEER_CORE_VERSION}" ]]; then
	log "puppeteer-core ${PUPPETEER_CORE_VERSION} present in ${PREFIX}"
else
	log "installing puppeteer-core ${PUPPETEER_CORE_VERSION} into ${PREFIX}"
	mkdir -p "${PREFIX}"
	# A package.json of its own, so npm installs here and never walks up to another project's.
	[[ -f "${PREFIX}/package.json" ]] ||
		printf '{\n  "name": "byok-bridge-browser-test-deps",\n  "private": true,\n  "version": "0.0.0"\n}\n' \
			>"${PREFIX}/package.json"
	PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROME_DOWNLOAD=1 PUPPETEER_SKIP_CHROME_HEADLESS_SHELL_DOWNLOAD=1 \
		npm install --prefix "${PREFIX}" --save-exact --no-audit --no-fund --loglevel=error \
		"puppeteer-core@${PUPPETEER_CORE_VERSION}" >&2
	[[ "$(installed_version)" == "${PUPPETEER_CORE_VERSION}" ]] ||
		die "puppeteer-core ${PUPPETEER_CORE_VERSION} is not in ${PREFIX}/node_modules after npm install"
fi

printf '%s\n' "${PREFIX}/node_modules"
