"""docker-compose.yml: valid against the Compose Specification (check-jsonschema's bundled
vendor.compose-spec schema, offline), started in order by health checks, secrets from .env."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from devstack.db_roles import SERVICE_LOGINS
from tests.deploy.conftest import COMPOSE_FILE, ROOT, run, tool

BANK_SERVICES = ("account", "transfer", "auth", "outbox-relay")


def check_compose(path: Path) -> tuple[int, str]:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])
    return result.returncode, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    code, output = check_compose(COMPOSE_FILE)
    assert code == 0, output


def test_a_broken_compose_file_fails_validation(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    breakages = {
        "misspelt field": text.replace("deploy: {replicas: 2}", "deploy: {replicaz: 2}", 1),
        "list replicas": text.replace("deploy: {replicas: 2}", "deploy: {replicas: [2]}", 1),
        "unknown key": text.replace("    healthcheck:\n", "    healthcheks:\n", 1),
        "bad condition": text.replace("condition: service_healthy", "condition: healthy", 1),
    }
    for what, broken in breakages.items():
        assert broken != text, what
        path = tmp_path / "docker-compose.yml"
        path.write_text(broken)
        code, output = check_compose(path)
        assert code != 0, f"{what} was accepted:\n{output}"


def test_start_order_follows_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"
            else:
                assert condition == "service_completed_successfully", (name, dependency)
                assert services[dependency]["restart"] == "no", dependency
    for name in BANK_SERVICES:
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully")
        assert "redis-cluster-init" in services[name]["depends_on"], name
        assert "healthcheck" in services[name], name
    assert services["edge"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("account", "transfer", "auth")}
    # The logins first (deploy/k8s/base/postgres/provision-roles.sql), then the migrator migrates.
    assert services["postgres-roles"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == {
        "postgres-roles": {"condition": "service_completed_successfully"}}
    redis_nodes = {f"redis-{i}" for i in range(1, 7)}
    assert set(services["redis-cluster-init"]["depends_on"]) == redis_nodes


def test_replicas_and_edge(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("account", "transfer", "auth"):
        assert services[name]["deploy"]["replicas"] >= 2, name
    assert services["edge"]["ports"] == ["443:8443"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "healthcheck" in services["postgres"]


def test_bank_containers_are_hardened(compose: dict[str, Any]) -> None:
    for name in (*BANK_SERVICES, "migrate", "edge", "redis-1", "redis-cluster-init"):
        service = compose["services"][name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        # Longer than the gRPC drain, where there is one to finish.
        if name in BANK_SERVICES:
            assert int(service["stop_grace_period"].rstrip("s")) > 10, name


def test_secrets_come_from_an_uncommitted_env_file(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    optional = set(re.findall(r"\$\{([A-Z_]+):-", text))
    assert "POSTGRES_PASSWORD" in required
    example = (ROOT / ".env.example").read_text()
    shown = set(re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.MULTILINE))
    assert required | optional <= shown, "every variable of docker-compose.yml is in .env.example"
    # Each process as its own login, never the superuser (POSTGRES_PASSWORD).
    for name, login, variable in [("migrate", "bank", "DB_PASSWORD_MIGRATOR"),
                                  *((s.component, s.login, s.password_env)
                                    for s in SERVICE_LOGINS)]:
        url = compose["services"][name]["environment"]["BANK_DATABASE_URL"]
        assert url.startswith(f"postgresql://{login}:${{{variable}:?"), name
        assert "POSTGRES_PASSWORD" not in url, name
    ignored = run(["git", "check-ignore", "--quiet", ".env"])
    assert ignored.returncode == 0, ".env must be git-ignored"
    tls_ignored = run(["git", "check-ignore", "--quiet", "deploy/compose/tls/tls.key"])
    assert tls_ignored.returncode == 0, "the compose TLS key must be git-ignored"


def test_redis_settings_are_shared_with_kubernetes(compose: dict[str, Any]) -> None:
    env_file = "./deploy/k8s/base/redis/redis-settings.env"
    for name in [f"redis-{i}" for i in range(1, 7)] + ["redis-cluster-init"]:
        assert compose["services"][name]["env_file"] == env_file, name
    settings = dict(
        line.split("=", 1) for line in (ROOT / env_file).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert settings["REDIS_MAXMEMORY_POLICY"] == "allkeys-lru"
    assert int(settings["REDIS_NODE_TIMEOUT_MS"]) <= 5000
    assert settings["REDIS_MAXMEMORY"]


def test_yaml_anchors_expand_to_plain_services() -> None:
    # The `<<` merges must leave nothing unexpanded that compose would reject.
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert loaded["services"]["account"]["image"].startswith("${BANK_IMAGE:-")
    assert loaded["services"]["redis-6"]["command"] == ["sh", "/conf/start.sh"]
