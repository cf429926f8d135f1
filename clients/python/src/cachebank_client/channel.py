"""The one way to open a channel to a bank service.

- Client-side round robin over every address the target resolves to (`dns:///account-headless:
  7051` in Kubernetes, `ipv4:127.0.0.1:7051,127.0.0.1:7061` locally): a Kubernetes Service
  balances connections, not the HTTP/2 requests on them.
- Keepalive pings, within what the servers allow (one per 10 s at most without calls).
- A deadline on every call: ChannelSettings.timeout_s for a call made without one (deadlines.py).
- Retries through the gRPC service config, on UNAVAILABLE, for exactly the methods whose proto
  says `option idempotency_level = NO_SIDE_EFFECTS` (read from the generated descriptors, so a
  new RPC is covered without touching this file). Anything else, CreateTransfer above all, is
  never retried automatically: retry it yourself with the same idempotency key.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from cachebank_client import __version__
from cachebank_client.deadlines import AsyncDefaultDeadline, DefaultDeadline


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retry policy for the side-effect-free methods (attempts include the first)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)


@dataclass(frozen=True)
class ChannelSettings:
    # The deadline of every call made without its own timeout.
    timeout_s: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    keepalive_time_s: float = 20.0
    keepalive_timeout_s: float = 5.0
    user_agent: str = f"cachebank-client/{__version__}"
    # The name the servers' certificates must carry, when it is not the target's host (a
    # dns:/// target of a headless Service resolves to pod addresses). TLS channels only.
    tls_server_name: str = ""


def bank_services() -> Iterator[ServiceDescriptor]:
    """Every service of the generated `bank` packages (each *_pb2 module is imported)."""
    import bank

    for module in pkgutil.walk_packages(bank.__path__, prefix="bank."):
        if module.name.endswith("_pb2"):
            yield from importlib.import_module(module.name).DESCRIPTOR.services_by_name.values()


def side_effect_free(method: MethodDescriptor) -> bool:
    options = method.GetOptions()
    return bool(options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS)


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def service_config(settings: ChannelSettings) -> dict[str, Any]:
    services = list(bank_services())
    retry = settings.retry
    retried = [{"service": s.full_name, "method": m.name}
               for s in services for m in s.methods if side_effect_free(m)]
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            # Only the side-effect-free methods: every other method has no retry policy.
            {"name": retried,
             "retryPolicy": {
                 "maxAttempts": retry.max_attempts,
                 "initialBackoff": _seconds(retry.initial_backoff_s),
                 "maxBackoff": _seconds(retry.max_backoff_s),
                 "backoffMultiplier": retry.backoff_multiplier,
                 "retryableStatusCodes": list(retry.retryable_codes),
             }},
        ],
        # Retries stop while more than half of the recent calls failed: no retry storm.
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }


def channel_options(settings: ChannelSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", json.dumps(service_config(settings))),
        # Ours, not one a DNS TXT record could supply.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.primary_user_agent", settings.user_agent),
    ]


def tls_credentials(ca_file: str | Path, cert_file: str | Path | None = None,
                    key_file: str | Path | None = None) -> grpc.ChannelCredentials:
    """TLS verified against `ca_file` (the internal CA); with a certificate and key, this
    client presents them (the services require one when they run mTLS)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(key_file).read_bytes() if key_file is not None else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file is not None else None,
    )


def _tls_options(settings: ChannelSettings,
                 channel_credentials: grpc.ChannelCredentials | None) -> list[tuple[str, Any]]:
    if channel_credentials is None or not settings.tls_server_name:
        return []
    return [("grpc.ssl_target_name_override", settings.tls_server_name)]


def open_channel(target: str, settings: ChannelSettings | None = None, *,
                 channel_credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A blocking channel; TLS when `channel_credentials` is given (in-cluster: plaintext)."""
    settings = settings or ChannelSettings()
    options = channel_options(settings) + _tls_options(settings, channel_credentials)
    if channel_credentials is not None:
        channel = grpc.secure_channel(target, channel_credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, DefaultDeadline(settings.timeout_s))


def open_aio_channel(target: str, settings: ChannelSettings | None = None, *,
                     channel_credentials: grpc.ChannelCredentials | None = None
                     ) -> grpc.aio.Channel:
    """The asyncio twin of open_channel (create it inside the running event loop)."""
    settings = settings or ChannelSettings()
    options = channel_options(settings) + _tls_options(settings, channel_credentials)
    deadline = [AsyncDefaultDeadline(settings.timeout_s)]
    if channel_credentials is not None:
        return grpc.aio.secure_channel(target, channel_credentials, options=options,
                                       interceptors=deadline)
    return grpc.aio.insecure_channel(target, options=options, interceptors=deadline)
