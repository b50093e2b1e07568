#!/usr/bin/env bash
# A local SMTP sink for development and tests: accepts every message on 127.0.0.1:PORT and keeps it as a
# file in DIR/mail (Maildir), where nobody but you reads it. Needs a Python with aiosmtpd (tests/sdk/requirements.txt).
#
#   scripts/smtp-sink.sh --dir DIR --port PORT --python PYTHON     start it in the background (pid in DIR/smtp.pid)
#   scripts/smtp-sink.sh --dir DIR --stop                          stop it
#
# stdout: the Maildir path. Read messages with: PYTHON tests/e2e/maildir.py DIR/mail
set -euo pipefail

dir="" port="" python="" stop=false
while (($# > 0)); do
	case "$1" in
	--dir) dir="$2" && shift 2 ;;
	--port) port="$2" && shift 2 ;;
	--python) python="$2" && shift 2 ;;
	--stop) stop=true && shift ;;
	*) printf '[smtp-sink] unknown argument: %s\n' "$1" >&2 && exit 1 ;;
	esac
done
[[ -n "${dir}" ]] || { printf '[smtp-sink] --dir is required\n' >&2 && exit 1; }
mkdir -p "${dir}"

if ${stop}; then
	[[ -f "${dir}/smtp.pid" ]] && kill "$(cat "${dir}/smtp.pid")" 2>/dev/null || true
	rm -f "${dir}/smtp.pid"
	exit 0
fi
[[ "${port}" =~ ^[0-9]+$ && -x "${python}" ]] || { printf '[smtp-sink] needs --port N and --python PATH\n' >&2 && exit 1; }

mkdir -p "${dir}/mail/cur" "${dir}/mail/new" "${dir}/mail/tmp"
setsid "${python}" -m aiosmtpd -n -l "127.0.0.1:${port}" -c aiosmtpd.handlers.Mailbox "${dir}/mail" \
	</dev/null >>"${dir}/smtp.log" 2>&1 &
printf '%s\n' "$!" >"${dir}/smtp.pid"
# Ready when it accepts a connection (bounded: 10 s).
for _ in $(seq 1 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
		printf '%s\n' "${dir}/mail"
		exit 0
	fi
	sleep 0.1
done
printf '[smtp-sink] not listening on 127.0.0.1:%s after 10 s; see %s/smtp.log\n' "${port}" "${dir}" >&2
exit 1
