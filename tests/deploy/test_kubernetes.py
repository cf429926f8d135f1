"""deploy/k8s: every overlay renders with `kubectl kustomize`, passes `kubernetes-validate
--strict` (kinds it has no schema for are listed here, never skipped silently), and keeps the
properties a production deployment needs: probes, security, spreading, drains, scaling, budgets,
policies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Settings
from shared.grpc_server import LIVENESS_SERVICE
from tests.deploy.conftest import K8S, OVERLAYS, load_all, run, tool

# Kinds without a schema in kubernetes-validate, per overlay: checked by hand below instead.
CERT_MANAGER = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
UNKNOWN_KINDS = {
    "dev": CERT_MANAGER,
    "prod": CERT_MANAGER | {
             ("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "ScheduledBackup"),
             ("postgresql.cnpg.io/v1", "Pooler"), ("barmancloud.cnpg.io/v1", "ObjectStore"),
             ("monitoring.coreos.com/v1", "PodMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")},
}
GRPC_SERVICES = {"account": 7051, "transfer": 7052, "auth": 7053}
_UNKNOWN = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+)")

Obj = dict[str, Any]


def of_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_template(obj: Obj) -> Obj:
    """The pod template of a workload (a CronJob's sits inside its job template)."""
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    template: Obj = spec["template"]
    return template


def pod_specs(objs: list[Obj]) -> dict[str, Obj]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": pod_template(o)["spec"]
        for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")
    }


def validate(path: Path) -> tuple[int, str, set[tuple[str, str]]]:
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", str(path)])
    output = result.stdout + result.stderr
    unknown = {(api, kind) for kind, api in _UNKNOWN.findall(output)}
    return result.returncode, output, unknown


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_validation(overlay: str, rendered: dict[str, str],
                                          tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered[overlay])
    code, output, unknown = validate(manifest)
    assert code == 0, output
    assert "ERROR" not in output, output
    assert unknown == UNKNOWN_KINDS[overlay], output


def test_a_broken_manifest_fails_validation(rendered: dict[str, str], tmp_path: Path) -> None:
    # A misspelt field, an invalid value type and a wrong probe: each must be rejected.
    text = rendered["dev"]
    breakages = {
        "misspelt field": text.replace("periodSeconds: 5\n", "periodSecond: 5\n", 1),
        "string replicas": text.replace("replicas: 2\n", "replicas: two\n", 1),
        "probe without port": re.sub(r"grpc:\n(\s+)port: 7050", r"grpc:\n\1service: x", text,
                                     count=1),
    }
    for what, broken in breakages.items():
        assert broken != text, what
        manifest = tmp_path / "broken.yaml"
        manifest.write_text(broken)
        code, output, _ = validate(manifest)
        assert code != 0 and "did not validate" in output, f"{what} was accepted"


def test_the_secrets_example_is_valid() -> None:
    # The example is not part of any overlay (secrets are never committed), so check it here.
    code, output, unknown = validate(Path(__file__).parents[2] / "deploy/k8s/secrets.example.yaml")
    assert code == 0 and not unknown, output


