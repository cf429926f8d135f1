"""Redis ACLs on the harness's real cluster (devstack/redis_acl.py): every service, running as
its own user, does its whole job without one refused call, and each user is refused (NOPERM)
outside its rights; the default user cannot authenticate at all.

Why the job test looks at Redis itself: every Redis use falls back to PostgreSQL, so a refused
call would not fail a request. The test asks for what each user's writes leave behind (a session
entry, cached entries, floors, a published event) and for no NOPERM in
any log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import hiredis
import pytest
import redis.asyncio
import redis.exceptions
from bank.v1 import (
    account_pb2,
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    transfer_pb2,
    transfer_pb2_grpc,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack import seed
from devstack.redis_cluster import LocalRedisCluster
from services.account.bootstrap import build_account_app
from services.account.service_layer.cache_layout import balance_key, recent_key
from services.auth.bootstrap import build_auth_app
from services.transfer.adapters.event_publisher import RedisEventPublisher, published_key
from services.transfer.bootstrap import build_transfer_app
from services.transfer.domain import OutboxEvent
from shared.config import Settings
from shared.events import channel_name, partition_of
from shared.redis_client import create_redis_cluster, create_redis_pipeline
from shared.redis_pipeline import ClusterPipeline, RedisCallError, Script
from shared.request_gate import floors_key
from shared.sessions import session_key
from tests.support.account import cached_entry, eventually
from tests.support.auth import PASSWORD, auth_settings, random_address
from tests.support.db_roles import service_settings
from tests.support.redis_users import as_user
from tests.support.rpc import bearer
from tests.support.transfer import EventListener

pytestmark = pytest.mark.integration


def _noperm_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "NOPERM" in r.getMessage()
            or (r.exc_text is not None and "NOPERM" in r.exc_text)]


async def test_every_service_does_its_job_as_its_own_user(
    base_settings: Settings, engine: AsyncEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await seed.ensure_settlement_account(engine)
    admin = create_redis_cluster(base_settings)
    auth_app = build_auth_app(auth_settings(base_settings), port=0)
    account_app = build_account_app(service_settings(base_settings, "account"), port=0)
    transfer_app = build_transfer_app(service_settings(base_settings, "transfer"), port=0)
    apps = [auth_app, account_app, transfer_app]
    assert {app.settings.redis_username for app in apps} == {"auth", "account", "transfer"}
    started = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        assert account_app.events is not None
        await account_app.events.wait_caught_up()
        async with (grpc.aio.insecure_channel(f"127.0.0.1:{auth_app.grpc.port}") as auth_ch,
                    grpc.aio.insecure_channel(f"127.0.0.1:{account_app.grpc.port}") as acc_ch,
                    grpc.aio.insecure_channel(f"127.0.0.1:{transfer_app.grpc.port}") as tr_ch,
                    EventListener(base_settings) as listener):
            auth = auth_pb2_grpc.AuthServiceStub(auth_ch)
            accounts = account_pb2_grpc.AccountServiceStub(acc_ch)
            transfers = transfer_pb2_grpc.TransferServiceStub(tr_ch)
            email = f"acl-{uuid.uuid4().hex[:10]}@example.com"
            made = await auth.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="ACL"))
            address = (("x-forwarded-for", random_address()),)
            # The auth user: a failed login (counted in PostgreSQL), the session entry written.
            with pytest.raises(grpc.aio.AioRpcError):
                await auth.Login(auth_pb2.LoginRequest(email=email, password="wrong " + PASSWORD),
                                 metadata=address)
            session = await auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD),
                                       metadata=address)
            _, session_id, _ = session.token.split(".")
            assert await admin.get(session_key(made.user_id, session_id)) is not None

            # The account user: the gate, a fill, then a hit.
            await seed.deposit(engine, made.account_id, 10_000)
            savings = await seed.create_account(engine, made.user_id, name="Savings")
            request = account_pb2.GetBalanceRequest(account_id=made.account_id)
            await accounts.GetBalance(request, metadata=bearer(session.token))
            again = await accounts.GetBalance(request, metadata=bearer(session.token))
            assert again.source == account_pb2.READ_SOURCE_CACHE
            await accounts.ListRecentTransactions(
                account_pb2.ListRecentTransactionsRequest(account_id=made.account_id),
                metadata=bearer(session.token))
            assert await cached_entry(admin, recent_key(made.account_id)) is not None

            # The transfer user: floors, the publish script; the account user's subscription
            # and compare-and-set bring the cached balance to the new version.
            moved = await transfers.CreateTransfer(
                transfer_pb2.CreateTransferRequest(
                    from_account_id=made.account_id, to_account_id=savings,
                    amount=common_pb2.Money(minor_units=1_250, currency="EUR"),
                    idempotency_key=uuid.uuid4().hex),
                metadata=bearer(session.token))
            assert await admin.hget(floors_key(made.user_id), made.account_id) == str(
                moved.source_balance.version).encode()
            await listener.wait_for(moved.transfer_id, 2, timeout=10)

            async def cache_follows() -> bool:
                entry = await cached_entry(admin, balance_key(made.account_id))
                return entry is not None and entry.version == moved.source_balance.version

            await eventually(cache_follows, timeout_s=10)
    finally:
        for app in started:
            await app.stop()
        await admin.aclose()
    assert _noperm_logged(caplog) == []


async def test_the_relay_user_publishes_events(base_settings: Settings) -> None:
    relay = create_redis_pipeline(as_user(base_settings, "relay"))
    account_id = str(uuid.uuid4())
    partition = partition_of(account_id, base_settings.event_partitions)
    event = OutboxEvent(outbox_id=-int(uuid.uuid4().int % 10**12), partition=partition,
                        payload=b"")
    try:
        async with EventListener(base_settings):
            assert await RedisEventPublisher(relay).publish([event]) == [event.outbox_id]
        admin = create_redis_cluster(base_settings)
        try:
            assert await admin.zscore(published_key(partition), event.outbox_id) is not None
        finally:
            await admin.aclose()
    finally:
        await relay.close()


@pytest.fixture
async def pipelines(base_settings: Settings) -> AsyncIterator[dict[str, ClusterPipeline]]:
    made = {name: create_redis_pipeline(as_user(base_settings, name))
            for name in ("account", "transfer", "auth", "relay")}
    try:
        yield made
    finally:
        for pipeline in made.values():
            await pipeline.close()


async def _refused(pipeline: ClusterPipeline, key: str, *command: str) -> str:
    with pytest.raises(hiredis.ReplyError) as refused:
        await pipeline.execute(key, *command)
    return str(refused.value)


U, A = "{u-acl}", "{a-acl}"
# (user, routing key, command): outside each user's rights.
OUTSIDE_RIGHTS = [
    ("account", f"events:seq:{A}", ("INCR", f"events:seq:{A}")),
    ("account", channel_name(3), ("SPUBLISH", channel_name(3), "forged")),
    ("account", f"ratelimit:{{login-email:{A}}}:failures",
     ("DEL", f"ratelimit:{{login-email:{A}}}:failures")),
    ("auth", f"ratelimit:{{login-email:{A}}}:failures",
     ("INCR", f"ratelimit:{{login-email:{A}}}:failures")),
    ("auth", f"account:{A}:balance", ("SET", f"account:{A}:balance", "forged")),
    ("auth", f"transactions:{A}:recent", ("GET", f"transactions:{A}:recent")),
    ("auth", channel_name(3), ("SPUBLISH", channel_name(3), "forged")),
    ("transfer", f"account:{A}:balance", ("SET", f"account:{A}:balance", "forged")),
    ("transfer", f"api:{U}:accounts", ("GET", f"api:{U}:accounts")),
    ("transfer", channel_name(3), ("SSUBSCRIBE", channel_name(3))),
    ("relay", f"session:{U}:s", ("GET", f"session:{U}:s")),
    ("relay", f"ryw:{U}", ("HSET", f"ryw:{U}", "a", "1")),
    ("relay", f"account:{A}:balance", ("DEL", f"account:{A}:balance")),
]


@pytest.mark.parametrize(("user", "key", "command"), OUTSIDE_RIGHTS,
                         ids=[f"{u}-{c[0]}-{k}" for u, k, c in OUTSIDE_RIGHTS])
async def test_a_user_is_refused_outside_its_rights(
    pipelines: dict[str, ClusterPipeline], user: str, key: str, command: tuple[str, ...],
) -> None:
    assert (await _refused(pipelines[user], key, *command)).startswith("NOPERM")


@pytest.mark.parametrize("user", ["account", "transfer", "auth", "relay"])
@pytest.mark.parametrize("command", [("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "1"),
                                     ("KEYS", "*"), ("ACL", "LIST"), ("CLUSTER", "RESET")])
async def test_no_service_user_may_administer_the_cluster(
    pipelines: dict[str, ClusterPipeline], user: str, command: tuple[str, ...],
) -> None:
    assert (await _refused(pipelines[user], f"x:{U}", *command)).startswith("NOPERM")


async def test_scripts_are_held_to_the_same_rights(
    pipelines: dict[str, ClusterPipeline],
) -> None:
    """A script's keys and the commands it runs are checked: the account user cannot publish
    (or write the event sequence) from Lua either."""
    publish = Script("return redis.call('SPUBLISH', KEYS[1], 'forged')")
    with pytest.raises(hiredis.ReplyError, match="NOPERM|permissions"):
        await pipelines["account"].run(publish, [channel_name(5)], [])
    incr = Script("return redis.call('INCR', KEYS[1])")
    with pytest.raises(hiredis.ReplyError, match="NOPERM|permissions"):
        await pipelines["auth"].run(incr, [f"account:{A}:balance"], [])


async def test_the_default_user_cannot_authenticate(
    redis_cluster: LocalRedisCluster, base_settings: Settings,
) -> None:
    port = redis_cluster.ports[0]
    anonymous = redis.asyncio.Redis(host="127.0.0.1", port=port)
    default = redis.asyncio.Redis(host="127.0.0.1", port=port, username="default", password="")
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.get(f"account:{A}:balance")
        with pytest.raises(redis.exceptions.AuthenticationError):
            await default.ping()
    finally:
        await anonymous.aclose()
        await default.aclose()
    # The services' client without a user: every call is refused, nothing is served.
    unauthenticated = create_redis_pipeline(Settings(database_url="", redis_nodes=base_settings
                                                     .redis_nodes))
    try:
        with pytest.raises((hiredis.ReplyError, RedisCallError), match="NOAUTH"):
            await unauthenticated.execute(f"account:{A}:balance", "GET", f"account:{A}:balance")
    finally:
        await unauthenticated.close()


async def test_a_wrong_password_is_refused_and_not_shown(base_settings: Settings) -> None:
    wrong = as_user(base_settings, "account")
    wrong = Settings(**{**wrong.__dict__, "redis_password": "not-the-password"})
    assert "not-the-password" not in repr(wrong)
    pipeline = create_redis_pipeline(wrong)
    try:
        with pytest.raises(RedisCallError, match="AUTH") as refused:
            await pipeline.execute(f"account:{A}:balance", "GET", f"account:{A}:balance")
        assert "not-the-password" not in str(refused.value)
    finally:
        await pipeline.close()
