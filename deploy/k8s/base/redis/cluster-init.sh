#!/bin/sh
# One-shot job: make a Redis Cluster (3 masters + 3 replicas) out of six fresh nodes, and set
# maxmemory, the eviction policy and the cluster node timeout on every node (the same values
# start.sh starts the nodes with). Safe to run again: when the first node already knows other
# nodes, the cluster exists and only the settings are applied.
#
#   REDIS_NODES      space-separated host:port of the six nodes (required)
#   REDIS_REPLICAS   replicas per master (default 1)
#   REDIS_MAXMEMORY, REDIS_MAXMEMORY_POLICY, REDIS_NODE_TIMEOUT_MS   see redis-settings.env
#   REDIS_WAIT_S     how long to wait for the nodes and the cluster (default 300)
set -eu

: "${REDIS_NODES:?set REDIS_NODES to the nodes' host:port list}"
: "${REDIS_MAXMEMORY:?}" "${REDIS_MAXMEMORY_POLICY:?}" "${REDIS_NODE_TIMEOUT_MS:?}"
REDIS_REPLICAS="${REDIS_REPLICAS:-1}"
REDIS_WAIT_S="${REDIS_WAIT_S:-300}"

cli() { node="$1"; shift; redis-cli -h "${node%:*}" -p "${node##*:}" "$@"; }
info_field() { cli "$1" cluster info | tr -d '\r' | awk -F: -v key="$2" '$1 == key { print $2 }'; }

deadline=$(( $(date +%s) + REDIS_WAIT_S ))
wait_until() {  # wait_until DESCRIPTION COMMAND...
  what="$1"; shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 1
  done
}

addresses=""
for node in $REDIS_NODES; do
  wait_until "$node to answer PING" sh -c "redis-cli -h '${node%:*}' -p '${node##*:}' ping | grep -q PONG"
  cli "$node" config set maxmemory "$REDIS_MAXMEMORY" maxmemory-policy "$REDIS_MAXMEMORY_POLICY" \
      cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" >/dev/null
  # CLUSTER MEET takes addresses; the nodes announce their host names themselves.
  host="${node%:*}"
  ip="$(getent ahostsv4 "$host" | awk '{ print $1; exit }')"
  addresses="$addresses ${ip:-$host}:${node##*:}"
  echo "$node ($ip): maxmemory $REDIS_MAXMEMORY, $REDIS_MAXMEMORY_POLICY," \
       "cluster-node-timeout $REDIS_NODE_TIMEOUT_MS"
done

first="${REDIS_NODES%% *}"
if [ "$(info_field "$first" cluster_known_nodes)" -gt 1 ]; then
  echo "the cluster exists already ($(info_field "$first" cluster_known_nodes) nodes known)"
else
  # shellcheck disable=SC2086  # one argument per address
  redis-cli --cluster create $addresses --cluster-replicas "$REDIS_REPLICAS" --cluster-yes
fi

for node in $REDIS_NODES; do
  wait_until "cluster_state:ok on $node" sh -c \
    "redis-cli -h '${node%:*}' -p '${node##*:}' cluster info | grep -q '^cluster_state:ok'"
done
echo "Redis Cluster ready: $(info_field "$first" cluster_known_nodes) nodes," \
     "$(info_field "$first" cluster_size) masters"
