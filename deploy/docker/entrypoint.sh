#!/bin/sh
# The image's entrypoint: one role per process, named like the components in
# devstack/components.py (tests/deploy checks that the two agree).
set -eu

role="${1:-help}"
[ "$#" -gt 0 ] && shift

case "$role" in
  account)         exec python -m services.account "$@" ;;
  transfer)        exec python -m services.transfer "$@" ;;
  auth)            exec python -m services.auth "$@" ;;
  outbox-relay)    exec python -m services.transfer.relay "$@" ;;
  # Retention jobs: one pass with --once (Kubernetes CronJobs), else a pass every few minutes.
  transfer-retention) exec python -m services.transfer.retention "$@" ;;
  auth-retention)  exec python -m services.auth.retention "$@" ;;
  migrate)         exec python -m shared.migrate "$@" ;;
  # Init containers: block until the migration job has brought the schema to head.
  wait-for-schema) exec python /app/deploy/docker/wait_for_schema.py "$@" ;;
  # Container health checks (compose; Kubernetes uses native grpc/http probes instead).
  healthcheck)     exec python /app/deploy/docker/healthcheck.py "$@" ;;
  help|--help|-h)
    echo "usage: ROLE [ARGS...]; ROLE is one of: account transfer auth outbox-relay" \
         "transfer-retention auth-retention migrate wait-for-schema healthcheck"
    ;;
  *)
    echo "unknown role: $role (try: help)" >&2
    exit 64
    ;;
esac
