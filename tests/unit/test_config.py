from __future__ import annotations

import pytest

from shared.config import ConfigError, Settings
from shared.pg_pool import create_pool

REQUIRED = {"BANK_DATABASE_URL": "postgresql://u@h/db", "BANK_REDIS_NODES": "127.0.0.1:7001"}


def test_reads_typed_values_from_the_environment() -> None:
    s = Settings.from_env({**REQUIRED, "BANK_GRPC_PORT": "6000", "BANK_CACHE_ENABLED": "off",
                           "BANK_TTL_JITTER": "0.2"})
    assert (s.grpc_port, s.cache_enabled, s.ttl_jitter) == (6000, False, 0.2)
    assert s.redis_startup_nodes == [("127.0.0.1", 7001)]


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="BANK_REDIS_NODES is required"):
        Settings.from_env({"BANK_DATABASE_URL": "postgresql://u@h/db"})


def test_only_a_process_that_builds_a_database_pool_needs_its_url() -> None:
    """The gateway and bankctl have no database URL; a pool demands one, naming the variable."""
    settings = Settings.from_env({"BANK_REDIS_NODES": "h:1"})
    assert settings.database_url == ""
    with pytest.raises(ConfigError, match="BANK_DATABASE_URL is required"):
        create_pool(settings)


@pytest.mark.parametrize(
    ("name", "value"), [("BANK_GRPC_PORT", "http"), ("BANK_CACHE_ENABLED", "maybe")]
)
def test_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**REQUIRED, name: value})


def test_malformed_redis_node_is_reported() -> None:
    with pytest.raises(ConfigError, match="not host:port"):
        _ = Settings.from_env({**REQUIRED, "BANK_REDIS_NODES": "localhost"}).redis_startup_nodes


def test_env_names_cover_every_field() -> None:
    names = Settings.env_names()
    assert "BANK_DATABASE_URL" in names and "BANK_RATE_LIMIT_PER_MINUTE" in names


def test_redis_user_without_password_names_the_password() -> None:
    with pytest.raises(ConfigError, match="BANK_REDIS_PASSWORD is required"):
        Settings.from_env({**REQUIRED, "BANK_REDIS_USERNAME": "account"})


def test_redis_password_without_user_names_the_user() -> None:
    with pytest.raises(ConfigError, match="BANK_REDIS_USERNAME is required"):
        Settings.from_env({**REQUIRED, "BANK_REDIS_PASSWORD": "s3cret-s3cret"})


@pytest.mark.parametrize(("given", "missing"), [
    ({"BANK_REDIS_TLS": "on", "BANK_REDIS_TLS_CERT_FILE": "/c.pem"}, "BANK_REDIS_TLS_KEY_FILE"),
    ({"BANK_GRPC_TLS_KEY_FILE": "/k.pem"}, "BANK_GRPC_TLS_CERT_FILE"),
    ({"BANK_REDIS_TLS_CA_FILE": "/ca.pem"}, "BANK_REDIS_TLS"),
])
def test_half_configured_tls_names_what_is_missing(given: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env({**REQUIRED, **given})


def test_the_redis_password_is_not_in_the_repr() -> None:
    s = Settings.from_env({**REQUIRED, "BANK_REDIS_USERNAME": "account",
                           "BANK_REDIS_PASSWORD": "s3cret-s3cret"})
    assert (s.redis_username, s.redis_password) == ("account", "s3cret-s3cret")
    assert "s3cret" not in repr(s)
