"""python -m chaos [--seed N] [--profile short|long] [--results DIR]: one seeded run; prints the
seed first (replay with it) and the report's path last. Exit 1 when a check failed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import time
from pathlib import Path

from chaos.profiles import PROFILES
from chaos.run import run

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="long")
    parser.add_argument("--results", type=Path, default=ROOT / "results",
                        help="where results/chaos-<time>-seed<N>/ goes")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    for noisy in ("httpx", "shared.redis_pipeline"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    print(f"chaos: seed {seed} ({args.profile} profile)", flush=True)
    folder = args.results / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    result, report = asyncio.run(run(seed, PROFILES[args.profile], folder))
    print(f"chaos: {'all checks passed' if result.passed else 'CHECKS FAILED'};"
          f" seed {seed}; report {report}", flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
