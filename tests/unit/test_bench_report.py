"""The report's pure parts: number formats, tables, the design's table from synthetic results."""

from __future__ import annotations

import math

import pytest

from bench.analysis import best_step, cache_hits_by_kind, client_hit_rate, compare
from bench.goals import goals, headline
from bench.model import BenchRun, MixedPhase, PhaseResult, ServerSide, Step
from bench.observe import DatabaseSnapshot, RedisSnapshot, SampleKey, parse_exposition, sum_by
from bench.pgprofile import WaitShares
from bench.report import build_report, latency_rows
from bench.statements import StatementCounts
from bench.summary import summarize
from bench.tables import fmt_bytes, fmt_ms, fmt_pct, fmt_rate, markdown_table, reduction


def test_number_formats() -> None:
    assert fmt_ms(0.00123) == "1.23"
    assert fmt_ms(0.0456) == "45.6"
    assert fmt_ms(1.5) == "1500"
    assert fmt_ms(math.nan) == fmt_ms(None) == "–"
    assert fmt_rate(2345.6, "/s") == "2,346/s"
    assert fmt_rate(12.34) == "12.3"
    assert fmt_pct(0.9123) == "91.2 %"
    assert fmt_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert fmt_bytes(512) == "512 B"
    assert reduction(100.0, 8.0) == pytest.approx(0.92)
    assert reduction(0.0, 5.0) is None


def test_markdown_table_pads_and_aligns() -> None:
    table = markdown_table(["op", "n"], [["balance", "5"], ["transfer", "100"]])
    lines = table.splitlines()
    assert lines[0] == "| op       |   n |"
    assert lines[1] == "|----------|----:|"
    assert lines[3] == "| transfer | 100 |"
    assert len({len(line) for line in lines}) == 1


def _phase_result(name: str, samples: dict[tuple[str, str], list[float]],
                  errors: dict[tuple[str, str], int] | None = None) -> PhaseResult:
    result = PhaseResult(name, measured_s=10.0)
    for (op, source), values in samples.items():
        for v in values:
            result.record(op, source, v)
    result.errors = dict(errors or {})
    return result


def _metrics(kind_results: dict[tuple[str, str], float]) -> dict[SampleKey, float]:
    return {("127.0.0.1:9101", "bank_cache_requests_total", (("kind", k), ("result", r))): v
            for (k, r), v in kind_results.items()}


BALANCE_SQL = "SELECT id::text, owner_user_id::text, currency, balance, version FROM accounts"
WARM_SQL = ("SELECT a.id FROM accounts a LEFT JOIN LATERAL (SELECT * FROM transactions) t ON"
            " true WHERE a.owner_user_id = $1::uuid")
LOGIN_SQL = "SELECT id::text, email, password_hash FROM users WHERE email = $1"
SESSION_SQL = "INSERT INTO sessions (user_id, secret_hash) VALUES ($1, $2) RETURNING id"
TRANSFER_SQL = "SELECT outcome FROM transfer_money($1, $2)"


def _mixed(enabled: bool, result: PhaseResult, statements: int,
           metrics: dict[SampleKey, float], calls: dict[str, int] | None = None) -> MixedPhase:
    """`calls`: statement text -> calls in the window (pg_stat_statements)."""
    per_statement = {n: (c, c, q) for n, (q, c) in enumerate((calls or {}).items())}
    db_before = DatabaseSnapshot(0, 0, 0, 0, 0, 0, at=100.0)
    db_after = DatabaseSnapshot(statements * 2, statements, statements // 2, 0, 0, 0, at=110.0,
                                per_statement=per_statement)
    redis_before = RedisSnapshot(0, 0, 0, 0, 0, 0, 6)
    redis_after = RedisSnapshot(900, 100, 5000, 3 << 20, 6 << 20, 42, 6)
    return MixedPhase(enabled, 105.0, result, metrics, ["127.0.0.1:9101"], redis_before,
                      redis_after, db_before, db_after)


