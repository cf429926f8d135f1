"""The alert rules (deploy/prometheus/rules/*.yml), offline: `promtool check rules`, `promtool
test rules` (rules/tests/: every alert fires at its threshold and not below), `promtool check
config` on prometheus.yml, and the Kubernetes copy (a PrometheusRule) equal to the files.
promtool is Debian's `prometheus` package (scripts/ensure-system-deps.sh installs it). Which
metrics the rules read, and that each is exported, is tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.conftest import K8S, ROOT, run, tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "rules" / "tests").glob("*.yml"))

# The alerts the operators are promised, with their thresholds (the thresholds are checked by
# the promtool unit tests; this keeps the list and the files in step).
ALERTS = {
    "CacheHitRateBelow90", "CacheHitRateBelow70", "RedisMemoryAbove80Percent",
    "RedisEvictingKeys", "BalanceEventLagHigh", "OutboxBacklog", "OutboxBacklogCritical",
    "Edge5xxRatioHigh", "GrpcServerErrorRatioHigh", "ErrorBudgetBurnFast",
    "ErrorBudgetBurnSlow", "PostgresBackupTooOld",
}


def _rules() -> list[dict[str, object]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    assert RULES
    result = run([tool("promtool"), "check", "rules", *map(str, RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_at_its_threshold() -> None:
    assert RULE_TESTS
    result = run([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {case["alertname"] for path in RULE_TESTS
              for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert tested == ALERTS == {r["alert"] for r in _rules() if "alert" in r}


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(line) for line in operations.splitlines() if line.startswith("#")}
    for rule in _rules():
        if "alert" not in rule:
            continue
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["severity"] in ("warning", "critical"), rule["alert"]  # type: ignore[index]
        runbook = str(annotations["runbook"])  # type: ignore[index]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md" and anchor in anchors, (rule["alert"], runbook)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return "".join(c for c in text.replace(" ", "-") if c.isalnum() or c in "-_")


def test_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]  # the tests/ folder below it is not matched
    # Debian's promtool is built without Kubernetes service discovery: the Kubernetes job is
    # checked by the operator's own resources (tests/deploy/test_kubernetes.py) instead.
    config["scrape_configs"] = [job for job in config["scrape_configs"]
                                if "kubernetes_sd_configs" not in job]
    (tmp_path / "rules").symlink_to(PROMETHEUS / "rules")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_the_kubernetes_copy_equals_the_rule_files() -> None:
    copy = yaml.safe_load((K8S / "components" / "monitoring" / "prometheus-rules.yaml")
                          .read_text())
    groups = [group for path in RULES for group in yaml.safe_load(path.read_text())["groups"]]
    assert copy["spec"]["groups"] == groups, "run python scripts/render_prometheus_rule.py"


def test_compose_mounts_the_rules_next_to_the_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in volumes
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"][
        "command"]
