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

exec redis-server "${REDIS_CONF:-/conf/redis.conf}" \
  --cluster-announce-hostname "$REDIS_HOSTNAME" \
  --maxmemory "$REDIS_MAXMEMORY" \
  --maxmemory-policy "$REDIS_MAXMEMORY_POLICY" \
  --cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" \
  "$@"
