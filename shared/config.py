"""The one typed, frozen settings object of a process, read from the environment in one place.

Nothing else in the code base reads os.environ. Secrets (the database URL carries the password)
have no defaults: a missing one fails at start-up with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _env_name(name: str) -> str:
    return "BANK_" + name.upper()


# Keyword-only: a required field (no default) may then follow optional ones.
@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every process builds one of these with `Settings.from_env()` (tests build it directly)."""

    # Required: no defaults, because they are secrets or deployment-specific.
    # Secret, no default, yet required only where a PostgreSQL pool is built (shared/pg_pool.py
    # and the migration tools call `require`): the gateway and bankctl never get one. Each process
    # has its own login (migration 0007, docs/database.md).
    database_url: str = ""
    redis_nodes: str = field(metadata={"required": True})  # "host:port,host:port,..."

    service_name: str = "bank"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 7051
    # 0 disables the Prometheus endpoint (tests run several replicas in one process).
    metrics_port: int = 0
    # Containers set 0.0.0.0 so that Prometheus (another pod or container) can scrape it.
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_json: bool = True

    # Connections of each service process's psycopg pool (fixed size; the health probe has one
    # more of its own). docs/database.md adds them up against max_connections.
    db_pool_size: int = 10
    db_statement_timeout_ms: int = 5000
    # Transfer transactions a transfer replica runs at once; transfers beyond them queue and
    # share the next one (services/transfer/adapters/transfer_batches.py). Few lanes make big
    # batches: one commit, one WAL flush for many transfers, which is what bounds a hot account.
    transfer_lanes: int = 2

    # The cache is an accelerator: with it off, every read goes to PostgreSQL (the benchmark's
    # "before" column). Redis calls give up after this and reads fall back to PostgreSQL.
    cache_enabled: bool = True
    redis_timeout_ms: int = 100
    redis_max_connections: int = 64
    balance_ttl_s: int = 60
    recent_ttl_s: int = 120
    api_ttl_s: int = 300
    ttl_jitter: float = 0.10
    circuit_failure_threshold: int = 5
    circuit_reset_s: float = 2.0
    # A read asking for a newer version than the cached one (right after the caller's transfer)
    # waits this long for the balance-changed event in flight, then reads PostgreSQL. 0: no wait.
    min_version_wait_ms: int = 25

    session_ttl_s: int = 900
    # However active, a session ends this long after login (OWASP ASVS 3.3: 12 h at L2).
    session_absolute_ttl_s: int = 43_200
    # Signs session entries in Redis (shared/sessions.py); secret, >= 32 characters. Required by
    # every process that creates or checks sessions (`require`), hence no default.
    session_signing_key: str = ""
    # Brute force (services/auth/service_layer/attempt_limits.py), counted in PostgreSQL: failed
    # logins per (email, client address group) per window, a hard limit;
    login_max_failures: int = 5
    login_window_s: int = 900
    # failed logins per client address group across every email per window;
    login_address_max_failures: int = 100
    # failures of one email (from any address) before each further attempt waits a delay that
    # doubles with every failure, from login_delay_base_s up to login_delay_max_s: never a
    # lockout, so a third party cannot lock an owner out.
    login_email_free_failures: int = 5
    login_delay_base_s: float = 1.0
    login_delay_max_s: float = 300.0
    # A successful login returns a device token, valid this long, that exempts the owner's
    # device from the email's delay (services/auth/service_layer/device_tokens.py).
    login_device_token_ttl_s: int = 90 * 86_400
    # Registrations per client address group per hour, and from everyone per minute.
    register_per_address_per_hour: int = 5
    register_per_minute: int = 60
    # argon2id cost: RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes), which is
    # also argon2-cffi's default profile. Tests lower them so that hashing stays cheap.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # Hashes running at once per process, in two pools (services/auth/adapters/work_pool.py):
    # password checks (login, password change) and new passwords (registration, password
    # change), so that logins never queue behind registrations. Each hash holds
    # argon2_memory_kib, so the two together bound memory (4 x 64 MiB); a call that finds its
    # pool's queue full is answered UNAVAILABLE at once.
    argon2_max_concurrent: int = 3
    argon2_login_queue: int = 64
    argon2_new_password_concurrent: int = 1
    argon2_new_password_queue: int = 8

    max_transfer_minor_units: int = 100_000_000_00  # 100 million in major units
    idempotency_retention_s: int = 86_400
    event_partitions: int = 16
    # The transfer service confirms the outbox rows of the events it published in one UPDATE
    # this often (services/transfer/service_layer/event_dispatcher.py); the relay leaves rows
    # alone until they are older than twice this, plus a second.
    outbox_confirm_interval_ms: int = 1000
    # Retention jobs (docs/database.md): confirmed outbox rows are kept this long (far longer
    # than the account service's catch-up window, a few minutes), ended sessions this long after
    # they ended; rejections for idempotency_retention_s. A job runs every retention_interval_s
    # (make run, compose) or once (`--once`, Kubernetes CronJobs), deleting in batches.
    outbox_retention_s: int = 3_600
    session_retention_s: int = 86_400
    retention_interval_s: int = 300
    retention_batch_size: int = 5_000

    rate_limit_per_minute: int = 100
    # Failed session checks (bad, revoked or expired tokens) one client address may cause per
    # minute on one replica before it is refused without any lookup (shared/request_gate.py).
    failed_session_checks_per_minute: int = 20
    gateway_max_body_bytes: int = 64 * 1024
    grpc_deadline_s: float = 5.0
    account_target: str = "dns:///127.0.0.1:7051"
    transfer_target: str = "dns:///127.0.0.1:7052"
    auth_target: str = "dns:///127.0.0.1:7053"
    # How long a user's read-your-writes floors (the versions of their last transfers) last.
    read_your_writes_ttl_s: int = 60
    edge_host: str = "127.0.0.1"
    edge_https_port: int = 8443
    edge_admin_port: int = 9901
    # Requests per minute per client address at the edge (Envoy, every route, before any
    # service work); 0: off. An abuse limit: the per-user limit is rate_limit_per_minute.
    edge_address_limit_per_minute: int = 3000

    # Traces: exported over OTLP/gRPC to this collector ("http://otel-collector:4317"); empty:
    # tracing off, nothing instrumented (shared/tracing.py).
    otel_exporter_otlp_endpoint: str = ""
    otel_sample_ratio: float = 1.0

    grpc_max_connection_age_s: int = 300
    grpc_drain_grace_s: float = 10.0

    # Redis ACL user of this process (docs/decisions.md, "Redis ACLs and TLS"): each service
    # has its own, with the commands and key patterns it needs. Empty: no AUTH (a Redis without
    # ACLs). The password is a secret: no default, never in a repr or a log.
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    # TLS to every Redis node. The CA file verifies the nodes (empty: the system's CAs); a
    # client certificate and key are sent when the nodes ask for one (tls-auth-clients).
    redis_tls: bool = False
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""

    # TLS of the internal gRPC links (Envoy -> services, auth -> account). The server serves
    # this certificate when cert and key are set; with a CA file it also requires a client
    # certificate signed by that CA (mTLS). Clients verify servers against the CA file and
    # present the same certificate and key. Empty: plaintext (make run, on 127.0.0.1).
    grpc_tls_cert_file: str = ""
    grpc_tls_key_file: str = ""
    grpc_tls_ca_file: str = ""
    # The name clients expect in the servers' certificates (empty: the target's host name).
    grpc_tls_server_name: str = ""
    # A plaintext port serving only the standard health service, for probes that cannot speak
    # TLS (Kubernetes' native gRPC probes); 0: none. It answers nothing but health.
    grpc_health_port: int = 0

    def __post_init__(self) -> None:
        """Misconfigurations that would only show as a refused connection later."""
        if self.redis_username and not self.redis_password:
            raise ConfigError("BANK_REDIS_PASSWORD is required when BANK_REDIS_USERNAME is set")
        if self.redis_password and not self.redis_username:
            raise ConfigError("BANK_REDIS_USERNAME is required when BANK_REDIS_PASSWORD is set"
                              " (the default user is disabled)")
        _pair("BANK_REDIS_TLS_CERT_FILE", self.redis_tls_cert_file,
              "BANK_REDIS_TLS_KEY_FILE", self.redis_tls_key_file)
        if not self.redis_tls and (self.redis_tls_ca_file or self.redis_tls_cert_file):
            raise ConfigError("BANK_REDIS_TLS_* files are set but BANK_REDIS_TLS is off")
        _pair("BANK_GRPC_TLS_CERT_FILE", self.grpc_tls_cert_file,
              "BANK_GRPC_TLS_KEY_FILE", self.grpc_tls_key_file)

    @classmethod
    def env_names(cls) -> list[str]:
        """Every environment variable the settings read (the deployments are checked against it)."""
        return [_env_name(f.name) for f in fields(cls)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _env_name(f.name)
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            raw = env.get(name)
            if raw is None or raw == "":
                if f.metadata.get("required"):
                    raise ConfigError(f"{name} is required and not set")
                continue
            values[f.name] = _parse(name, raw, f.type)
        return cls(**values)

    def require(self, *names: str) -> None:
        """Fail at start-up, naming the variable, when a setting this process needs is empty."""
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{_env_name(name)} is required and not set")

    @property
    def redis_startup_nodes(self) -> list[tuple[str, int]]:
        nodes: list[tuple[str, int]] = []
        for item in self.redis_nodes.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"BANK_REDIS_NODES entry {item!r} is not host:port")
            nodes.append((host, int(port)))
        return nodes


def _pair(name_a: str, a: str, name_b: str, b: str) -> None:
    if bool(a) != bool(b):
        missing = name_b if a else name_a
        raise ConfigError(f"{missing} is required when {name_a if a else name_b} is set")


def _parse(name: str, raw: str, type_name: Any) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from None
    return raw
