#!/bin/sh
# redis-cli as the admin ACL user, over TLS when the nodes serve TLS: the one way the node
# scripts (cluster-init.sh, ready.sh, pre-stop.sh) and the health checks talk to Redis.
#
#   REDIS_ADMIN_PASSWORD_FILE  the admin user's password (a mounted Secret); unset: no AUTH
#   REDIS_ADMIN_USER           default admin
#   REDIS_TLS_DIR              ca.crt, tls.crt, tls.key (a mounted Secret); unset: plaintext
# The password travels in the environment (REDISCLI_AUTH), never on a command line.
set -eu
if [ -n "${REDIS_ADMIN_PASSWORD_FILE:-}" ]; then
  REDISCLI_AUTH="$(cat "$REDIS_ADMIN_PASSWORD_FILE")"
  export REDISCLI_AUTH
  set -- --user "${REDIS_ADMIN_USER:-admin}" "$@"
fi
if [ -n "${REDIS_TLS_DIR:-}" ]; then
  set -- --tls --cacert "$REDIS_TLS_DIR/ca.crt" --cert "$REDIS_TLS_DIR/tls.crt" \
    --key "$REDIS_TLS_DIR/tls.key" "$@"
fi
exec redis-cli "$@"
