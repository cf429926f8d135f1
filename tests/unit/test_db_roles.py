"""The PostgreSQL logins are named alike everywhere: devstack/db_roles.py, the group roles of
migration 0007, the provisioning script, compose and Kubernetes."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import yaml

from devstack.components import COMPONENTS
from devstack.db_roles import MIGRATOR, PROVISION_SQL, ROOT, SERVICE_LOGINS


def _migration_0007() -> ModuleType:
    path = ROOT / "migrations" / "versions" / "0007_service_roles.py"
    spec = importlib.util.spec_from_file_location("_migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_component_of_ours_has_a_login() -> None:
    ours = {c.name for c in COMPONENTS if c.module is not None}
    assert {login.component for login in SERVICE_LOGINS} == ours


def test_the_logins_join_groups_the_migration_grants_to() -> None:
    groups = set(_migration_0007().GROUP_ROLES)
    for login in SERVICE_LOGINS:
        assert login.group in groups, login
    # The definer is the only group nobody joins.
    assert groups - {login.group for login in SERVICE_LOGINS} == {"bank_transfer_definer"}


def test_the_provisioning_script_makes_every_login() -> None:
    script = PROVISION_SQL.read_text()
    assert f"\\set migrator {MIGRATOR}" in script  # the default; CloudNativePG's is "app"
    assert 'ALTER ROLE :"migrator" WITH LOGIN NOSUPERUSER CREATEROLE' in script
    for login in SERVICE_LOGINS:
        assert f"GRANT {login.group} TO {login.login};" in script, login
        assert f"\\getenv pw_{login.login.removeprefix('svc_')} {login.password_env}" in script
        assert f"ALTER ROLE {login.login} WITH LOGIN NOSUPERUSER" in script
    assert "bank_transfer_definer" not in script  # the migration alone makes and owns it


def _yaml_documents(path: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def test_compose_and_kubernetes_provision_the_same_logins() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for login in SERVICE_LOGINS:
        assert login.password_env in compose["postgres-roles"]["environment"], login
        url = compose[login.component]["environment"]["BANK_DATABASE_URL"]
        assert url.startswith(f"postgresql://{login.login}:"), login
    (job, _policy) = _yaml_documents("deploy/k8s/base/postgres/roles-job.yaml")
    container = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]
               if "valueFrom" in e}
    for login in SERVICE_LOGINS:
        assert secrets[login.password_env] == f"postgres-{login.component}", login
    (cluster,) = _yaml_documents("deploy/k8s/overlays/prod/postgres-cluster.yaml")
    managed = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}  # type: ignore[index]
    assert managed["app"]["createrole"] is True and managed["app"]["superuser"] is False
    for login in SERVICE_LOGINS:
        role = managed[login.login]
        assert role["inRoles"] == [login.group] and role["login"] is True, login
        assert role["passwordSecret"] == {"name": f"postgres-{login.component}"}, login
        assert managed[login.group]["login"] is False, login
