"""TLS of the internal gRPC links: the services' servers and their clients of each other.

Server: with BANK_GRPC_TLS_CERT_FILE and _KEY_FILE a service serves only TLS; with
BANK_GRPC_TLS_CA_FILE as well it requires a client certificate signed by that CA (mTLS: Envoy
and the other services present theirs). The certificate files are read again when they change
(checked at each new connection), so a certificate renewed in a mounted Secret (cert-manager)
is served without a restart.

Client: with the CA file the channel verifies the server against it, and presents this service's
own certificate and key when set. Without any of these settings everything stays plaintext
(`make run` on 127.0.0.1).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import grpc

from shared.config import ConfigError, Settings

log = logging.getLogger(__name__)


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{setting}={path!r} cannot be read: {err.strerror}") from None


class _CertificateFiles:
    """The server's key pair and client CA, re-read when a file's modification time changes."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stamp = self._stamps()
        self.initial = self._configuration()

    def _paths(self) -> list[str]:
        s = self._settings
        return [p for p in (s.grpc_tls_cert_file, s.grpc_tls_key_file, s.grpc_tls_ca_file) if p]

    def _stamps(self) -> tuple[float, ...]:
        stamps = []
        for path in self._paths():
            try:
                stamps.append(os.stat(path).st_mtime)
            except OSError:
                stamps.append(-1.0)
        return tuple(stamps)

    def _configuration(self) -> Any:
        s = self._settings
        return grpc.ssl_server_certificate_configuration(
            [(_read("BANK_GRPC_TLS_KEY_FILE", s.grpc_tls_key_file),
              _read("BANK_GRPC_TLS_CERT_FILE", s.grpc_tls_cert_file))],
            root_certificates=_read("BANK_GRPC_TLS_CA_FILE", s.grpc_tls_ca_file)
            if s.grpc_tls_ca_file else None,
        )

    def fetch(self) -> Any:
        """gRPC asks at each new connection: None keeps the current certificate."""
        stamp = self._stamps()
        if stamp == self._stamp:
            return None
        try:
            configuration = self._configuration()
        except ConfigError as err:  # half-written during a rotation: keep serving the old one
            log.warning("TLS certificate files changed but cannot be read yet: %s", err)
            return None
        self._stamp = stamp
        log.info("TLS certificate files changed: serving the new certificate")
        return configuration


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None: plaintext. Read errors name the setting."""
    if not settings.grpc_tls_cert_file:
        return None
    files = _CertificateFiles(settings)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch,
        require_client_authentication=bool(settings.grpc_tls_ca_file),
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """None: plaintext (no CA configured)."""
    if not settings.grpc_tls_ca_file:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read("BANK_GRPC_TLS_CA_FILE", settings.grpc_tls_ca_file),
        private_key=_read("BANK_GRPC_TLS_KEY_FILE", settings.grpc_tls_key_file)
        if settings.grpc_tls_key_file else None,
        certificate_chain=_read("BANK_GRPC_TLS_CERT_FILE", settings.grpc_tls_cert_file)
        if settings.grpc_tls_cert_file else None,
    )


def internal_channel(settings: Settings, target: str,
                     options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    """A channel to another service: TLS (mTLS with this service's certificate) when
    configured, with BANK_GRPC_TLS_SERVER_NAME as the name the server's certificate must
    carry (a dns:/// target of a headless Service resolves to pod addresses)."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    if settings.grpc_tls_server_name:
        options = [*options, ("grpc.ssl_target_name_override", settings.grpc_tls_server_name)]
    return grpc.aio.secure_channel(target, credentials, options=options)
