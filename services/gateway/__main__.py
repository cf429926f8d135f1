"""The gateway's configuration tool.

    python -m services.gateway render --out .run/gateway \\
        --upstream account=127.0.0.1:7051,127.0.0.1:7061 \\
        --upstream transfer=127.0.0.1:7052 --upstream auth=127.0.0.1:7053
        # a bundle for this machine (self-signed certificate), checked with envoy --mode validate
    python -m services.gateway validate .run/gateway       # envoy --mode validate
    python -m services.gateway command .run/gateway        # the argv that runs Envoy on it
    python -m services.gateway deployments [--check]       # compose's and Kubernetes' bundles

Settings come from the environment (BANK_EDGE_HOST, BANK_EDGE_HTTPS_PORT, BANK_EDGE_ADMIN_PORT,
BANK_GRPC_DEADLINE_S, BANK_GATEWAY_MAX_BODY_BYTES); flags override the ports.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from services.gateway.bundle import CONFIG, render_local
from services.gateway.deployments import DEPLOYMENTS, render, stale_files
from services.gateway.envoy_binary import envoy_command, validate_config
from services.gateway.envoy_clusters import Upstream
from shared.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("render", help="write and validate a local bundle")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--upstream", action="append", required=True, type=Upstream.parse,
                      help="NAME=HOST:PORT[,HOST:PORT...] for each service (account, ...)")
    make.add_argument("--https-port", type=int)
    make.add_argument("--admin-port", type=int)
    check = commands.add_parser("validate", help="envoy --mode validate on a bundle")
    check.add_argument("bundle", type=Path)
    show = commands.add_parser("command", help="print the argv that runs Envoy on a bundle")
    show.add_argument("bundle", type=Path)
    show.add_argument("--concurrency", type=int, default=1)
    deploy = commands.add_parser("deployments", help="write the compose and k8s bundles")
    deploy.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)

    if args.command == "render":
        # The generator reads only the gateway's fields: the secrets are not needed here.
        settings = Settings.from_env(database_url="", redis_nodes="")
        ports = {k: v for k, v in (("https_port", args.https_port),
                                   ("admin_port", args.admin_port)) if v is not None}
        config = render_local(args.out, settings, args.upstream, **ports)
        return _validate(config)
    if args.command == "validate":
        return _validate(_config(args.bundle))
    if args.command == "command":
        print(shlex.join(envoy_command(_config(args.bundle).absolute(),
                                       concurrency=args.concurrency)))
        return 0
    stale: list[str] = []
    for deployment in DEPLOYMENTS:
        if args.check:
            stale += stale_files(deployment)
        else:
            render(deployment, deployment.folder)
            print(f"wrote {deployment.folder}")
    if stale:
        print("stale (run python -m services.gateway deployments): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


def _config(bundle: Path) -> Path:
    return bundle / CONFIG if bundle.is_dir() else bundle


def _validate(config: Path) -> int:
    result = validate_config(config)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return 1
    print(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
