"""The metric names a PromQL expression reads (the dashboard test checks each one is exported).

Not a full PromQL parser: it removes what is not a metric selector (strings, label matchers,
ranges, grouping clauses, function calls, keywords, numbers) and keeps the identifiers left.
"""

from __future__ import annotations

import re
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2", "start", "end",
})
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana template variables ($__rate_interval, ${job}) are not metrics.
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")


def metric_names(expression: str) -> set[str]:
    text = _GRAFANA_VARIABLE.sub(" 1 ", expression)
    text = _STRING.sub(" ", text)
    previous = None
    while previous != text:  # nested braces/brackets, innermost first
        previous = text
        text = _LABEL_MATCHERS.sub(" ", text)
        text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def base_metric_name(name: str, histograms: set[str]) -> str:
    """`x_bucket`, `x_sum` and `x_count` of a histogram (or summary) `x` count as `x`."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return name[: -len(suffix)]
    return name


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard (panels, rows' panels, template queries)."""
    found: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(str(target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and query:
            found.append(str(query.get("query", "")) if isinstance(query, dict) else str(query))
    return found


def declared_metrics(exposition: str) -> dict[str, str]:
    """{metric name: type} from the `# TYPE` lines of a /metrics page (declared even before the
    first sample of a labelled metric exists)."""
    out: dict[str, str] = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                out[parts[2]] = parts[3]
    return out


def missing_metrics(expressions: list[str], declared: dict[str, str]) -> dict[str, list[str]]:
    """{metric queried but not declared: the expressions that query it}."""
    histograms = {name for name, kind in declared.items() if kind in ("histogram", "summary")}
    missing: dict[str, list[str]] = {}
    for expression in expressions:
        for name in sorted(metric_names(expression)):
            if base_metric_name(name, histograms) not in declared:
                missing.setdefault(name, []).append(expression)
    return missing