def _run() -> BenchRun:
    off = _phase_result("mixed, cache off", {
        ("balance", "database"): [0.012] * 50,
        ("recent_transactions", "database"): [0.015] * 30,
        ("transfer", "none"): [0.020] * 10,
        ("login", "none"): [0.100] * 10,
    })
    on = _phase_result("mixed, cache on", {
        ("balance", "cache"): [0.001] * 48,
        ("balance", "database"): [0.010] * 2,
        ("recent_transactions", "cache"): [0.0015] * 30,
        ("transfer", "none"): [0.020] * 10,
        ("login", "none"): [0.100] * 10,
    }, errors={("login", "http 429"): 3})
    # hits: hit + hit_after_wait; misses: miss + bypass + fallback; version_wait_expired only
    # annotates a bypass already counted.
    on_metrics = _metrics({("balance", "hit"): 955, ("balance", "hit_after_wait"): 5,
                           ("balance", "miss"): 30, ("balance", "bypass"): 8,
                           ("balance", "fallback"): 2, ("balance", "version_wait_expired"): 5,
                           ("recent", "hit"): 600})
    run = BenchRun("2026-01-01T00:00:00", True, "HTTP through the edge", "edge",
                   {"account": 2}, [], 300, 1.0, "balance 50%", 0.8)
    account_queries = ("127.0.0.1:9101", "bank_db_queries_total",
                       (("query", "balance"), ("service", "account")))
    logins = ("127.0.0.1:9103", "bank_grpc_requests_total",
              (("code", "OK"), ("method", "Login"), ("service", "auth")))
    run.mixed = [
        _mixed(False, off, 3000, {account_queries: 800.0},
               {BALANCE_SQL: 800, LOGIN_SQL: 100, SESSION_SQL: 100, TRANSFER_SQL: 100}),
        _mixed(True, on, 150, {**on_metrics, account_queries: 40.0, logins: 100.0},
               {BALANCE_SQL: 20, WARM_SQL: 20, LOGIN_SQL: 100, SESSION_SQL: 100,
                TRANSFER_SQL: 100}),
    ]
    reads = [Step(16, _phase_result("r16", {("balance", "cache"): [0.004] * 1000})),
             Step(64, _phase_result("r64", {("balance", "cache"): [0.030] * 2500})),
             Step(128, _phase_result("r128", {("balance", "cache"): [0.090] * 2600}))]
    run.read_steps = reads
    server = ServerSide(
        seconds=10.0, transfers=500.0, cpu_s={"transfer-0": 0.5, "transfer-1": 0.5,
                                              "postgres": 1.0},
        statements=StatementCounts({("write", "transfers (transfer_money)"): 500,
                                    ("background", "outbox confirmations"): 2}),
        deadlocks=0, retries=0.0, transfer_money_ms=0.4,
        waits=WaitShares(100, 50, [(0.6, "running (CPU)"), (0.4, "Lock: transactionid")]))
    run.transfer_steps = [Step(8, _phase_result("t8", {("transfer", "none"): [0.05] * 500}),
                               server)]
    run.hot = Step(64, _phase_result("hot", {("transfer", "none"): [0.03] * 3500}), server)
    run.hot_share = 0.7
    run.baselines.pgbench_tps = 1000.0
    run.baselines.redis_get_rps = 50_000.0
    return run


def test_hit_rates_by_kind_from_the_services_metrics() -> None:
    kinds = cache_hits_by_kind(_run().mixed[1].metrics)
    assert kinds["balance"].hit_rate == pytest.approx(0.96)
    assert kinds["balance"].other == 5
    assert kinds["recent"].hit_rate == 1.0


def test_sum_by_adds_up_replicas_and_parses_the_exposition_format() -> None:
    text = (
        "# HELP bank_cache_requests_total Cache lookups\n"
        "# TYPE bank_cache_requests_total counter\n"
        'bank_cache_requests_total{kind="balance",result="hit"} 7.0\n'
        'bank_cache_requests_total{kind="balance",result="miss"} 3.0\n'
    )
    parsed = parse_exposition(text)
    delta: dict[SampleKey, float] = {}
    for endpoint in ("a:1", "b:2"):
        for (name, labels), value in parsed.items():
            delta[(endpoint, name, labels)] = value
    assert sum_by(delta, "bank_cache_requests_total", "result") == {("hit",): 14.0,
                                                                    ("miss",): 6.0}


