"""Metric names read from PromQL expressions (used by the dashboard-metrics test)."""

from __future__ import annotations

import pytest

from bench.promql import base_metric_name, metric_names


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("sum(rate(bank_grpc_requests_total[5m])) by (service)", {"bank_grpc_requests_total"}),
        (
            'histogram_quantile(0.99, sum by (le, method) '
            '(rate(bank_grpc_request_seconds_bucket{service="account"}[$__rate_interval])))',
            {"bank_grpc_request_seconds_bucket"},
        ),
        (
            'sum(rate(bank_cache_requests_total{result="hit"}[5m])) / '
            'sum(rate(bank_cache_requests_total{result=~"hit|miss"}[5m]))',
            {"bank_cache_requests_total"},
        ),
        ("bank_outbox_backlog", {"bank_outbox_backlog"}),
        ('max(bank_cache_circuit_open{job="$job"}) or vector(0)', {"bank_cache_circuit_open"}),
        (
            "rate(bank_event_lag_seconds_sum[1m]) / ignoring(x) group_left "
            "rate(bank_event_lag_seconds_count[1m] offset 5m) > bool 0.5",
            {"bank_event_lag_seconds_sum", "bank_event_lag_seconds_count"},
        ),
        ('up{job=~"bank-.*"} == 1 and on(instance) process_cpu_seconds_total',
         {"up", "process_cpu_seconds_total"}),
    ],
)
def test_metric_names(expression: str, expected: set[str]) -> None:
    assert metric_names(expression) == expected


def test_histogram_suffixes_count_as_the_base_metric() -> None:
    histograms = {"bank_grpc_request_seconds"}
    assert base_metric_name("bank_grpc_request_seconds_bucket", histograms) == (
        "bank_grpc_request_seconds")
    assert base_metric_name("bank_grpc_request_seconds_count", histograms) == (
        "bank_grpc_request_seconds")
    # a counter that merely ends in _count is its own metric
    assert base_metric_name("bank_login_count", histograms) == "bank_login_count"


def test_dashboard_expressions_walk_rows_and_templates() -> None:
    from bench.promql import dashboard_expressions

    dashboard = {
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "a_total"}]}]},
            {"targets": [{"expr": "b"}, {"refId": "B"}]},
        ],
        "templating": {"list": [
            {"type": "query", "query": {"query": "label_values(c, service)"}},
            {"type": "datasource", "query": "prometheus"},
        ]},
    }
    assert dashboard_expressions(dashboard) == ["a_total", "b", "label_values(c, service)"]


def test_declared_metrics_and_what_is_missing() -> None:
    from bench.promql import declared_metrics, missing_metrics

    exposition = (
        "# HELP bank_grpc_requests_total calls\n"
        "# TYPE bank_grpc_requests_total counter\n"
        "# TYPE bank_grpc_request_seconds histogram\n"
        'bank_grpc_request_seconds_bucket{le="0.1"} 1.0\n'
    )
    declared = declared_metrics(exposition)
    assert declared == {"bank_grpc_requests_total": "counter",
                        "bank_grpc_request_seconds": "histogram"}
    expressions = [
        "rate(bank_grpc_requests_total[1m])",
        "histogram_quantile(0.99, rate(bank_grpc_request_seconds_bucket[1m]))",
        "bank_nowhere_total + bank_grpc_requests_total_count",
    ]
    assert missing_metrics(expressions, declared) == {
        "bank_grpc_requests_total_count": [expressions[2]],
        "bank_nowhere_total": [expressions[2]],
    }
