#!/bin/sh
# Start one Redis Cluster node. A restarted pod (or container) gets a new IP address, and
# nodes.conf remembers the old addresses of every peer; when all nodes restart at once, none can
# find the others. The nodes announce stable host names (cluster-announce-hostname), which
# nodes.conf keeps after the address ("ip:port@bus,hostname"), so before starting, each peer's IP
# is replaced by the current address of its host name. Peers not resolvable yet keep their old IP
# and are found again when they connect to us.
#
#   REDIS_HOSTNAME           this node's stable host name (redis-0.redis-headless, redis-1, ...)
#   REDIS_MAXMEMORY, REDIS_MAXMEMORY_POLICY, REDIS_NODE_TIMEOUT_MS   see redis-settings.env
#   REDIS_ACL_FILE             the ACL users (devstack/redis_acl.py); the default user is off
#   REDIS_ADMIN_PASSWORD_FILE  the admin user's password: replication authenticates with it
#   REDIS_TLS_DIR              ca.crt, tls.crt, tls.key: TLS only (clients, replication and the
#                              cluster bus), the plaintext port closed; REDIS_PORT: the TLS
#                              port (default: redis.conf's port)
# The last three are optional (the scripts' tests run without them); the deployments set them.
set -eu
: "${REDIS_HOSTNAME:?set REDIS_HOSTNAME to this node's stable host name}"
: "${REDIS_MAXMEMORY:?}" "${REDIS_MAXMEMORY_POLICY:?}" "${REDIS_NODE_TIMEOUT_MS:?}"

if [ -s nodes.conf ]; then
  : > nodes.conf.new
  while IFS= read -r line; do
    address="$(echo "$line" | awk '{ print $2 }')"
    case "$address" in
      *,*)
        ip="$(getent ahostsv4 "${address#*,}" | awk '{ print $1; exit }')"
        if [ -n "$ip" ]; then
          line="$(echo "$line" | sed "s|^\([^ ]* \)[^:]*:|\1$ip:|")"
        fi
        ;;
    esac
    echo "$line" >> nodes.conf.new
  done < nodes.conf
  mv nodes.conf.new nodes.conf
fi

# Passwords go into a file only this user reads, never onto the command line (ps shows it).
security=""
if [ -n "${REDIS_ACL_FILE:-}" ]; then
  : "${REDIS_ADMIN_PASSWORD_FILE:?set REDIS_ADMIN_PASSWORD_FILE with REDIS_ACL_FILE}"
  (umask 077 && printf 'aclfile %s\nmasteruser %s\nmasterauth %s\n' "$REDIS_ACL_FILE" \
    "${REDIS_ADMIN_USER:-admin}" "$(cat "$REDIS_ADMIN_PASSWORD_FILE")" > security.conf)
  security="--include $(pwd)/security.conf"
fi
tls=""
if [ -n "${REDIS_TLS_DIR:-}" ]; then
  port="${REDIS_PORT:-$(awk '$1 == "port" { print $2 }' "${REDIS_CONF:-/conf/redis.conf}")}"
  tls="--port 0 --tls-port ${port:-6379} --tls-cluster yes --tls-replication yes
    --tls-cert-file $REDIS_TLS_DIR/tls.crt --tls-key-file $REDIS_TLS_DIR/tls.key
    --tls-ca-cert-file $REDIS_TLS_DIR/ca.crt --tls-auth-clients optional"
fi

# shellcheck disable=SC2086  # one argument per word of $security and $tls
exec redis-server "${REDIS_CONF:-/conf/redis.conf}" $security $tls \
  --cluster-announce-hostname "$REDIS_HOSTNAME" \
  --maxmemory "$REDIS_MAXMEMORY" \
  --maxmemory-policy "$REDIS_MAXMEMORY_POLICY" \
  --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" \
  "$@"
