"""Parsing pgbench's and redis-benchmark's output."""

from __future__ import annotations

import math

import pytest

from bench.baseline import parse_pgbench, parse_redis_benchmark_csv

PGBENCH_OUTPUT = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 2
query mode: simple
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 4 s
number of transactions actually processed: 5731
number of failed transactions: 0 (0.000%)
latency average = 11.160 ms
initial connection time = 21.472 ms
tps = 1433.698233 (without initial connection time)
"""

REDIS_CLUSTER_CSV = """\
Cluster has 3 master nodes:

Master 0: bf4bcac0276b5618733e1380049fd00fc332e9af 127.0.0.1:12915
Master 1: 721188b2665c4c4b72e7e7038b938d73c76d0481 127.0.0.1:11274

"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"GET","80000.00","0.193","0.008","0.087","0.687","1.623","4.367"
"""


def test_pgbench_summary() -> None:
    assert parse_pgbench(PGBENCH_OUTPUT) == (pytest.approx(1433.698233), pytest.approx(11.16))


def test_pgbench_without_a_tps_line_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_pgbench("pgbench: error: connection refused")
    tps, latency = parse_pgbench("tps = 10.5 (without initial connection time)\n")
    assert tps == 10.5 and math.isnan(latency)


def test_redis_benchmark_csv_after_the_cluster_preamble() -> None:
    assert parse_redis_benchmark_csv(REDIS_CLUSTER_CSV) == {"GET": (80000.0, 0.087, 1.623)}
    assert parse_redis_benchmark_csv("") == {}
    assert parse_redis_benchmark_csv("Cluster has 3 master nodes:\n") == {}
