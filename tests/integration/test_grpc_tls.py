"""The services' gRPC servers with TLS (shared/grpc_tls.py), on certificates made by the compose
script (deploy/compose/make-internal-certs.sh): a client with a certificate of the internal CA
is served; a plaintext client and a client without a certificate are refused; a renewed
certificate is served to new connections without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.config import Settings
from shared.grpc_server import GrpcService, build_grpc_service
from shared.grpc_tls import channel_credentials, internal_channel

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "compose" / "make-internal-certs.sh"


def issue_certificates(folder: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to issue the test certificates")
    subprocess.run(["sh", str(SCRIPT), str(folder)], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "CERT_DAYS": "2"})
    return folder


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return issue_certificates(tmp_path_factory.mktemp("internal-tls"))


def tls_settings(certs: Path, name: str, **overrides: object) -> Settings:
    return dataclasses.replace(
        Settings(database_url="", redis_nodes="127.0.0.1:1"),
        grpc_tls_cert_file=str(certs / f"{name}.crt"), grpc_tls_key_file=str(certs / f"{name}.key"),
        grpc_tls_ca_file=str(certs / "ca.crt"), grpc_tls_server_name="account",
        **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def tls_server(certs: Path, tmp_path: Path) -> AsyncIterator[tuple[GrpcService, Path]]:
    """A service's gRPC server (health only) with mTLS, its files in a folder of its own (the
    rotation test replaces them)."""
    served = tmp_path / "served"
    shutil.copytree(certs, served)
    settings = tls_settings(served, "account", service_name="account")
    service = build_grpc_service(settings, register=lambda _server: [], readiness_checks=[],
                                 gate=None, port=0)
    await service.start()
    try:
        yield service, served
    finally:
        await service.stop(0)


async def health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5)
    return int(reply.status)


async def test_a_client_with_a_certificate_of_the_internal_ca_is_served(
    tls_server: tuple[GrpcService, Path], certs: Path,
) -> None:
    service, _ = tls_server
    # The edge's certificate, as Envoy presents it; the server's name checked as "account".
    client = tls_settings(certs, "edge")
    async with internal_channel(client, f"127.0.0.1:{service.port}", []) as channel:
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(tls_server: tuple[GrpcService, Path]) -> None:
    service, _ = tls_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_without_a_certificate_is_refused(
    tls_server: tuple[GrpcService, Path], certs: Path,
) -> None:
    service, _ = tls_server
    anonymous = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(
            f"127.0.0.1:{service.port}", anonymous,
            options=[("grpc.ssl_target_name_override", "account")]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_of_another_ca_is_refused(
    tls_server: tuple[GrpcService, Path], tmp_path: Path,
) -> None:
    service, _ = tls_server
    stranger = issue_certificates(tmp_path / "stranger")
    credentials = channel_credentials(tls_settings(stranger, "edge"))
    assert credentials is not None
    async with grpc.aio.secure_channel(
            f"127.0.0.1:{service.port}", credentials,
            options=[("grpc.ssl_target_name_override", "account")]) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await health(channel)


def served_certificate(port: int, certs: Path) -> bytes:
    """The DER certificate the server presents to a new connection."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(certs / "edge.crt"), str(certs / "edge.key"))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


async def test_a_renewed_certificate_is_served_without_a_restart(
    tls_server: tuple[GrpcService, Path], certs: Path, tmp_path: Path,
) -> None:
    service, served = tls_server
    before = await asyncio.to_thread(served_certificate, service.port, certs)
    renewed = tmp_path / "renewed"
    shutil.copytree(certs, renewed)
    issue_certificates(renewed)  # same CA (its key is there), fresh leaves
    for name in ("account.key", "account.crt"):
        shutil.copy(renewed / name, served / name)
    after = await asyncio.to_thread(served_certificate, service.port, certs)
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert((renewed / "account.crt").read_text())


async def test_the_python_client_reaches_a_tls_service(
    tls_server: tuple[GrpcService, Path], certs: Path,
) -> None:
    from cachebank_client import ChannelSettings, open_aio_channel, tls_credentials

    service, _ = tls_server
    credentials = tls_credentials(certs / "ca.crt", certs / "edge.crt", certs / "edge.key")
    async with open_aio_channel(f"ipv4:127.0.0.1:{service.port}",
                                ChannelSettings(tls_server_name="account"),
                                channel_credentials=credentials) as channel:
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_probes_that_cannot_speak_tls_get_health_on_a_port_of_their_own(
    certs: Path,
) -> None:
    """Kubernetes' native gRPC probes have no TLS: a plaintext port answers health, and only
    health (reflection and every service stay behind TLS)."""
    from devstack.ports import free_ports

    (health_port,) = free_ports(1)
    settings = tls_settings(certs, "account", grpc_health_port=health_port)
    service = build_grpc_service(settings, register=lambda _server: [], readiness_checks=[],
                                 gate=None, port=0)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await channel.unary_unary(
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(b"",
                                                                                     timeout=5)
            assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await service.stop(0)
