#!/bin/sh
# One-shot job: make a Redis Cluster (3 masters + 3 replicas) out of six fresh nodes, and set
# maxmemory, the eviction policy and the cluster node timeout on every node (the same values
# start.sh starts the nodes with). Safe to run again (a re-applied Job, a restarted compose
# project): when some node already knows other nodes, the cluster exists; then the settings are
# applied, and a node that knows only itself (its volume was lost, or it is new) joins as a
# replica, and the old identity of that host is forgotten by every node.
#
#   REDIS_NODES      space-separated host:port of the six nodes (required)
#   REDIS_REPLICAS   replicas per master (default 1)
#   REDIS_MAXMEMORY, REDIS_MAXMEMORY_POLICY, REDIS_NODE_TIMEOUT_MS   see redis-settings.env
#   REDIS_WAIT_S     how long to wait for the nodes and the cluster (default 300)
set -eu
cli_sh="$(dirname "$0")/redis-cli.sh"  # as the admin user, over TLS when on

: "${REDIS_NODES:?set REDIS_NODES to the nodes' host:port list}"
: "${REDIS_MAXMEMORY:?}" "${REDIS_MAXMEMORY_POLICY:?}" "${REDIS_NODE_TIMEOUT_MS:?}"
REDIS_REPLICAS="${REDIS_REPLICAS:-1}"
REDIS_WAIT_S="${REDIS_WAIT_S:-300}"

cli() { node="$1"; shift; sh "$cli_sh" -h "${node%:*}" -p "${node##*:}" "$@"; }
info_field() { cli "$1" cluster info | tr -d '\r' | awk -F: -v key="$2" '$1 == key { print $2 }'; }

deadline=$(( $(date +%s) + REDIS_WAIT_S ))
wait_until() {  # wait_until DESCRIPTION COMMAND...
  what="$1"; shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 1
  done
}

# CLUSTER MEET takes addresses; the nodes announce their host names themselves.
address() {
  host="${1%:*}"
  ip="$(getent ahostsv4 "$host" | awk '{ print $1; exit }')"
  echo "${ip:-$host}:${1##*:}"
}

addresses=""
member=""   # a node of the existing cluster, if there is one
alone=""    # nodes that know only themselves
for node in $REDIS_NODES; do
  wait_until "$node to answer PING" sh -c "sh '$cli_sh' -h '${node%:*}' -p '${node##*:}' ping | grep -q PONG"
  cli "$node" config set maxmemory "$REDIS_MAXMEMORY" maxmemory-policy "$REDIS_MAXMEMORY_POLICY" \
      cluster-node-timeout "$REDIS_NODE_TIMEOUT_MS" >/dev/null
  addresses="$addresses $(address "$node")"
  echo "$node ($(address "$node")): maxmemory $REDIS_MAXMEMORY, $REDIS_MAXMEMORY_POLICY," \
       "cluster-node-timeout $REDIS_NODE_TIMEOUT_MS"
  if [ "$(info_field "$node" cluster_known_nodes)" -gt 1 ]; then
    member="${member:-$node}"
  else
    alone="$alone $node"
  fi
done

# rejoin NODE: a node without its old identity joins as a replica of the master with the fewest
# replicas; every node forgets the failed entries that announced the same host name.
rejoin() {
  own="$(cli "$1" cluster nodes | tr -d '\r' | awk '$3 ~ /myself/ { print $1, $2; exit }')"
  id="${own%% *}"
  hostname="$(echo "${own#* }" | awk -F, '{ print $2 }')"
  sh "$cli_sh" --cluster add-node "$(address "$1")" "$(address "$member")" --cluster-slave
  stale="$(cli "$member" cluster nodes | tr -d '\r' | awk -v id="$id" -v host="$hostname" \
    'host != "" && $1 != id && $3 ~ /fail/ { n = split($2, a, ","); if (n > 1 && a[2] == host) print $1 }')"
  for old in $stale; do
    for node in $REDIS_NODES; do
      cli "$node" cluster forget "$old" >/dev/null 2>&1 || true
    done
    echo "$1: forgot its old identity $old"
  done
}

if [ -n "$member" ]; then
  echo "the cluster exists already ($(info_field "$member" cluster_known_nodes) nodes known)"
  for node in $alone; do
    echo "$node knows only itself: adding it as a replica"
    rejoin "$node"
  done
else
  # shellcheck disable=SC2086  # one argument per address
  sh "$cli_sh" --cluster create $addresses --cluster-replicas "$REDIS_REPLICAS" --cluster-yes
fi

for node in $REDIS_NODES; do
  wait_until "cluster_state:ok on $node" sh -c \
    "sh '$cli_sh' -h '${node%:*}' -p '${node##*:}' cluster info | grep -q '^cluster_state:ok'"
done
first="${REDIS_NODES%% *}"
echo "Redis Cluster ready: $(info_field "$first" cluster_known_nodes) nodes," \
     "$(info_field "$first" cluster_size) masters"
