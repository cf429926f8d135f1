"""Manual use: ``python -m devstack [--dir .run/devstack] [--durable]``.

Starts PostgreSQL and the Redis Cluster, prints their addresses as shell
``export`` lines, and stops both on Ctrl-C or SIGTERM. (``make run`` uses
devstack.launcher, which starts the services too.)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from devstack.postgres import LocalPostgres
from devstack.processes import DevstackError
from devstack.redis_cluster import LocalRedisCluster


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".run/devstack"), help="state folder")
    parser.add_argument(
        "--durable", action="store_true", help="keep fsync on (default: fast, unsafe)"
    )
    parser.add_argument("--pg-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--redis-ports", type=_ports, default=None, help="6 comma-separated")
    parser.add_argument("--node-timeout-ms", type=int, default=2000)
    args = parser.parse_args(argv)

    # SIGTERM -> the same orderly shutdown as Ctrl-C.
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    base: Path = args.dir.absolute()
    with ExitStack() as stack:
        try:
            t0 = time.monotonic()
            pg = stack.enter_context(
                LocalPostgres(base / "postgres", durable=args.durable, port=args.pg_port)
            )
            t1 = time.monotonic()
            redis = stack.enter_context(
                LocalRedisCluster(
                    base / "redis", ports=args.redis_ports, node_timeout_ms=args.node_timeout_ms
                )
            )
            t2 = time.monotonic()
        except DevstackError as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 1
        print(f"# postgres up in {t1 - t0:.1f}s, redis cluster up in {t2 - t1:.1f}s")
        print(f"export BANK_DATABASE_URL={pg.dsn}")
        print(f"export BANK_REDIS_NODES={redis.startup_nodes_csv}")
        # ACLs are on: a process needs a user (the admin here; each service's own user and
        # password are in the ACL file).
        print(f"export BANK_REDIS_USERNAME={redis.admin.name}")
        print(f"export BANK_REDIS_PASSWORD={redis.admin.password}")
        print(f"# every user: {redis.base_dir / 'users.acl'}")
        print("# Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("devstack: stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