def test_client_hit_rate_from_the_replies() -> None:
    on = _run().mixed[1].result
    assert client_hit_rate(on) == pytest.approx(78 / 80)


def test_comparison_of_cache_off_and_on() -> None:
    cmp = compare(_run())
    assert cmp.data_statements_off == pytest.approx(300.0)
    assert cmp.data_statements_on == pytest.approx(15.0)
    assert cmp.db_reduction == pytest.approx(0.95)
    # reads: 80 x ~13.1 ms before, 80 x ~1.4 ms after
    assert cmp.read_speed_up == pytest.approx((50 * 12 + 30 * 15) / (48 * 1 + 2 * 10 + 30 * 1.5),
                                              rel=1e-6)


def test_best_step_keeps_the_latency_goal() -> None:
    run = _run()
    best = best_step(run.read_steps, 99, 0.050)
    assert best is not None and best.concurrency == 64
    assert best_step(run.read_steps, 99, 0.001) is None


def test_latency_rows_split_cache_hits_and_misses() -> None:
    run = _run()
    off, on = run.mixed[0].result, run.mixed[1].result
    rows = latency_rows(off, on)
    balance = [r for r in rows[:4]]
    assert [r[1] for r in balance] == ["cache off", "cache on: hit", "cache on: miss",
                                       "cache on: all"]
    assert balance[0][0] == "balance" and balance[1][0] == ""
    assert balance[1][2:6] == ["48", "1.00", "1.00", "1.00"]
    assert balance[3][6] == f"{12 / ((48 * 1 + 2 * 10) / 50):.1f}x"
    transfer = [r for r in rows if r[0] == "transfer"]
    assert transfer and transfer[0][1] == "cache off"


def test_headline_and_goals_show_the_measured_figures() -> None:
    run = _run()
    table = headline(run)
    assert "96.0 %" in table  # balance hit rate from the services' metrics
    read_path = next(line for line in table.splitlines() if "reads the cache serves" in line)
    # account reads 80/s with the cache off; 2/s plus 2/s of warm-ups with it on
    assert "80.0" in read_path and "4.0" in read_path and "95.0 % less" in read_path
    rows = {r[0]: r for r in goals(run)}
    reads = rows["cached balance reads through Envoy, session check + rate limit"]
    assert reads[2].startswith("250/s via edge") and reads[3] == "missed"
    assert rows["balance hit rate (steady state)"][3] == "met"
    recent = rows["recent-transactions hit rate"]
    assert recent[2] == "100.0 %" and recent[3] == "met"
    cut = next(r for name, r in rows.items() if name.startswith("read statements"))
    assert cut[2].startswith("95.0 % fewer") and cut[3] == "met"
    assert "every SELECT: 84.4 % fewer" in cut[2]  # (80 + 10) -> (2 + 2 + 10) per s
    per_transfer = rows["PostgreSQL round trips per transfer on the request path"]
    assert per_transfer[2].startswith("1.000 at 8 concurrent") and per_transfer[3] == "met"
    assert "outbox confirmations 0.004" in per_transfer[2]
    login = rows["statements per login (credentials, new session, attempt counters)"]
    assert login[2:] == ["2.00", "met"]
    hot = next(r for name, r in rows.items() if name.startswith("hot account"))
    assert hot[2].startswith("350/s, 0 deadlocks, 0 5xx") and hot[3] == "met"
    transfers = rows["transfers"]
    assert transfers[2].startswith("50.0/s, 0.05x pgbench") and transfers[3] == "missed"


def test_the_transfer_and_hot_account_sections_and_the_summary() -> None:
    run = _run()
    report = build_report(run)
    assert "## Where a transfer's time goes" in report
    assert "| transfer " in report and "2.000" in report  # CPU ms per transfer, replicas summed
    assert "## Hot account" in report
    assert "Lock: transactionid 40.0 %" in report
    summary = summarize(run)
    assert summary["transfer_max"]["cpu_ms_per_transfer"] == {"postgres": 2.0, "transfer": 2.0}
    assert summary["statements_per_login"] == 2.0
    run.before = {"transfer_steps": {"8": {
        "cpu_ms_per_transfer": {"postgres": 3.0, "transfer": 4.0},
        "statements_per_transfer": {"write: transfers (transfer_money)": 1.0,
                                    "background: outbox confirmations": 1.0}}}}
    again = build_report(run)
    assert "before: CPU ms per transfer" in again and "| 4.000 " in again


