"""Fuzzing: schemathesis generates requests (valid and invalid) from the gateway's own OpenAPI
document and sends them to a real gateway (uvicorn) in front of a fake gRPC upstream. The
gateway must never answer 5xx nor raise, whatever the path, query, headers or body.

The stack runs in a thread with its own event loop because schemathesis' calls are blocking.
Bounded: ~25 examples per operation (a few hundred in all), well under a minute."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from devstack import seed
from services.gateway.bootstrap import RunningGateway, build_gateway_app, start_gateway_server
from services.gateway.descriptors import load_catalog
from services.gateway.fakes import FakeBankServer
from services.gateway.openapi import build_openapi
from services.gateway.routes import build_route_table
from shared.config import Settings
from shared.db import create_engine
from shared.redis_client import create_redis_cluster
from shared.sessions import SessionStore

pytestmark = pytest.mark.integration

_catalog = load_catalog()
schema = schemathesis.openapi.from_dict(
    build_openapi(build_route_table(_catalog.rpcs), _catalog.comments)
)


class ThreadedGateway:
    """Fake upstream + gateway + a real session, served from a thread's own event loop."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.token = ""
        self._thread = threading.Thread(target=self._run, name="fuzz-gateway", daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or not self.url:
            self.__exit__()
            raise RuntimeError("the fuzzing stack did not start") from self._error
        return self

    def __exit__(self, *_: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # reported to the test thread
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        bank = FakeBankServer(_catalog)
        await bank.start()
        engine = create_engine(self._settings)
        redis = create_redis_cluster(self._settings)
        running: RunningGateway | None = None
        try:
            user = await seed.create_user(engine, f"fuzz-{uuid.uuid4().hex[:12]}@example.com",
                                          "pw", "Fuzz", password_hash="!")
            self.token = (await SessionStore(engine, redis, 900).create(user)).token
            running = await start_gateway_server(
                build_gateway_app(self._settings, targets=bank.targets()))
            self.url = running.url
            self._ready.set()
            await self._stop.wait()
        finally:
            if running is not None:
                await running.stop()
            await redis.aclose()
            await engine.dispose()
            await bank.stop()


@pytest.fixture(scope="module")
def stack(base_settings: Settings) -> Iterator[ThreadedGateway]:
    fuzz_settings = dataclasses.replace(base_settings, rate_limit_per_minute=1_000_000,
                                        gateway_max_body_bytes=4096)
    with ThreadedGateway(fuzz_settings) as running:
        yield running


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_gateway_fail(case: schemathesis.Case, stack: ThreadedGateway) -> None:
    case.call_and_validate(base_url=stack.url,
                           headers={"Authorization": f"Bearer {stack.token}"},
                           checks=[not_a_server_error, response_schema_conformance,
                                   content_type_conformance, status_code_conformance])
