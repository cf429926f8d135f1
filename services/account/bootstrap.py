"""The one place where the account service's dependencies are built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bank.v1 import account_pb2, account_pb2_grpc
from redis.asyncio.cluster import RedisCluster

from services.account.adapters.account_repository import AccountRepository
from services.account.adapters.event_subscription import ShardedSubscription
from services.account.adapters.outbox_reader import OutboxReader
from services.account.entrypoints.event_consumer import BalanceEventConsumer
from services.account.entrypoints.grpc_servicer import AccountServicer, prefetchers
from services.account.service_layer.balance_event_sync import BalanceEventSync
from services.account.service_layer.balance_events import BalanceEventApplier
from services.account.service_layer.cache_layout import balance_key
from services.account.service_layer.dependencies import AccountReads, CacheTtls
from services.account.service_layer.pagination import transaction_page_tokens
from services.account.service_layer.ports import AccountReader
from shared.cache import AppliedVersions, ReadThroughCache, VersionedCache
from shared.cache.read_through import LeaseTuning
from shared.cache.redis_backend import RedisCacheBackend
from shared.config import Settings
from shared.grpc_server import (
    GrpcService,
    build_grpc_service,
    servicer_registration,
    standard_readiness,
)
from shared.page_tokens import page_token_key
from shared.pg_pool import PoolType, create_pool, create_probe_pool
from shared.redis_client import (
    create_redis_breaker,
    create_redis_cluster,
    create_redis_pipeline,
    redis_connection_options,
)
from shared.redis_pipeline import ALL_SLOTS, ClusterPipeline, TopologyEvent, slot_of_key
from shared.request_gate import RequestGate, build_request_gate


@dataclass
class AccountApp:
    settings: Settings
    probe_pool: PoolType  # the health probe's own connection
    pool: PoolType  # every account read, and session confirmations
    redis: RedisCluster  # the event subscription (sharded pub/sub)
    redis_pipeline: ClusterPipeline  # sessions, limits and the cache
    gate: RequestGate
    grpc: GrpcService
    cache: VersionedCache
    reads: AccountReads
    events: BalanceEventConsumer | None  # None when the cache is disabled
    applied_versions: AppliedVersions  # where reads wait for the events they need

    async def start(self) -> None:
        """Open the pool (connections are made in the background: a service started before
        PostgreSQL answers once it does), subscribe to the events, then serve."""
        await self.probe_pool.open(wait=False)
        await self.pool.open(wait=False)
        await self.gate.warm_up()
        if self.events is not None:
            await self.events.start()
        await self.grpc.start()

    async def close(self) -> None:
        if self.events is not None:
            await self.events.stop()
        await self.pool.close()
        await self.redis_pipeline.close()
        await self.redis.aclose()
        await self.probe_pool.close()

    async def stop(self, grace: float = 0.0) -> None:
        await self.grpc.stop(grace)
        await self.close()


def catch_up_window_s(settings: Settings) -> float:
    """Outbox rows older than every cache entry's lifetime cannot correct anything still cached;
    the margin covers transactions that started (created_at) well before they committed."""
    longest_ttl = max(settings.balance_ttl_s, settings.recent_ttl_s) * (1 + settings.ttl_jitter)
    return longest_ttl + settings.db_statement_timeout_ms / 1000 + 5.0


def build_account_app(
    settings: Settings,
    *,
    port: int | None = None,
    health_poll_s: float = 1.0,
    wrap_reader: Callable[[AccountReader], AccountReader] | None = None,
    lease: LeaseTuning | None = None,
) -> AccountApp:
    """`wrap_reader` lets tests count or pause database loads (the race and stampede tests)."""
    probe_pool = create_probe_pool(settings)
    pool = create_pool(settings)
    redis = create_redis_cluster(settings)
    pipeline = create_redis_pipeline(settings)
    breaker = create_redis_breaker(settings, pipeline)
    gate = build_request_gate(settings, pipeline, pool, breaker)
    # The pipeline enforces the deadline of every call: no second timer around it.
    cache = VersionedCache(RedisCacheBackend(pipeline), breaker, None)
    ttls = CacheTtls(settings.balance_ttl_s, settings.recent_ttl_s, settings.api_ttl_s,
                     settings.ttl_jitter,
                     tombstone_s=2 * settings.db_statement_timeout_ms / 1000 + 5)
    reader: AccountReader = AccountRepository(pool)
    if wrap_reader is not None:
        reader = wrap_reader(reader)
    applied_versions = AppliedVersions()
    read_through = ReadThroughCache(
        cache if settings.cache_enabled else None, ttl_jitter=settings.ttl_jitter, lease=lease,
        applied_versions=applied_versions, version_wait_s=settings.min_version_wait_ms / 1000,
    )
    reads = AccountReads(reader, read_through, ttls,
                         transaction_page_tokens(page_token_key(settings)))

    events = None
    if settings.cache_enabled:
        # The consumer's writes have a breaker of their own: they run in the background, where a
        # timeout costs no request, and the requests' breaker must not hold the repair back.
        event_cache = VersionedCache(RedisCacheBackend(pipeline),
                                     create_redis_breaker(settings, pipeline, exported=False), None)
        sync = BalanceEventSync(
            applier=BalanceEventApplier(event_cache, ttls),
            outbox=OutboxReader(pool),
            partitions=settings.event_partitions,
            catch_up_window_s=catch_up_window_s(settings),
            applied_versions=applied_versions,
            slot_of=lambda account_id: slot_of_key(balance_key(account_id)),
        )

        def repair(event: TopologyEvent) -> None:
            if event.writes_lost:
                # Every slot: before a failed master is replaced the whole cluster refuses
                # writes (CLUSTERDOWN), so events of every partition may have failed to publish.
                sync.request_repair(ALL_SLOTS)
            else:
                sync.request_repair(())  # nothing lost: failed applies can be retried now

        pipeline.add_topology_listener(repair)
        events = BalanceEventConsumer(
            new_subscription=lambda: ShardedSubscription(
                redis, timeout_s=max(settings.redis_timeout_ms / 1000, 0.5),
                connection_options=redis_connection_options(settings),
            ),
            sync=sync,
            partitions=settings.event_partitions,
        )

    servicer = AccountServicer(reads)

    service = build_grpc_service(
        settings,
        register=servicer_registration(
            account_pb2_grpc.add_AccountServiceServicer_to_server, servicer,
            account_pb2.DESCRIPTOR.services_by_name["AccountService"],
        ),
        readiness_checks=standard_readiness(probe_pool),
        gate=gate,
        prefetch=prefetchers(reads),
        port=port,
        health_poll_s=health_poll_s,
    )
    return AccountApp(settings, probe_pool, pool, redis, pipeline, gate, service, cache, reads,
                      events, applied_versions)