def test_full_report_names_the_path_and_lists_errors() -> None:
    report = build_report(_run())
    assert "Path measured: **HTTP through the edge**" in report
    assert "login http 429: 3" in report
    assert "## Maximum cached balance reads" in report
    assert "![" in report and "chart.png" in report
    assert "chart.png" not in build_report(_run(), chart_name=None)


def test_py_spy_stacks_are_summed_by_top_function_and_library() -> None:
    from bench.profiling import area_of, summarize_collapsed

    collapsed = (
        "<module> (runpy.py:198);run (uvloop/__init__.py:92);"
        "execute (sqlalchemy/engine/base.py:1410);fetch (psycopg/cursor.py:80) 30\n"
        "<module> (runpy.py:198);get_balance (/work/main/services/account/adapters/x.py:12) 10\n"
        "<module> (runpy.py:198);_read (grpc/aio/_call.py:300) 60\n"
        "garbage line\n"
    )
    summary = summarize_collapsed("account-0", collapsed)
    assert summary.samples == 100
    assert summary.top_functions[0] == (0.6, "_read (aio/_call.py)")
    assert dict((a, s) for s, a in summary.areas) == {
        "gRPC": 0.6, "psycopg": 0.3, "our code (services)": 0.1}
    assert area_of("/x/site-packages/redis/asyncio/cluster.py") == "redis-py"
    assert summarize_collapsed("empty", "").samples == 0


def test_proc_parsers_for_the_cpu_accounting() -> None:
    from bench.observe import CpuSnapshot, parse_pid_stat, parse_proc_stat_busy

    stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n"
    assert parse_proc_stat_busy(stat) == (160, 980)
    pid_stat = "1234 (python -m (x)) S 77 1234 1234 0 -1 4194560 9 0 0 0 250 31 0 0 20 0 3 0"
    assert parse_pid_stat(pid_stat) == (77, 281)
    before, after = CpuSnapshot(10.0, 2.0, 100.0), CpuSnapshot(13.0, 3.5, 102.0)
    assert after.cores_since(before) == (1.5, 0.75)


def test_goals_missed_when_no_step_kept_the_latency_bound() -> None:
    run = _run()
    run.read_steps = run.read_steps[2:]  # only the 128-concurrent step, p99 90 ms
    run.transfer_steps = []
    rows = {r[0]: r for r in goals(run)}
    reads = rows["cached balance reads through Envoy, session check + rate limit"]
    assert reads[2].startswith("no step at p99 <= 50 ms via edge") and reads[3] == "missed"
    assert rows["transfers"][3] == "–"
    run.via = "grpc"
    assert {r[0]: r for r in goals(run)}[reads[0]][3] == "–"


def test_histogram_quantile_like_prometheus() -> None:
    from bench.analysis import histogram_quantile

    buckets = {0.001: 50.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.001 + 0.009 * 0.5)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 0.9)
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1


def test_wrk_output_becomes_a_phase_result() -> None:
    from bench.workload import Op
    from bench.wrk import parse_output

    lines = ["Running 2s test", "WRK total 1000 2000000", "WRK socket 0 0 0 1",
             "WRK sources 990 5", "WRK status 200 995", "WRK status 429 4"]
    lines += [f"WRK q {1000 + i}" for i in range(1000)]  # 1.000 .. 1.999 ms
    result = parse_output("balance max, 32 concurrent", Op.BALANCE, "\n".join(lines), 2.0, 0.0)
    assert result.completed == 995
    assert result.errors == {("balance", "http 429"): 4, ("balance", "socket timeout"): 1}
    assert abs(result.histogram().percentile_s(50) - 0.0015) < 0.00005
    assert abs(result.throughput - 497.5) < 0.01
    assert (result.timeline[0].cache, result.timeline[0].database) == (990, 5)
