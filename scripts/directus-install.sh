#!/usr/bin/env bash
# Ensure directus@12.4.0 is installed in a cached folder and print that folder.
#
#   scripts/directus-install.sh            -> last stdout line: the install dir
#
# Cache root: ${BYOK_CACHE_DIR:-$HOME/.cache/byok-bridge}; install dir: <root>/directus-12.4.0.
# Idempotent and safe to call concurrently (flock): the install runs at most once, later
# callers see the finished install and return immediately.
# 12.4.0 is pinned on purpose: 12.4.1 does not install (its @directus/app is missing from the registry).
set -euo pipefail

readonly DIRECTUS_VERSION="12.4.0"
readonly LOCK_WAIT_SECONDS="${BYOK_INSTALL_LOCK_WAIT:-1800}"

log() { printf '[directus-install] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cache_root="${BYOK_CACHE_DIR:-${HOME}/.cache/byok-bridge}"
install_dir="${cache_root}/directus-${DIRECTUS_VERSION}"
lock_file="${cache_root}/directus-${DIRECTUS_VERSION}.lock"

command -v node >/dev/null 2>&1 || die "node is not installed (Node >= 20 is required)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
command -v flock >/dev/null 2>&1 || die "flock is not installed (util-linux)"

# True when the install dir holds a usable directus@12.4.0: the right version, the API package,
# the CLI, and the native SQLite driver loading (a killed npm run can leave a partial tree).
install_ok() {
	[[ -f "${install_dir}/package.json" ]] || return 1
	[[ -f "${install_dir}/node_modules/directus/package.json" ]] || return 1
	[[ -x "${install_dir}/node_modules/.bin/directus" ]] || return 1
	(
		cd "${install_dir}" &&
			node -e '
				const v = require("./node_modules/directus/package.json").version;
				if (v !== process.argv[1]) process.exit(1);
				require.resolve("@directus/api/package.json");
				require("sqlite3");
			' "${DIRECTUS_VERSION}"
	) >/dev/null 2>&1
}

mkdir -p "${cache_root}"

if install_ok; then
	log "directus@${DIRECTUS_VERSION} already installed"
	printf '%s\n' "${install_dir}"
	exit 0
fi

exec 9>"${lock_file}"
log "waiting for the install lock (at most ${LOCK_WAIT_SECONDS}s)"
flock -w "${LOCK_WAIT_SECONDS}" 9 || die "timed out waiting for ${lock_file}"

# Another caller may have finished the install while we waited.
if install_ok; then
	log "directus@${DIRECTUS_VERSION} installed by a concurrent caller"
	printf '%s\n' "${install_dir}"
	exit 0
fi

mkdir -p "${install_dir}"
# Directus reads the package.json of its working folder (PACKAGE_FILE_LOCATION); npm needs one too.
# Keep an existing one (it may list more deps), but make sure directus is pinned exactly.
if [[ -f "${install_dir}/package.json" ]]; then
	(
		cd "${install_dir}" &&
			node -e '
				const fs = require("fs");
				const p = JSON.parse(fs.readFileSync("package.json", "utf8"));
				p.dependencies = { ...(p.dependencies || {}), directus: process.argv[1] };
				fs.writeFileSync("package.json", JSON.stringify(p, null, 2) + "\n");
			' "${DIRECTUS_VERSION}"
	)
else
	cat >"${install_dir}/package.json" <<EOF
{
  "name": "byok-directus-runtime",
  "private": true,
  "version": "0.0.0",
  "dependencies": {
    "directus": "${DIRECTUS_VERSION}"
  }
}
EOF
fi

log "installing directus@${DIRECTUS_VERSION} into ${install_dir} (takes 3-4 minutes)"
start_s="${SECONDS}"
npm_log="${install_dir}/npm-install.log"
if ! (cd "${install_dir}" && npm install --no-audit --no-fund --loglevel=warn) >"${npm_log}" 2>&1; then
	tail -n 30 "${npm_log}" >&2 || true
	die "npm install failed (full log: ${npm_log})"
fi
install_ok || die "npm install finished but directus@${DIRECTUS_VERSION} is not usable (see ${npm_log})"
log "installed in $((SECONDS - start_s))s"
printf '%s\n' "${install_dir}"
