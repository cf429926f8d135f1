#!/bin/sh
# The Redis ACL users of compose with new passwords (devstack/redis_acl.py has the rules), in
# deploy/compose/secrets/redis/ (not committed):
#   users.acl              mounted into every Redis node (aclfile)
#   redis-admin.password   the nodes' replication user (masterauth) and redis-cli's
#   compose.env            REDIS_<USER>_PASSWORD lines: append them to .env (compose puts each
#                          into its process's BANK_REDIS_PASSWORD)
# Run from the repository with its venv (make setup). Running it again rotates every password:
# replace the lines in .env, then `docker compose up -d --force-recreate` (the nodes re-read
# users.acl at start).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${1:-$here/secrets/redis}"
cd "$root"
PYTHONPATH="$root" "${PYTHON:-$root/.venv/bin/python}" -c \
  'import sys; from devstack.redis_acl import main; raise SystemExit(main(sys.argv[1:]))' "$dir"
# The Redis containers run as uid 999 and must read these two; compose.env is read on the host
# only and stays 0600.
chmod 0644 "$dir/users.acl" "$dir/redis-admin.password"
