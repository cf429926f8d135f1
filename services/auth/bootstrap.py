"""The one place where the auth service's dependencies are built."""

from __future__ import annotations

from dataclasses import dataclass

from bank.v1 import auth_pb2, auth_pb2_grpc

from services.auth.adapters.attempt_counters import PostgresAttemptCounters
from services.auth.adapters.cache_warmer import GrpcCacheWarmer
from services.auth.adapters.password_hasher import Argon2PasswordHasher, hasher_from_settings
from services.auth.adapters.session_retention import PostgresSessionRetention
from services.auth.adapters.session_store import SessionStore
from services.auth.adapters.user_repository import PostgresUserRepository
from services.auth.domain import FixedWindow, RisingDelay
from services.auth.entrypoints.grpc_servicer import AuthServicer
from services.auth.service_layer.attempt_limits import (
    LoginLimits,
    LoginPolicy,
    RegisterLimits,
    RegisterPolicy,
)
from services.auth.service_layer.device_tokens import DeviceTokens
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
from shared.sessions import SessionEntrySigner, derived_key


@dataclass
class AuthApp:
    settings: Settings
    probe_pool: PoolType  # the health probe's own connection
    pool: PoolType  # users, sessions and the request gate's confirmations
    redis_pipeline: ClusterPipeline  # sessions and the request gate
    gate: RequestGate
    sessions: SessionStore
    hasher: Argon2PasswordHasher  # its two worker pools
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
        self.hasher.close()
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
    hasher = hasher_from_settings(settings)
    counters = PostgresAttemptCounters(pool)
    deps = AuthDependencies(
        users=PostgresUserRepository(pool),
        sessions=sessions,
        checker=gate,
        limiter=LoginLimits(counters, login_policy(settings)),
        register_limiter=RegisterLimits(counters, RegisterPolicy(
            per_address=FixedWindow(settings.register_per_address_per_hour, 3600),
            overall=FixedWindow(settings.register_per_minute, 60),
        )),
        hasher=hasher,
        warmer=warmer,
        device_tokens=DeviceTokens(
            derived_key(settings.session_signing_key, "cachebank device tokens v1"),
            settings.login_device_token_ttl_s),
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
    return AuthApp(settings, probe_pool, pool, pipeline, gate, sessions, hasher, warmer, service)


def login_policy(settings: Settings) -> LoginPolicy:
    window_s = settings.login_window_s
    return LoginPolicy(
        per_pair=FixedWindow(settings.login_max_failures, window_s),
        per_address=FixedWindow(settings.login_address_max_failures, window_s),
        per_email=RisingDelay(settings.login_email_free_failures, settings.login_delay_base_s,
                              settings.login_delay_max_s, window_s),
        per_device=RisingDelay(settings.login_email_free_failures, settings.login_delay_base_s,
                               settings.login_delay_max_s, window_s),
    )


def build_retention_job(settings: Settings) -> RetentionJob:
    pool = create_pool(settings, size=RETENTION_POOL_SIZE)
    rules = session_retention_rules(
        PostgresSessionRetention(pool), idle_ttl_s=settings.session_ttl_s,
        absolute_ttl_s=settings.session_absolute_ttl_s, keep_s=settings.session_retention_s,
    )
    return RetentionJob("auth", pool, rules)
