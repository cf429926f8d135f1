"""Fuzzing: schemathesis generates requests (valid and invalid) from the generated OpenAPI
document and sends them through a real Envoy to FakeBankServer replicas. Whatever the path,
query, headers or body, no answer is a 5xx, and every answer matches the document.

The stack runs in a thread with its own event loop (the fake gRPC servers are grpc.aio), because
schemathesis' calls are blocking. Bounded: 50 examples per operation, well under a minute."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.gateway.descriptors import load_catalog
from services.gateway.openapi import build_openapi
from services.gateway.routes import build_route_table
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.integration

_catalog = load_catalog()
schema = schemathesis.openapi.from_dict(
    build_openapi(build_route_table(_catalog.rpcs), _catalog.comments)
)


class ThreadedGateway:
    """Envoy + fake replicas, owned by a thread's event loop, stopped on exit."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.ca_file = ""
        self._thread = threading.Thread(target=self._run, name="fuzz-gateway", daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        self._ready.wait(90)
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
        async with running_gateway(self._folder) as gateway:
            self.url = gateway.url
            self.ca_file = str(self._folder / "tls.crt")
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def stack() -> Iterator[ThreadedGateway]:
    with tempfile.TemporaryDirectory() as folder, ThreadedGateway(Path(folder)) as running:
        yield running


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_gateway_fail(case: schemathesis.Case, stack: ThreadedGateway) -> None:
    case.call_and_validate(base_url=stack.url, verify=stack.ca_file,
                           headers={"Authorization": "Bearer u.s.secret"},
                           checks=[not_a_server_error, response_schema_conformance,
                                   content_type_conformance, status_code_conformance])
