"""The pipelined Redis Cluster client on a real Redis Cluster: routing by slot,
MOVED after a stale layout, NOSCRIPT after a flush, a timed-out reply that does not shift the
stream, a primary's failover, and the topology events its listeners hear."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from devstack.redis_cluster import LocalRedisCluster
from shared.redis_pipeline import ClusterPipeline, RedisCallError, Script, TopologyEvent
from tests.support.account import eventually

pytestmark = pytest.mark.integration

ECHO = Script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
SLOW = Script("local t = redis.call('TIME') local start = t[1] * 1e6 + t[2] "
              "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > 150000 "
              "return 'slow'")


@pytest.fixture
async def scripts(redis_cluster: LocalRedisCluster) -> AsyncIterator[ClusterPipeline]:
    runner = ClusterPipeline(redis_cluster.startup_nodes, timeout_s=1.0,
                             credentials=redis_cluster.credentials())
    try:
        yield runner
    finally:
        await runner.close()


async def test_many_keys_concurrently_each_on_its_slot(scripts: ClusterPipeline) -> None:
    keys = [f"gwtest:{{{uuid.uuid4().hex}}}" for _ in range(200)]
    replies = await asyncio.gather(*(scripts.run(ECHO, [k], [i]) for i, k in enumerate(keys)))
    assert replies == [[k.encode(), str(i).encode(), 1] for i, k in enumerate(keys)]


def test_runs_on_uvloop_as_in_production(redis_cluster: LocalRedisCluster) -> None:
    """`python -m services.gateway` runs on uvloop, whose transports differ from asyncio's."""
    import uvloop

    async def main() -> list[object]:
        runner = ClusterPipeline(redis_cluster.startup_nodes, timeout_s=1.0,
                                 credentials=redis_cluster.credentials())
        try:
            keys = [f"gwtest:{{{uuid.uuid4().hex}}}" for _ in range(20)]
            return await asyncio.gather(*(runner.run(ECHO, [k], ["u"]) for k in keys))
        finally:
            await runner.close()

    replies = uvloop.run(main())
    assert [r[2] for r in replies] == [1] * 20  # type: ignore[index]


async def test_moved_after_a_stale_layout_is_followed(scripts: ClusterPipeline) -> None:
    await scripts.refresh_topology()
    wrong = ("127.0.0.1", scripts._slots[0][1])  # type: ignore[index]
    scripts._slots = [wrong] * 16384  # every slot "on" one node: the others answer MOVED
    keys = [f"gwtest:{{{uuid.uuid4().hex}}}" for _ in range(30)]
    replies = await asyncio.gather(*(scripts.run(ECHO, [k], ["x"]) for k in keys))
    assert [r[2] for r in replies] == [1] * 30


async def test_noscript_after_a_flush_loads_the_script(
    scripts: ClusterPipeline, redis_cluster: LocalRedisCluster
) -> None:
    key = f"gwtest:{{{uuid.uuid4().hex}}}"
    await scripts.run(ECHO, [key], ["a"])
    with redis_cluster.client(redis_cluster.master_for_key(key)) as node:
        node.script_flush()
    assert (await scripts.run(ECHO, [key], ["b"]))[2] == 2


async def test_a_timed_out_reply_does_not_shift_later_replies(
    redis_cluster: LocalRedisCluster
) -> None:
    runner = ClusterPipeline(redis_cluster.startup_nodes, timeout_s=0.05,
                             credentials=redis_cluster.credentials())
    key = f"gwtest:{{{uuid.uuid4().hex}}}"
    try:
        await runner.run(ECHO, [key], ["warm"])
        with pytest.raises(RedisCallError, match="timed out"):
            await runner.run(SLOW, [key], [])
        runner._timeout_s = 2.0
        # Until the node answers the client's ping, calls to it fail at once (a hung node
        # costs one deadline, then nothing).
        with pytest.raises(RedisCallError, match="not answering"):
            await runner.run(ECHO, [key], ["skipped"])

        async def answers_again() -> bool:
            return not runner.suspects

        await eventually(answers_again, timeout_s=5)
        assert await runner.run(ECHO, [key], ["after"]) == [key.encode(), b"after", 2]
    finally:
        await runner.close()


async def test_a_failed_over_primary_is_found_again(
    private_redis_cluster: LocalRedisCluster
) -> None:
    cluster = private_redis_cluster
    runner = ClusterPipeline(cluster.startup_nodes, timeout_s=0.5,
                             credentials=cluster.credentials())
    key = f"gwtest:{{{uuid.uuid4().hex}}}"
    try:
        assert (await runner.run(ECHO, [key], ["x"]))[2] == 1
        await asyncio.to_thread(cluster.kill_node, cluster.master_for_key(key))
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                reply = await runner.run(ECHO, [key], ["x"])
                break
            except Exception:
                assert asyncio.get_running_loop().time() < deadline, "no failover seen"
                await asyncio.sleep(0.2)
        assert reply[2] >= 1  # the promoted replica answers (the count may lag by one write)
    finally:
        await runner.close()


def slots_of(runner: ClusterPipeline, node: int) -> frozenset[int]:
    return frozenset(slot for slot, owner in enumerate(runner._slots or ())
                     if owner[1] == node)


async def test_a_killed_master_s_slots_are_reported_once_its_replica_took_over(
    private_redis_cluster: LocalRedisCluster,
) -> None:
    """A failover may lose acknowledged writes: the client tells its listeners which slots, by
    itself (the watch on the lost connection), without a call having to fail over there."""
    cluster = private_redis_cluster
    runner = ClusterPipeline(cluster.startup_nodes, timeout_s=0.5,
                             credentials=cluster.credentials())
    events: list[TopologyEvent] = []
    runner.add_topology_listener(events.append)
    try:
        for master in cluster.masters():  # a connection to every primary
            await runner.run(ECHO, [key_on(cluster, master)], ["x"])
        victim = cluster.masters()[0]
        lost = slots_of(runner, victim)
        await asyncio.to_thread(cluster.kill_node, victim)
        await asyncio.to_thread(cluster.wait_healthy, 30)

        async def reported() -> bool:
            return lost <= frozenset().union(*(e.slots for e in events if e.writes_lost))

        await eventually(reported, timeout_s=5)
        assert victim not in {port for _, port in runner.primaries()}
    finally:
        await runner.close()


async def test_a_primary_back_after_losing_its_connection_has_its_slots_reported(
    private_redis_cluster: LocalRedisCluster,
) -> None:
    """Restarted before any failover, it is the same primary, but it may have come back with
    older data (or none): its slots are reported when the client reconnects."""
    cluster = private_redis_cluster
    runner = ClusterPipeline(cluster.startup_nodes, timeout_s=0.5,
                             credentials=cluster.credentials())
    events: list[TopologyEvent] = []
    runner.add_topology_listener(events.append)
    try:
        for master in cluster.masters():
            await runner.run(ECHO, [key_on(cluster, master)], ["x"])
        victim = cluster.masters()[0]
        lost = slots_of(runner, victim)
        await asyncio.to_thread(cluster.kill_node, victim)
        await asyncio.to_thread(cluster.start_node, victim)

        async def reported() -> bool:
            return lost <= frozenset().union(*(e.slots for e in events if e.writes_lost))

        await eventually(reported, timeout_s=10)
        await asyncio.to_thread(cluster.wait_healthy, 30)
    finally:
        await runner.close()


def key_on(cluster: LocalRedisCluster, master: int) -> str:
    while True:
        key = f"gwtest:{{{uuid.uuid4().hex}}}"
        if cluster.master_for_key(key) == master:
            return key
