"""The one place where the transfer service's and the outbox relay's dependencies are built."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field

from bank.v1 import transfer_pb2, transfer_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.transfer.adapters.event_publisher import RedisEventPublisher
from services.transfer.adapters.outbox_store import PostgresOutboxStore
from services.transfer.adapters.transfer_repository import PostgresTransferRepository
from services.transfer.entrypoints.grpc_servicer import TransferServicer
from services.transfer.service_layer.event_dispatcher import EventDispatcher
from services.transfer.service_layer.outbox_relay import OutboxRelay
from services.transfer.service_layer.transfers import AfterCommitHook, TransferService
from shared.config import Settings
from shared.db import create_engine
from shared.grpc_server import (
    GrpcService,
    build_grpc_service,
    servicer_registration,
    standard_readiness,
)
from shared.pg_pool import PoolType, create_pool
from shared.redis_client import create_redis_breaker, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import RequestGate, build_request_gate


def _probe_engine(settings: Settings) -> AsyncEngine:
    """The health probe's own small pool: a busy hot-path pool must not fail the probe."""
    return create_engine(dataclasses.replace(settings, db_pool_size=2))


@dataclass
class TransferApp:
    settings: Settings
    engine: AsyncEngine
    pool: PoolType
    redis_pipeline: ClusterPipeline  # sessions, limits, read-your-writes floors, events
    gate: RequestGate
    grpc: GrpcService
    dispatcher: EventDispatcher
    service: TransferService

    async def start(self) -> None:
        """Open the pool (connections are made in the background, so a service started before
        PostgreSQL serves NOT_SERVING until it answers), start the dispatcher, then serve."""
        await self.pool.open(wait=False)
        await self.gate.warm_up()
        self.dispatcher.start()
        await self.grpc.start()

    async def close(self) -> None:
        """Publish what is still queued, then release the clients."""
        await self.dispatcher.stop()
        await self.pool.close()
        await self.redis_pipeline.close()
        await self.engine.dispose()

    async def stop(self, grace: float = 0.0) -> None:
        await self.grpc.stop(grace)
        await self.close()


def build_transfer_app(
    settings: Settings,
    port: int | None = None,
    health_poll_s: float = 1.0,
    *,
    after_commit: AfterCommitHook | None = None,
) -> TransferApp:
    """`after_commit` is for the crash test only (see service_layer.transfers)."""
    engine = _probe_engine(settings)
    pool = create_pool(settings)
    pipeline = create_redis_pipeline(settings)
    gate = build_request_gate(settings, pipeline, pool, create_redis_breaker(settings, pipeline))
    dispatcher = EventDispatcher(RedisEventPublisher(pipeline), PostgresOutboxStore(pool))
    service = TransferService(
        PostgresTransferRepository(pool),
        dispatcher,
        gate,
        max_amount=settings.max_transfer_minor_units,
        event_partitions=settings.event_partitions,
        after_commit=after_commit,
    )
    servicer = TransferServicer(service)

    grpc_service = build_grpc_service(
        settings,
        register=servicer_registration(
            transfer_pb2_grpc.add_TransferServiceServicer_to_server, servicer,
            transfer_pb2.DESCRIPTOR.services_by_name["TransferService"],
        ),
        readiness_checks=standard_readiness(engine),
        gate=gate,
        port=port,
        health_poll_s=health_poll_s,
    )
    return TransferApp(settings, engine, pool, pipeline, gate, grpc_service, dispatcher, service)


@dataclass
class RelayApp:
    settings: Settings
    pool: PoolType
    redis: ClusterPipeline
    relay: OutboxRelay
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        if self._task is None:
            await self.pool.open(wait=False)
            self._task = asyncio.create_task(self.relay.run_forever(), name="outbox-relay")

    async def close(self) -> None:
        await self.pool.close()
        await self.redis.close()

    async def stop(self, grace: float = 0.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.close()


def build_relay_app(
    settings: Settings, *, min_age_s: float = 1.5, poll_s: float = 0.5, batch_size: int = 500
) -> RelayApp:
    """The relay needs few connections: it works in batches, one at a time."""
    pool = create_pool(settings, size=2)
    redis = create_redis_pipeline(settings)
    relay = OutboxRelay(
        PostgresOutboxStore(pool),
        RedisEventPublisher(redis),
        min_age_s=min_age_s,
        poll_s=poll_s,
        batch_size=batch_size,
        idempotency_retention_s=settings.idempotency_retention_s,
    )
    return RelayApp(settings, pool, redis, relay)
