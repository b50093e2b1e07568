# shellcheck shell=bash
# Shared by the project's scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.

# A progress heading on stderr.
step() { printf '\n==> %s\n' "$*" >&2; }

# A loopback TCP port that is free right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
