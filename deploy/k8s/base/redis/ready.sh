#!/bin/sh
# Readiness of one Redis Cluster node: the cluster is whole (cluster_state:ok) and this node's
# shard has a linked replica (a master: at least one replica online; a replica: its link to the
# master is up). An unready Redis pod blocks the PodDisruptionBudget and the StatefulSet's
# rolling update, so no second node of the cluster is taken down while a shard has one copy.
#
#   ready.sh [PORT]   (default 6379, on this pod's loopback)
set -eu
cli_sh="$(dirname "$0")/redis-cli.sh"  # as the admin user, over TLS when on
port="${1:-6379}"
cli() { sh "$cli_sh" -h 127.0.0.1 -p "$port" "$@" | tr -d '\r'; }

if ! cli cluster info | grep -q '^cluster_state:ok$'; then
  echo "not ready: cluster_state is not ok" >&2
  exit 1
fi
replication="$(cli info replication)"
case "$replication" in
  *role:master*)
    if ! echo "$replication" | grep -q '^slave[0-9]*:.*state=online'; then
      echo "not ready: a master without an online replica" >&2
      exit 1
    fi
    ;;
  *)
    if ! echo "$replication" | grep -q '^master_link_status:up$'; then
      echo "not ready: a replica whose link to its master is down" >&2
      exit 1
    fi
    ;;
esac
