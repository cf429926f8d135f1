"""The one place where the auth service's dependencies are built."""

from __future__ import annotations

from dataclasses import dataclass

from bank.v1 import auth_pb2, auth_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.adapters.login_limiter import RedisLoginLimiter
from services.auth.adapters.user_repository import PostgresUserRepository
from services.auth.entrypoints.grpc_servicer import AuthServicer
from services.auth.service_layer.ports import AuthDependencies
from shared.config import Settings
from shared.db import create_engine
from shared.grpc_server import (
    GrpcService,
    build_grpc_service,
    servicer_registration,
    standard_readiness,
)
from shared.passwords import hasher_from_settings
from shared.redis_client import create_redis_cluster
from shared.sessions import SessionStore


@dataclass
class AuthApp:
    settings: Settings
    engine: AsyncEngine
    redis: RedisCluster
    sessions: SessionStore
    grpc: GrpcService

    async def start(self) -> None:
        await self.grpc.start()

    async def close(self) -> None:
        await self.sessions.aclose()
        await self.redis.aclose()
        await self.engine.dispose()

    async def stop(self, grace: float = 0.0) -> None:
        await self.grpc.stop(grace)
        await self.close()


def build_auth_app(settings: Settings, port: int | None = None,
                   health_poll_s: float = 1.0) -> AuthApp:
    engine = create_engine(settings)
    redis = create_redis_cluster(settings)
    sessions = SessionStore(engine, redis, settings.session_ttl_s)
    deps = AuthDependencies(
        users=PostgresUserRepository(engine),
        sessions=sessions,
        limiter=RedisLoginLimiter(redis, settings.login_max_failures, settings.login_window_s),
        hasher=hasher_from_settings(settings),
    )
    servicer = AuthServicer(deps)

    service = build_grpc_service(
        settings,
        register=servicer_registration(
            auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer,
            auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        ),
        readiness_checks=standard_readiness(engine, redis),
        authenticator=sessions,
        port=port,
        health_poll_s=health_poll_s,
    )
    return AuthApp(settings, engine, redis, sessions, service)
