#!/bin/sh
# preStop of one Redis Cluster node: a master first hands its slots to one of its replicas
# (CLUSTER FAILOVER run on the replica: coordinated, the replica catches up before it takes
# over, no acknowledged write is lost), so a rolling update or a drained Kubernetes node costs a
# moment of redirects instead of a node timeout of failed writes. A replica simply stops.
# It never fails the shutdown: without an online replica, the master stops as it is.
#
#   pre-stop.sh [PORT]     (default 6379)
#   REDIS_FAILOVER_WAIT_S  how long to wait for the roles to swap (default 15)
set -u
cli_sh="$(dirname "$0")/redis-cli.sh"  # as the admin user, over TLS when on
port="${1:-6379}"
wait_s="${REDIS_FAILOVER_WAIT_S:-15}"
cli() { sh "$cli_sh" -h 127.0.0.1 -p "$port" "$@" | tr -d '\r'; }

[ "$(cli role | head -n 1)" = "master" ] || exit 0
replica="$(cli info replication \
  | sed -n 's/^slave[0-9]*:ip=\([^,]*\),port=\([0-9]*\),state=online.*/\1 \2/p' | head -n 1)"
if [ -z "$replica" ]; then
  echo "pre-stop: no online replica; stopping as a master" >&2
  exit 0
fi
set -- $replica
echo "pre-stop: failing over to the replica at $1:$2"
sh "$cli_sh" -h "$1" -p "$2" cluster failover
deadline=$(( $(date +%s) + wait_s ))
until [ "$(cli role | head -n 1)" = "slave" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "pre-stop: still a master after ${wait_s}s; stopping anyway" >&2
    exit 0
  fi
  sleep 0.2
done
echo "pre-stop: now a replica"
