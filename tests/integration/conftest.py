"""Fixtures shared by the gateway and edge integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.gateway.descriptors import load_catalog
from services.gateway.fakes import FakeBankServer


@pytest.fixture(scope="module")
async def fake_bank() -> AsyncIterator[FakeBankServer]:
    """A real grpc.aio server answering every bank RPC as the test scripts it (the gateway's
    status table and transcoding need upstream answers no real service gives on demand)."""
    server = FakeBankServer(load_catalog())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
