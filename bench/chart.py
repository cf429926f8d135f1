"""The PNG: latency over time, hit rate, database QPS (cache off vs on), and the maxima."""

from __future__ import annotations

from pathlib import Path

from bench.model import BenchRun, MixedPhase, Step
from bench.workload import Op

_COLORS = {False: "#c0392b", True: "#2471a3"}


def _label(phase: MixedPhase) -> str:
    return "cache on" if phase.cache_enabled else "cache off"


def write_chart(run: BenchRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(f"cachebank benchmark, {run.started_at}: {run.path}", fontsize=10)
    latency, hits, db = axes[0]
    per_op, reads, transfers = axes[1]

    for phase in run.mixed:
        seconds = sorted(phase.result.timeline)
        bins = [phase.result.timeline[s] for s in seconds]
        x = [s + 0.5 for s in seconds]
        color = _COLORS[phase.cache_enabled]
        latency.plot(x, [b.latency.percentile_s(50) * 1000 for b in bins], color=color,
                     label=f"{_label(phase)} p50")
        latency.plot(x, [b.latency.percentile_s(99) * 1000 for b in bins], color=color,
                     linestyle="--", label=f"{_label(phase)} p99")
        reads_seen = [(xi, b.cache / (b.cache + b.database)) for xi, b in zip(x, bins, strict=True)
                      if b.cache + b.database]
        if reads_seen:
            hits.plot([p[0] for p in reads_seen], [p[1] * 100 for p in reads_seen], color=color,
                      label=_label(phase))
        if phase.db_series:
            db.plot([p[0] for p in phase.db_series], [p[1] for p in phase.db_series],
                    color=color, label=_label(phase))
    latency.set(title="latency over time (mixed workload)", xlabel="s", ylabel="ms",
                yscale="log")
    hits.set(title="reads served from the cache (replies' source)", xlabel="s", ylabel="%",
             ylim=(0, 105))
    db.set(title="PostgreSQL data statements/s", xlabel="s", ylabel="statements/s")
    for ax in (latency, hits, db):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)

    ops = [op.value for op in (Op.BALANCE, Op.RECENT, Op.TRANSFER, Op.LOGIN)]
    width = 0.38
    for i, phase in enumerate(run.mixed):
        means = [phase.result.histogram(op).mean_s * 1000 if phase.result.histogram(op).count
                 else 0.0 for op in ops]
        per_op.bar([j + (i - 0.5) * width for j in range(len(ops))], means, width,
                   color=_COLORS[phase.cache_enabled], label=_label(phase))
    per_op.set_xticks(range(len(ops)), [o.replace("_", "\n") for o in ops], fontsize=8)
    per_op.set(title="average latency per operation", ylabel="ms", yscale="log")
    if run.mixed:
        per_op.legend(fontsize=8)

    _steps(reads, run.read_steps, 99, "max balance reads (closed loop)")
    _steps(transfers, run.transfer_steps, 95, "max transfers (closed loop)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _steps(ax: object, steps: list[Step], percentile: float, title: str) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    ax.set_title(title)
    if not steps:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    x = [s.concurrency for s in steps]
    ax.plot(x, [s.result.throughput for s in steps], marker="o", color="#1e8449",
            label="per second")
    ax.set(xlabel="concurrent clients", ylabel="per second", xscale="log")
    tail = ax.twinx()
    tail.plot(x, [s.result.histogram().percentile_s(percentile) * 1000 for s in steps],
              marker="s", color="#7d3c98", linestyle="--", label=f"p{percentile:g}")
    tail.set_ylabel(f"p{percentile:g} ms")
    lines = ax.get_legend_handles_labels()[0] + tail.get_legend_handles_labels()[0]
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, loc="upper left")
