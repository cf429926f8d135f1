"""python -m bench (make bench): start the stack, run the design's workload with the cache off and
on, find the maxima, run the raw-server baselines, print the table and write the report.

    python -m bench                 about 5 minutes
    python -m bench --quick         under a minute, same phases, smaller
    python -m bench --via grpc      the services directly (per-service numbers)
    python -m bench --use-running   measure the stack `make run` started (cache as it is)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="under a minute, smaller and shorter")
    parser.add_argument("--via", choices=["auto", "edge", "grpc"], default="auto",
                        help="path to measure (auto: the Envoy edge, else gRPC)")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto",
                        help="closed-loop maxima through the edge: wrk (auto: when installed) "
                             "or the Python generator")
    parser.add_argument("--use-running", action="store_true",
                        help="measure the stack `make run` started instead of starting one")
    parser.add_argument("--users", type=int, help="bench users (default 2000, quick 300)")
    parser.add_argument("--rate", type=float, help="open-loop req/s of the mixed phases (105)")
    parser.add_argument("--seconds", type=float, help="measured seconds of each mixed phase")
    parser.add_argument("--arrivals", choices=["visits", "requests"],
                        help="mixed phases: user visits (default) or independent requests")
    parser.add_argument("--zipf", type=float, help="Zipf exponent of the user choice (1.0)")
    parser.add_argument("--workers", type=int, help="load generator processes (2)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="no pgbench / redis-benchmark")
    parser.add_argument("--phases", help="comma-separated subset of: mixed, reads, transfers, "
                                         "hot, baseline (default: all)")
    parser.add_argument("--before", type=Path,
                        help="summary.json of an earlier run: CPU per transfer and statements "
                             "per transfer before and after")
    parser.add_argument("--no-profile", action="store_true",
                        help="no py-spy sampling of the services during the maxima")
    parser.add_argument("--production-argon2", action="store_true",
                        help="logins hash with the services' default argon2id cost (see report)")
    parser.add_argument("--results", type=Path, default=ROOT / "results",
                        help="where reports go (git-ignored)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # `python -m bench` outside make: the generated protos live in gen/.
    for path in (str(ROOT), str(ROOT / "gen")):
        if path not in sys.path:
            sys.path.insert(0, path)
    from bench.chart import write_chart
    from bench.config import PHASES, BenchConfig
    from bench.report import build_report
    from bench.runner import Runner
    from bench.summary import load_summary, write_summary

    args = _parse(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, object] = {
        "via": args.via,
        "load": args.load,
        "use_running": args.use_running,
        "skip_baseline": args.skip_baseline,
        "production_argon2": args.production_argon2,
        "profile": not args.no_profile,
        "results_dir": args.results,
        "run_dir": ROOT / ".run" / "bench",
    }
    if args.phases:
        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        unknown = set(phases) - set(PHASES)
        if unknown:
            raise SystemExit(f"--phases: unknown {sorted(unknown)}; known: {', '.join(PHASES)}")
        overrides["phases"] = phases
    if args.before is not None:
        overrides["before"] = args.before
    for name, value in (("users", args.users), ("rate", args.rate),
                        ("mixed_seconds", args.seconds), ("zipf_exponent", args.zipf),
                        ("arrivals", args.arrivals), ("workers", args.workers)):
        if value is not None:
            overrides[name] = value
    config = (BenchConfig.quick_mode(**overrides) if args.quick
              else dataclasses.replace(BenchConfig(), **overrides))  # type: ignore[arg-type]

    run = Runner(config, log=lambda line: print(line, flush=True)).run()
    if config.before is not None:
        run.before = load_summary(config.before)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = config.results_dir / f"bench-{stamp}{'-quick' if config.quick else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    chart_name: str | None = "chart.png"
    try:
        write_chart(run, folder / "chart.png")
    except Exception as err:  # the table matters more than the picture
        print(f"chart not written: {err}", file=sys.stderr)
        chart_name = None
    report = build_report(run, chart_name)
    (folder / "report.md").write_text(report)
    write_summary(run, folder / "summary.json")
    print()
    print(report)
    print(f"report: {folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