def test_kustomize_fails_on_a_broken_kustomization(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    result = run([tool("kubectl"), "kustomize", str(tmp_path)])
    assert result.returncode != 0


def test_unknown_kinds_are_checked_by_hand(objects: dict[str, list[Obj]]) -> None:
    # kubernetes-validate has no CloudNativePG schema: the fields this deployment relies on.
    cluster = of_kind(objects["prod"], "Cluster")["postgres"]
    spec = cluster["spec"]
    cluster_spec = spec
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1}
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    assert spec["bootstrap"]["initdb"] == {"database": "app", "owner": "app"}
    assert spec["inheritedMetadata"]["labels"]["app.kubernetes.io/name"] == "postgres"
    # The base's single-instance database is gone; the operator makes postgres-rw itself.
    assert "postgres" not in of_kind(objects["prod"], "StatefulSet")
    assert "postgres-rw" not in of_kind(objects["prod"], "Service")
    assert "postgres" in of_kind(objects["dev"], "StatefulSet")
    # The Pooler: transaction mode in front of the primary, and the services use it.
    pooler = of_kind(objects["prod"], "Pooler")["postgres-pooler-rw"]["spec"]
    assert (pooler["cluster"]["name"], pooler["type"]) == ("postgres", "rw")
    assert pooler["pgbouncer"]["poolMode"] == "transaction"
    assert pooler["instances"] >= 2
    assert pooler["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "postgres-pooler"
    for kind in ("Deployment", "CronJob"):
        for name, obj in of_kind(objects["prod"], kind).items():
            spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
            for container in spec["template"]["spec"]["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                if "BANK_DATABASE_URL" in env:
                    assert env["BANK_DATABASE_URL"] == {
                        "name": "BANK_DATABASE_URL",
                        "value": "postgresql://postgres-pooler-rw:5432/app?sslmode=verify-full"
                                 "&sslrootcert=/etc/bank/postgres-ca/ca.crt"}, name
                    assert {"PGUSER", "PGPASSWORD"} <= set(env), name
                    mounts = {m["mountPath"] for m in container["volumeMounts"]}
                    assert "/etc/bank/postgres-ca" in mounts, name
    assert "postgres-pooler-rw" in cluster_spec["certificates"]["serverAltDNSNames"]


def test_prod_backs_postgres_up_continuously(objects: dict[str, list[Obj]]) -> None:
    """WAL archiving and nightly base backups through the Barman Cloud plugin (no schema for
    these CRDs in kubernetes-validate: the fields this deployment relies on)."""
    objs = objects["prod"]
    cluster = of_kind(objs, "Cluster")["postgres"]["spec"]
    (plugin,) = cluster["plugins"]
    assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
    store = of_kind(objs, "ObjectStore")[plugin["parameters"]["barmanObjectName"]]["spec"]
    assert store["configuration"]["destinationPath"].startswith("s3://")
    assert re.fullmatch(r"\d+[dwm]", store["retentionPolicy"])
    credentials = store["configuration"]["s3Credentials"]
    example = load_all((K8S / "secrets.example.yaml").read_text())
    shown = {(s["metadata"]["name"], key) for s in example for key in s.get("stringData", {})}
    for ref in credentials.values():
        assert (ref["name"], ref["key"]) in shown, ref
    backup = of_kind(objs, "ScheduledBackup")["postgres-nightly"]["spec"]
    assert backup["cluster"] == {"name": "postgres"} and backup["method"] == "plugin"
    assert backup["pluginConfiguration"]["name"] == plugin["name"]
    assert len(backup["schedule"].split()) == 6  # CloudNativePG's cron has seconds
    assert "ScheduledBackup" not in {o["kind"] for o in objects["dev"]}


def test_prod_is_monitored_by_the_prometheus_operator(objects: dict[str, list[Obj]]) -> None:
    objs = objects["prod"]
    monitors = of_kind(objs, "PodMonitor")
    assert set(monitors) == {"bank-services", "edge", "redis", "postgres"}
    pods = {o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]: o
            for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    for name, monitor in monitors.items():
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == "metrics", name
        selector = monitor["spec"]["selector"]
        if name == "postgres":  # CloudNativePG labels its instance pods itself
            assert selector == {"matchLabels": {"cnpg.io/cluster": "postgres"}}
            continue
        names = selector.get("matchLabels", {}).get("app.kubernetes.io/name")
        wanted = [names] if names else selector["matchExpressions"][0]["values"]
        for pod in wanted:
            ports = {p["name"] for c in pods[pod]["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            assert "metrics" in ports, (name, pod)
    assert of_kind(objects["prod"], "PrometheusRule")["bank-alerts"]["spec"]["groups"]
    assert not {"PodMonitor", "PrometheusRule"} & {o["kind"] for o in objects["dev"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_pin_the_bank_image(overlay: str, objects: dict[str, list[Obj]]) -> None:
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    (image,) = [i for i in kustomization["images"] if i["name"] == "cachebank"]
    expected = f"{image['newName']}:{image['newTag']}"
    assert not expected.endswith(":latest")
    images = {c["image"] for spec in pod_specs(objects[overlay]).values()
              for c in spec.get("initContainers", []) + spec["containers"]}
    ours = {i for i in images if "cachebank" in i}
    assert ours == {expected}, ours
    assert all(":" in i and not i.endswith(":latest") for i in images), images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_hardened(overlay: str, objects: dict[str, list[Obj]]) -> None:
    for name, spec in pod_specs(objects[overlay]).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert {"requests", "limits"} <= set(container["resources"]), where
            for kind in ("cpu", "memory"):
                assert kind in container["resources"]["requests"], where
                assert kind in container["resources"]["limits"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_use_native_grpc_probes(overlay: str, objects: dict[str, list[Obj]]) -> None:
    deployments = of_kind(objects[overlay], "Deployment")
    drain = Settings.__dataclass_fields__["grpc_drain_grace_s"].default
    # The gRPC ports serve TLS only; kubelet's gRPC probes have no TLS: they ask the
    # plaintext health-only port.
    settings_map = next(c["data"] for n, c in of_kind(objects[overlay], "ConfigMap").items()
                        if n.startswith("bank-settings"))
    port = int(settings_map["BANK_GRPC_HEALTH_PORT"])
    assert port not in GRPC_SERVICES.values()
    for name in GRPC_SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["grpc"] == {"port": port}, name
        # Liveness and start-up ask for the name that stays SERVING while the process runs.
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": LIVENESS_SERVICE}
        assert container["startupProbe"]["grpc"] == {"port": port, "service": LIVENESS_SERVICE}
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain, name
        # The gRPC drain the pods are given time for is the one the settings configure.
        settings = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert "BANK_GRPC_DRAIN_GRACE_S" not in settings  # from the settings ConfigMap


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_has_liveness_and_readiness(overlay: str,
                                                  objects: dict[str, list[Obj]]) -> None:
    for name, spec in pod_specs(objects[overlay]).items():
        if name.startswith(("Job/", "CronJob/")):
            continue
        container = spec["containers"][0]
        assert "livenessProbe" in container, name
        if name != "Deployment/outbox-relay":  # no traffic to be ready for
            assert "readinessProbe" in container, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_and_have_disruption_budgets(overlay: str,
                                                      objects: dict[str, list[Obj]]) -> None:
    objs = objects[overlay]
    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items()))
        for p in of_kind(objs, "PodDisruptionBudget").values()
    }
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in
            of_kind(objs, "HorizontalPodAutoscaler").values()}
    for kind in ("Deployment", "StatefulSet"):
        for name, obj in of_kind(objs, kind).items():
            replicas = max(obj["spec"].get("replicas", 1),
                           hpas[name]["spec"]["minReplicas"] if name in hpas else 0)
            selector = tuple(sorted(obj["spec"]["selector"]["matchLabels"].items()))
            if replicas > 1:
                assert selector in budgets, f"{kind}/{name} has {replicas} replicas and no PDB"
            if kind == "Deployment" and replicas > 1:
                keys = {c["topologyKey"] for c in
                        obj["spec"]["template"]["spec"]["topologySpreadConstraints"]}
                assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_and_account_autoscale_on_cpu(overlay: str,
                                           objects: dict[str, list[Obj]]) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in
            of_kind(objects[overlay], "HorizontalPodAutoscaler").values()}
    assert set(hpas) == {"edge", "account"}
    for name, hpa in hpas.items():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
        # The dev overlay runs one edge pod.
        assert hpa["spec"]["minReplicas"] >= (1 if (overlay, name) == ("dev", "edge") else 2)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(
        overlay: str, objects: dict[str, list[Obj]]) -> None:
    """An applied `replicas` resets the autoscaled count on every apply (a release at peak load
    would drop to the floor): the HPA's minReplicas is the floor instead."""
    deployments = of_kind(objects[overlay], "Deployment")
    for hpa in of_kind(objects[overlay], "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        assert "replicas" not in deployments[target["name"]]["spec"], target["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_targets_are_headless_services(overlay: str, objects: dict[str, list[Obj]]) -> None:
    objs = objects[overlay]
    services = of_kind(objs, "Service")
    settings = next(c for n, c in of_kind(objs, "ConfigMap").items()
                    if n.startswith("bank-settings"))["data"]
    for name, port in GRPC_SERVICES.items():
        target = settings[f"BANK_{name.upper()}_TARGET"]
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
        assert match, target
        service = services[match.group(1)]
        assert service["spec"]["clusterIP"] == "None", f"{match.group(1)} must be headless"
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert int(match.group(2)) == port == service["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default(overlay: str, objects: dict[str, list[Obj]]) -> None:
    policies = of_kind(objects[overlay], "NetworkPolicy")
    deny = policies["default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # Every pod the overlay runs is selected by some policy beyond the default deny.
    named = set()
    for policy in policies.values():
        selector = policy["spec"]["podSelector"]
        named.update(selector.get("matchLabels", {}).values())
        for expr in selector.get("matchExpressions", []):
            named.update(expr["values"])
    workloads = {pod_template(o)["metadata"]["labels"]["app.kubernetes.io/name"]
                 for o in objects[overlay]
                 if o["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")}
    assert workloads - named == set(), "pods without an allow policy"
    # The database is reachable only from the processes that own data, never from the edge.
    sources = policies["postgres"]["spec"]["ingress"][0]["from"][0]["podSelector"]
    allowed = set(sources["matchExpressions"][0]["values"])
    assert allowed == {"account", "transfer", "auth", "outbox-relay", "migrate", "postgres-roles"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_wait_for_the_migration(overlay: str, objects: dict[str, list[Obj]]) -> None:
    objs = objects[overlay]
    assert of_kind(objs, "Job")["migrate"]["spec"]["template"]["spec"]["containers"][0][
        "args"] == ["migrate"]
    for name in [*GRPC_SERVICES, "outbox-relay"]:
        pod = of_kind(objs, "Deployment")[name]["spec"]["template"]["spec"]
        assert [c["args"][0] for c in pod["initContainers"]] == ["wait-for-schema"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_committed(overlay: str,
                                                objects: dict[str, list[Obj]]) -> None:
    assert not of_kind(objects[overlay], "Secret")
    referenced = set()
    for spec in pod_specs(objects[overlay]).values():
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                referenced.add((volume["secret"]["secretName"], "*"))
    example = load_all((Path(__file__).parents[2] / "deploy/k8s/secrets.example.yaml").read_text())
    provided = {(s["metadata"]["name"], key) for s in example
                for key in {**s.get("stringData", {}), **s.get("data", {})}}
    provided |= {(name, "*") for name, _ in provided}
    if overlay == "prod":  # CloudNativePG makes postgres-app (uri, password, ...) itself
        referenced = {r for r in referenced if r[0] not in ("postgres-app", "postgres-ca")}
    # cert-manager makes and renews the internal TLS Secrets (certificates.yaml).
    issued = {c["spec"]["secretName"] for c in of_kind(objects[overlay], "Certificate").values()}
    referenced = {r for r in referenced if r[0] not in issued}
    assert referenced <= provided, f"secrets the example does not show: {referenced - provided}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_cluster_statefulset(overlay: str, objects: dict[str, list[Obj]]) -> None:
    redis = of_kind(objects[overlay], "StatefulSet")["redis"]
    assert redis["spec"]["replicas"] == 6
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    anti = redis["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti, "Redis pods must avoid sharing a node"
    if overlay == "prod":
        assert "requiredDuringSchedulingIgnoredDuringExecution" in anti
    init = of_kind(objects[overlay], "Job")["redis-cluster-init"]
    env = {e["name"]: e["value"] for e in
           init["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_NODES"].split() == [f"redis-{i}.redis-headless:6379" for i in range(6)]
    # Re-appliable: the finished Job goes, the next apply runs the idempotent script again.
    assert init["spec"]["ttlSecondsAfterFinished"] > 0
    pod = redis["spec"]["template"]["spec"]
    node = pod["containers"][0]
    # Ready means a whole cluster and a linked replica; a master fails over before it stops
    # (the scripts themselves run in tests/deploy/test_redis_cluster_scripts.py).
    assert node["readinessProbe"]["exec"]["command"] == ["sh", "/conf/ready.sh"]
    assert node["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "/conf/pre-stop.sh"]
    assert pod["terminationGracePeriodSeconds"] > 15  # pre-stop.sh's REDIS_FAILOVER_WAIT_S
    scripts = next(c for n, c in of_kind(objects[overlay], "ConfigMap").items()
                   if n.startswith("redis-conf"))["data"]
    assert {"ready.sh", "pre-stop.sh", "cluster-init.sh", "start.sh"} <= set(scripts)
    # Redis' metrics: the exporter sidecar on the named port the scrape policy opens.
    exporter = next(c for c in pod["containers"] if c["name"] == "redis-exporter")
    assert "--redis.addr=rediss://127.0.0.1:6379" in exporter["args"]  # TLS only
    assert {"name": "REDIS_USER", "value": "exporter"} in exporter["env"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121}]
    annotations = redis["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9121"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_edge_and_the_services_reach_the_grpc_ports(overlay: str,
                                                            objects: dict[str, list[Obj]]) -> None:
    policies = of_kind(objects[overlay], "NetworkPolicy")
    (ingress,) = policies["grpc-services"]["spec"]["ingress"]
    sources = [peer["podSelector"]["matchLabels"] for peer in ingress["from"]]
    assert sources == [{"app.kubernetes.io/name": "edge"},
                       {"app.kubernetes.io/component": "grpc-service"}]
    (egress,) = policies["edge"]["spec"]["egress"]
    assert egress["to"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/component": "grpc-service"}}}]
    assert {p["port"] for p in egress["ports"]} == set(GRPC_SERVICES.values())
    # The public listener only; the metrics port is open to the monitoring namespace alone.
    assert policies["edge"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]
    scrape = policies["allow-metrics-scrape"]["spec"]
    assert "edge" in scrape["podSelector"]["matchExpressions"][0]["values"]
    assert scrape["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_internal_tls_is_issued_by_cert_manager(objects: dict[str, list[Obj]]) -> None:
    """cert-manager's kinds have no schema in kubernetes-validate: the fields relied on. Every
    TLS Secret a pod mounts is a Certificate's, signed by the internal CA."""
    for overlay, objs in objects.items():
        certificates = of_kind(objs, "Certificate")
        assert certificates["internal-ca"]["spec"]["isCA"] is True
        assert of_kind(objs, "Issuer")["internal-ca"]["spec"]["ca"]["secretName"] == "internal-ca"
        issued = {c["spec"]["secretName"]: c["spec"] for c in certificates.values()}
        for kind in ("Deployment", "StatefulSet", "Job"):
            for name, obj in of_kind(objs, kind).items():
                for volume in obj["spec"]["template"]["spec"].get("volumes", []):
                    secret = volume.get("secret", {}).get("secretName", "")
                    if secret.endswith("-tls") and secret != "edge-tls":
                        spec = issued[secret]
                        assert spec["issuerRef"]["name"] == "internal-ca", (overlay, name)
                        assert {"server auth", "client auth"} <= set(spec["usages"]), secret
        for service in GRPC_SERVICES:
            assert f"{service}-headless" in issued[f"{service}-tls"]["dnsNames"]
