"""The one place where the auth service's dependencies are built."""

from __future__ import annotations

from dataclasses import dataclass

from bank.v1 import auth_pb2, auth_pb2_grpc

from services.auth.adapters.cache_warmer import GrpcCacheWarmer
from services.auth.adapters.login_limiter import RedisLoginLimiter
from services.auth.adapters.password_hasher import hasher_from_settings
from services.auth.adapters.pg_login_limiter import PostgresLoginLimiter
from services.auth.adapters.session_retention import PostgresSessionRetention
from services.auth.adapters.session_store import SessionStore
from services.auth.adapters.user_repository import PostgresUserRepository
from services.auth.entrypoints.grpc_servicer import AuthServicer
from services.auth.service_layer.login_limits import FallbackLoginLimiter
from services.auth.service_layer.ports import AuthDependencies
from services.auth.service_layer.retention import session_retention_rules
from shared.config import Settings
from shared.grpc_server import (
    GrpcService,
    build_grpc_service,
    servicer_registration,
    standard_readiness,
)
from shared.grpc_tls import internal_channel
from shared.pg_pool import PoolType, create_pool, create_probe_pool
from shared.redis_client import create_redis_breaker, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline
from shared.request_gate import RequestGate, build_request_gate
from shared.retention import RETENTION_POOL_SIZE, RetentionJob
from shared.sessions import SessionEntrySigner


@dataclass
class AuthApp:
    settings: Settings
    probe_pool: PoolType  # the health probe's own connection
    pool: PoolType  # users, sessions and the request gate's confirmations
    redis_pipeline: ClusterPipeline  # sessions, the request gate and the login limits
    gate: RequestGate
    sessions: SessionStore
    warmer: GrpcCacheWarmer  # WarmCache on the account service after each login
    grpc: GrpcService

    async def start(self) -> None:
        await self.probe_pool.open(wait=False)
        await self.pool.open(wait=False)
        await self.gate.warm_up()
        await self.grpc.start()

    async def close(self) -> None:
        await self.warmer.aclose()
        await self.sessions.aclose()
        await self.pool.close()
        await self.redis_pipeline.close()
        await self.probe_pool.close()

    async def stop(self, grace: float = 0.0) -> None:
        await self.grpc.stop(grace)
        await self.close()


def build_auth_app(settings: Settings, port: int | None = None,
                   health_poll_s: float = 1.0) -> AuthApp:
    settings.require("session_signing_key")
    probe_pool = create_probe_pool(settings)
    pool = create_pool(settings)
    pipeline = create_redis_pipeline(settings)
    breaker = create_redis_breaker(settings, pipeline)
    gate = build_request_gate(settings, pipeline, pool, breaker)
    sessions = SessionStore(pool, pipeline, SessionEntrySigner(settings.session_signing_key),
                            ttl_s=settings.session_ttl_s,
                            absolute_ttl_s=settings.session_absolute_ttl_s)
    # Client-side round robin over the account replicas (dns:/// in Kubernetes).
    warmer = GrpcCacheWarmer(internal_channel(
        settings, settings.account_target, [("grpc.lb_policy_name", "round_robin")]))
    deps = AuthDependencies(
        users=PostgresUserRepository(pool),
        sessions=sessions,
        checker=gate,
        limiter=FallbackLoginLimiter(
            RedisLoginLimiter(pipeline, settings.login_max_failures, settings.login_window_s),
            PostgresLoginLimiter(pool, settings.login_max_failures, settings.login_window_s),
            breaker,
        ),
        hasher=hasher_from_settings(settings),
        warmer=warmer,
    )
    servicer = AuthServicer(deps)

    service = build_grpc_service(
        settings,
        register=servicer_registration(
            auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer,
            auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        ),
        readiness_checks=standard_readiness(probe_pool),
        gate=gate,
        port=port,
        health_poll_s=health_poll_s,
    )
    return AuthApp(settings, probe_pool, pool, pipeline, gate, sessions, warmer, service)


def build_retention_job(settings: Settings) -> RetentionJob:
    pool = create_pool(settings, size=RETENTION_POOL_SIZE)
    rules = session_retention_rules(
        PostgresSessionRetention(pool), idle_ttl_s=settings.session_ttl_s,
        absolute_ttl_s=settings.session_absolute_ttl_s, keep_s=settings.session_retention_s,
    )
    return RetentionJob("auth", pool, rules)
