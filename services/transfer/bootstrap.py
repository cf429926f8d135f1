"""The one place where the transfer service's and the outbox relay's dependencies are built."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bank.v1 import transfer_pb2, transfer_pb2_grpc, treasury_pb2, treasury_pb2_grpc

from services.transfer.adapters.event_publisher import RedisEventPublisher
from services.transfer.adapters.outbox_store import PostgresOutboxStore
from services.transfer.adapters.retention_store import PostgresTransferRetention
from services.transfer.adapters.transfer_repository import PostgresTransferRepository
from services.transfer.entrypoints.grpc_servicer import TransferServicer
from services.transfer.entrypoints.treasury_servicer import TreasuryServicer
from services.transfer.service_layer.event_dispatcher import EventDispatcher
from services.transfer.service_layer.outbox_relay import OutboxRelay
from services.transfer.service_layer.retention import transfer_retention_rules
from services.transfer.service_layer.transfers import (
    AfterCommitHook,
    TransferService,
    transfer_page_tokens,
)
from services.transfer.service_layer.treasury import TreasuryService
from shared.config import Settings
from shared.grpc_server import (
    GrpcService,
    build_grpc_service,
    servicer_registration,
    standard_readiness,
)
from shared.machine_credentials import MachineCredentials
from shared.page_tokens import page_token_key
from shared.pg_pool import PoolType, create_pool, create_probe_pool
from shared.redis_client import create_redis_breaker, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import RequestGate, build_request_gate
from shared.retention import RETENTION_POOL_SIZE, RetentionJob
from shared.task_stopping import stop_tasks


@dataclass
class TransferApp:
    settings: Settings
    probe_pool: PoolType  # the health probe's own connection
    pool: PoolType
    redis_pipeline: ClusterPipeline  # sessions, limits, read-your-writes floors, events
    gate: RequestGate
    grpc: GrpcService
    dispatcher: EventDispatcher
    service: TransferService

    async def start(self) -> None:
        """Open the pool (connections are made in the background, so a service started before
        PostgreSQL serves NOT_SERVING until it answers), start the dispatcher, then serve."""
        await self.probe_pool.open(wait=False)
        await self.pool.open(wait=False)
        await self.gate.warm_up()
        self.dispatcher.start()
        await self.grpc.start()

    async def close(self) -> None:
        """Publish what is still queued, then release the clients."""
        await self.dispatcher.stop()
        await self.pool.close()
        await self.redis_pipeline.close()
        await self.probe_pool.close()

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
    probe_pool = create_probe_pool(settings)
    pool = create_pool(settings)
    pipeline = create_redis_pipeline(settings)
    gate = build_request_gate(settings, pipeline, pool, create_redis_breaker(settings, pipeline))
    dispatcher = EventDispatcher(
        RedisEventPublisher(pipeline), PostgresOutboxStore(pool),
        confirm_interval_s=settings.outbox_confirm_interval_ms / 1000,
    )
    # A few lanes run transfers, alone or batched (adapters/transfer_batches.py); the rest of
    # the pool serves reads, confirmations and the request gate.
    repository = PostgresTransferRepository(pool, lanes=min(settings.transfer_lanes,
                                                            max(1, settings.db_pool_size - 1)))
    service = TransferService(
        repository,
        dispatcher,
        gate,
        max_amount=settings.max_transfer_minor_units,
        event_partitions=settings.event_partitions,
        page_tokens=transfer_page_tokens(page_token_key(settings)),
        after_commit=after_commit,
    )
    servicer = TransferServicer(service)
    treasury = TreasuryServicer(TreasuryService(
        repository, dispatcher, max_amount=settings.max_transfer_minor_units,
        event_partitions=settings.event_partitions))
    transfers = servicer_registration(
        transfer_pb2_grpc.add_TransferServiceServicer_to_server, servicer,
        transfer_pb2.DESCRIPTOR.services_by_name["TransferService"])
    treasury_registration = servicer_registration(
        treasury_pb2_grpc.add_TreasuryServiceServicer_to_server, treasury,
        treasury_pb2.DESCRIPTOR.services_by_name["TreasuryService"])

    grpc_service = build_grpc_service(
        settings,
        register=lambda server: [*transfers(server), *treasury_registration(server)],
        readiness_checks=standard_readiness(probe_pool),
        gate=gate,
        machines=MachineCredentials(pool, settings.service_name),
        port=port,
        health_poll_s=health_poll_s,
    )
    return TransferApp(settings, probe_pool, pool, pipeline, gate, grpc_service, dispatcher,
                       service)


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
            await stop_tasks([self._task])
            self._task = None
        await self.close()


# The relay works in batches, one at a time (docs/database.md counts its connections).
RELAY_POOL_SIZE = 2


def relay_min_age_s(settings: Settings) -> float:
    """Rows younger than this are still the service's to confirm (event_dispatcher.py)."""
    return 2 * settings.outbox_confirm_interval_ms / 1000 + 1.0


def build_relay_app(
    settings: Settings, *, min_age_s: float | None = None, poll_s: float = 0.5,
    batch_size: int = 500,
) -> RelayApp:
    """The relay needs few connections: it works in batches, one at a time."""
    pool = create_pool(settings, size=RELAY_POOL_SIZE)
    redis = create_redis_pipeline(settings)
    relay = OutboxRelay(
        PostgresOutboxStore(pool),
        RedisEventPublisher(redis),
        min_age_s=relay_min_age_s(settings) if min_age_s is None else min_age_s,
        poll_s=poll_s,
        batch_size=batch_size,
    )
    return RelayApp(settings, pool, redis, relay)


def build_retention_job(settings: Settings) -> RetentionJob:
    pool = create_pool(settings, size=RETENTION_POOL_SIZE)
    rules = transfer_retention_rules(
        PostgresTransferRetention(pool, settings.event_partitions),
        outbox_retention_s=settings.outbox_retention_s,
        rejection_retention_s=settings.idempotency_retention_s,
    )
    return RetentionJob("transfer", pool, rules)
