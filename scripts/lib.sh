# shellcheck shell=bash
# Shared by the project's scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.

# A progress heading on stderr.
step() { printf '\n==> %s\n' "$*" >&2; }

# A loopback TCP port that is free right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The bin folder of the newest installed PostgreSQL server (Debian layout), or return 1.
find_pg_bin() {
	local d
	while IFS= read -r d; do
		if [[ -x "${d}/initdb" && -x "${d}/pg_ctl" && -x "${d}/postgres" ]]; then
			printf '%s\n' "${d}"
			return 0
		fi
	done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
	return 1
}

# Like find_pg_bin, but installs Debian's postgresql first when it is missing (needs root). Progress on stderr.
ensure_pg_bin() {
	find_pg_bin && return 0
	if ((EUID != 0)); then
		printf 'PostgreSQL server binaries are missing and installing them needs root (apt-get install postgresql)\n' >&2
		return 1
	fi
	printf 'installing postgresql from Debian\n' >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 || return 1
	find_pg_bin
}

# Makes sure redis-server and redis-cli are there, installing Debian's redis-server when missing (needs root).
ensure_redis() {
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
	if ((EUID != 0)); then
		printf 'redis-server is missing and installing it needs root (apt-get install redis-server)\n' >&2
		return 1
	fi
	printf 'installing redis-server from Debian\n' >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2 || return 1
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

# The account a service (PostgreSQL, Redis: they refuse or should not run as root) runs as: yourself when
# you are not root, else the named system account when it exists (Debian's packages create postgres and
# redis), else nobody.
service_user() {
	if ((EUID != 0)); then
		id -un
	elif id -u "$1" >/dev/null 2>&1; then
		printf '%s\n' "$1"
	else
		printf 'nobody\n'
	fi
}

# Runs a command as USER (runuser when root; directly otherwise).
as_user() {
	local user="$1"
	shift
	if ((EUID == 0)); then runuser -u "${user}" -- "$@"; else "$@"; fi
}
