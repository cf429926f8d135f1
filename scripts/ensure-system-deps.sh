#!/usr/bin/env bash
# Make sure the servers devstack runs are installed: redis-server + redis-cli and a
# PostgreSQL server (initdb/postgres under /usr/lib/postgresql/*/bin, with the
# pg_stat_statements module from contrib), and wrk, the load generator of `make bench`.
# The tests also need promtool (Debian's `prometheus` package: it checks and unit-tests the
# alert rules) and Debian's Redis and PostgreSQL exporters (the tests run them to see which
# metrics they export).
#
# Idempotent and silent when everything is present. As root it installs what is
# missing through apt; otherwise it names the packages and exits 1.
#
# Installing Debian's packages may start system services (redis on 6379, postgres
# on 5432, prometheus on 9090, the exporters on 9121/9187) on machines with an init
# system. That is harmless: devstack and the tests never use those; they run their
# own servers on free ports as child processes.
set -eu

PACKAGES="redis-server redis-tools postgresql postgresql-contrib wrk"
# Without recommends: the prometheus package would bring node_exporter and more.
MONITORING_PACKAGES="prometheus prometheus-redis-exporter prometheus-postgres-exporter"

missing() {
    local what=""
    command -v redis-server >/dev/null 2>&1 || what="$what redis-server"
    command -v redis-cli >/dev/null 2>&1 || what="$what redis-cli"
    command -v wrk >/dev/null 2>&1 || what="$what wrk"
    local initdb_found="" pgss_found="" f
    for f in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$f" ] && initdb_found=1
    done
    for f in /usr/lib/postgresql/*/lib/pg_stat_statements.so; do
        [ -f "$f" ] && pgss_found=1
    done
    [ -n "$initdb_found" ] || what="$what postgresql-server(initdb)"
    [ -n "$pgss_found" ] || what="$what pg_stat_statements"
    local tool
    for tool in promtool prometheus-redis-exporter prometheus-postgres-exporter; do
        command -v "$tool" >/dev/null 2>&1 || what="$what $tool"
    done
    printf '%s' "${what# }"
}

need="$(missing)"
[ -z "$need" ] && exit 0

if [ "${EUID:-$(id -u)}" -ne 0 ]; then
    echo "ensure-system-deps: missing: $need" >&2
    echo "ensure-system-deps: install as root: apt-get install -y $PACKAGES &&" \
         "apt-get install -y --no-install-recommends $MONITORING_PACKAGES" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-deps: missing: $need; no apt-get here, install the equivalents of: $PACKAGES" >&2
    exit 1
fi

echo "ensure-system-deps: installing $PACKAGES $MONITORING_PACKAGES (missing: $need)"
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $MONITORING_PACKAGES >/dev/null

need="$(missing)"
if [ -n "$need" ]; then
    echo "ensure-system-deps: still missing after apt-get install: $need" >&2
    exit 1
fi
echo "ensure-system-deps: ok"
