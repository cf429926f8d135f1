"""The one place where the account service's dependencies are built."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from bank.v1 import account_pb2, account_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from services.account.adapters.account_repository import AccountRepository
from services.account.entrypoints.grpc_servicer import AccountServicer
from shared.config import Settings
from shared.db import create_engine, database_ready
from shared.grpc_server import GrpcService, build_grpc_service
from shared.redis_client import create_redis_cluster, redis_ready
from shared.sessions import SessionStore


@dataclass
class AccountApp:
    settings: Settings
    engine: AsyncEngine
    redis: RedisCluster
    grpc: GrpcService

    async def start(self) -> None:
        await self.grpc.start()

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()

    async def stop(self, grace: float = 0.0) -> None:
        await self.grpc.stop(grace)
        await self.close()


def build_account_app(settings: Settings, *, port: int | None = None,
                      health_poll_s: float = 1.0) -> AccountApp:
    engine = create_engine(settings)
    redis = create_redis_cluster(settings)
    sessions = SessionStore(engine, redis, settings.session_ttl_s)
    servicer = AccountServicer(AccountRepository(engine))

    def register(server: grpc.aio.Server) -> list[str]:
        account_pb2_grpc.add_AccountServiceServicer_to_server(servicer, server)
        return [account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name]

    service = build_grpc_service(
        settings,
        register=register,
        readiness_checks=[lambda: database_ready(engine), lambda: redis_ready(redis)],
        authenticator=sessions,
        port=port,
        health_poll_s=health_poll_s,
    )
    return AccountApp(settings, engine, redis, service)
