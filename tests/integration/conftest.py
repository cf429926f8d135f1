"""Fixtures shared by the gateway integration tests: a real Envoy from the gateway's generator in
front of two FakeBankServer replicas (real grpc.aio servers answering as each test scripts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGateway]:
    async with running_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture
def fake_bank(gateway: RunningGateway) -> RunningGateway:
    """The gateway with a clean script: no behaviours, no calls recorded."""
    gateway.reset()
    return gateway
