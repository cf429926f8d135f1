"""The layers' import arrows, read from the source with ast (docs/architecture.md, "Layers"):
entrypoints -> service_layer -> domain, adapters -> ports; no service imports another; shared/
imports no service."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())

# Libraries that do I/O or speak a wire format: none of them belongs in a domain model.
IO_LIBRARIES = {"grpc", "grpc_health", "grpc_reflection", "redis", "psycopg", "psycopg_pool",
                "sqlalchemy", "alembic", "argon2", "httpx", "prometheus_client"}
DOMAIN_FORBIDDEN = IO_LIBRARIES | {"google", "bank"}  # protobuf messages are entrypoint mapping
# Use cases talk to the outside world only through ports.
SERVICE_LAYER_FORBIDDEN = {"grpc", "grpc_health", "grpc_reflection", "redis", "psycopg",
                           "psycopg_pool", "sqlalchemy", "alembic", "argon2", "httpx"}
# Servicers and consumers hold no SQL and no Redis calls.
ENTRYPOINT_FORBIDDEN = {"redis", "psycopg", "psycopg_pool", "sqlalchemy", "alembic"}


def imports(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file (or in `source`, as if it were that file),
    nested ones included."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module
            for alias in node.names:  # `from services.x import adapters` names a module too
                yield node.lineno, f"{module}.{alias.name}"


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def layer_of(service: str, path: Path) -> str:
    parts = path.relative_to(ROOT / "services" / service).parts
    return parts[0].removesuffix(".py") if parts else ""


def violations_in(service: str, path: Path, source: str | None = None) -> list[str]:
    own = f"services.{service}"
    layer = layer_of(service, path)
    found = []
    for line, module in imports(path, source):
        where = f"{path.relative_to(ROOT)}:{line} imports {module}"
        top = module.split(".")[0]
        if top == "services" and module != "services" and not (
            module == own or module.startswith(own + ".")
        ):
            found.append(f"{where}: a service imports another service")
            continue
        inner = module.removeprefix(own + ".").split(".") if module.startswith(own + ".") else []
        target = inner[0] if inner else ""
        if layer == "domain" and (top in DOMAIN_FORBIDDEN or target in {
                "service_layer", "adapters", "entrypoints", "bootstrap"}):
            found.append(f"{where}: the domain does no I/O and knows no other layer")
        elif layer == "service_layer" and (top in SERVICE_LAYER_FORBIDDEN or target in {
                "adapters", "entrypoints", "bootstrap"}):
            found.append(f"{where}: the service layer reaches adapters only through its ports")
        elif layer == "adapters" and (target in {"entrypoints", "bootstrap"} or (
                target == "service_layer" and inner[1:2] not in (["ports"], []))):
            found.append(f"{where}: adapters implement ports and know no caller")
        elif layer == "entrypoints" and (top in ENTRYPOINT_FORBIDDEN or target == "bootstrap"):
            found.append(f"{where}: entrypoints call use cases; they hold no SQL or Redis calls")
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_each_services_imports_point_inwards(service: str) -> None:
    found = [violation for path in sources(ROOT / "services" / service)
             for violation in violations_in(service, path)]
    assert found == []


def test_shared_imports_no_service() -> None:
    found = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sources(ROOT / "shared") for line, module in imports(path)
             if module.split(".")[0] == "services"]
    assert found == []


def test_the_checker_sees_a_wrong_arrow() -> None:
    """The rules above catch what they are meant to (a checker that sees nothing passes too)."""
    wrong = {
        ("account", "domain.py"): "import grpc\n",
        ("account", "service_layer/x.py"): "from services.account.adapters import fakes\n",
        ("account", "service_layer/y.py"): "from ..adapters.fakes import FakeOutboxReader\n",
        ("transfer", "service_layer/x.py"): "from services.account.domain import LedgerEntry\n",
        ("auth", "adapters/x.py"): "from services.auth.service_layer.credentials import login\n",
        ("auth", "entrypoints/x.py"): "import sqlalchemy\n",
    }
    for (service, name), source in wrong.items():
        assert violations_in(service, ROOT / "services" / service / name, source), name
    allowed = "from services.auth.service_layer.ports import PasswordHasher\n"
    assert violations_in("auth", ROOT / "services/auth/adapters/x.py", allowed) == []


# SQLAlchemy serves Alembic and the tooling only; the services have one PostgreSQL access stack,
# psycopg's pool (shared/pg_pool.py).
SQLALCHEMY_ALLOWED = {"shared/db.py"}


def test_the_services_reach_postgresql_through_psycopg_only() -> None:
    found = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for folder in ("services", "shared") for path in sources(ROOT / folder)
             if str(path.relative_to(ROOT)) not in SQLALCHEMY_ALLOWED
             for line, module in imports(path)
             if module.split(".")[0] in {"sqlalchemy", "shared"} and (
                 module.split(".")[0] == "sqlalchemy" or module.startswith("shared.db"))]
    assert found == []
