"""python -m edge --folder .run/edge --https-port 8443 --admin-port 9901 --gateway-port 8081 ...

Writes a fresh self-signed certificate and the Envoy config, validates it with
`envoy --mode validate`, and prints the config's path and the command that runs Envoy.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from edge import envoy_command, validate_config, write_edge_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__)
    parser.add_argument("--folder", type=Path, default=Path(".run/edge"))
    parser.add_argument("--https-port", type=int, default=8443)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--gateway-port", type=int, action="append", required=True,
                        help="a gateway replica's port on 127.0.0.1 (repeat for each replica)")
    args = parser.parse_args(argv)
    config = write_edge_config(args.folder, args.https_port, args.admin_port, args.gateway_port)
    result = validate_config(config)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return 1
    print(config)
    print(shlex.join(envoy_command(config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
