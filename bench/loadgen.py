"""The load generator: worker processes that each drive a share of one phase, then merge.

Open loop: Poisson arrivals at a target rate; a request's latency counts from the moment it was
scheduled, so a stalled server shows up as latency instead of as fewer requests.
Closed loop: a fixed number of concurrent users, each sending its next request as soon as the
previous one answers; its throughput is the system's maximum at that concurrency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path

from bench.drivers import Request, RequestFailed, Target, driver_for
from bench.model import PhaseResult, SecondBin
from bench.population import BENCH_PASSWORD, BenchUser, load_users
from bench.workload import (
    Op,
    OperationMix,
    poisson_arrivals,
    transfer_parties,
    visit_sequence,
)
from bench.zipf import ZipfSampler

# Open loop: past this many requests in flight per worker, new arrivals are dropped and
# counted (the client must not grow without bound when the server stops answering).
MAX_IN_FLIGHT = 2000
_START_DELAY_S = 0.3


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    mix: OperationMix
    duration_s: float
    warmup_s: float
    zipf_exponent: float
    seed: int
    rate: float = 0.0  # open loop when > 0: requests per second
    concurrency: int = 0  # closed loop when > 0
    # Open loop: arrivals are user visits (a day's requests in a row, think time between them)
    # rather than independent requests.
    visits: bool = False
    think_s: float = 1.0
    # Share of the transfers that touch one account (the hot-account phase); 0: none.
    hot_share: float = 0.0


class _Worker:
    def __init__(self, target: Target, spec: PhaseSpec, users: list[BenchUser], index: int,
                 workers: int) -> None:
        self.spec = spec
        self.users = users
        self.tokens = [u.token for u in users]
        self.driver = driver_for(target)
        self.rng = random.Random(spec.seed * 1000 + index)
        self.zipf = ZipfSampler(len(users), spec.zipf_exponent)
        self.picker = spec.mix.picker()
        self.result = PhaseResult(spec.name)
        self.index = index
        self.workers = workers
        self.t0 = 0.0
        self.in_flight = 0
        self.visits_in_progress = 0

    def _request(self) -> tuple[Request, int]:
        op = self.picker.pick(self.rng)
        if op is Op.TRANSFER:
            who, to = transfer_parties(self.rng, self.zipf, self.spec.hot_share)
            return self._request_for(op, who, to), who
        who = self.zipf.sample(self.rng)
        return self._request_for(op, who), who

    def _request_for(self, op: Op, who: int, to: int | None = None) -> Request:
        user = self.users[who]
        request = Request(op, user.account_id, self.tokens[who])
        if op is Op.TRANSFER:
            other = self.zipf.sample_other(self.rng, who) if to is None else to
            request.to_account_id = self.users[other].account_id
            request.amount_minor = self.rng.randint(1, 999)
        elif op is Op.LOGIN:
            request.email, request.password = user.email, BENCH_PASSWORD
        return request

    async def _one(self, request: Request, who: int, scheduled: float) -> None:
        self.in_flight += 1
        source, failure = "none", None
        try:
            source, new_token = await self.driver.call(request)
            if new_token:
                self.tokens[who] = new_token  # the user goes on with the new session
        except RequestFailed as err:
            failure = err.kind
        except Exception as err:  # a client bug must show in the report, not kill the phase
            failure = f"client {type(err).__name__}"
        finally:
            self.in_flight -= 1
        self._account(request.op.value, source, failure, scheduled, time.perf_counter())

    def _account(self, op: str, source: str, failure: str | None, scheduled: float,
                 finished: float) -> None:
        offset = scheduled - self.t0
        bin_ = self.result.timeline.setdefault(int(offset), SecondBin())
        measured = offset >= self.spec.warmup_s
        if failure is not None:
            bin_.errors += 1
            if measured:
                key = (op, failure)
                self.result.errors[key] = self.result.errors.get(key, 0) + 1
            return
        latency = finished - scheduled
        bin_.count += 1
        bin_.latency.record(latency)
        if source == "cache":
            bin_.cache += 1
        elif source == "database":
            bin_.database += 1
        if measured:
            self.result.record(op, source, latency)

    async def _open_loop(self) -> None:
        rate = self.spec.rate / self.workers
        arrivals = poisson_arrivals(rate, self.spec.duration_s, self.rng)
        tasks: set[asyncio.Task[None]] = set()
        for offset in arrivals:
            delay = self.t0 + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.in_flight >= MAX_IN_FLIGHT:
                self.result.dropped += 1
                continue
            request, who = self._request()
            task = asyncio.create_task(self._one(request, who, self.t0 + offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)

    async def _visit(self, who: int, skip: int, end: float) -> None:
        """One user's visit: its requests one after the other, with think time between them
        (closed within the visit: a person waits for the screen before the next tap)."""
        self.visits_in_progress += 1
        try:
            for op in visit_sequence(self.spec.mix, self.rng)[skip:]:
                started = time.perf_counter()
                if started >= end:
                    return
                await self._one(self._request_for(op, who), who, started)
                think = self.rng.expovariate(1.0 / self.spec.think_s)
                if time.perf_counter() + think >= end:
                    return  # the phase ends before this user's next tap
                await asyncio.sleep(think)
        finally:
            self.visits_in_progress -= 1

    async def _open_loop_visits(self) -> None:
        """Poisson arrivals of visits at rate / (requests per visit), so that requests arrive at
        the target rate; the run starts in the steady state, with visits already under way."""
        per_visit = len(visit_sequence(self.spec.mix, random.Random(0)))
        visit_rate = self.spec.rate / per_visit / self.workers
        end = self.t0 + self.spec.duration_s
        tasks: set[asyncio.Task[None]] = set()

        def spawn(skip: int) -> None:
            if self.visits_in_progress >= MAX_IN_FLIGHT:
                self.result.dropped += 1
                return
            task = asyncio.create_task(self._visit(self.zipf.sample(self.rng), skip, end))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        # Little's law: visits in progress = arrival rate x visit length (one think time and a
        # request per step); each joins at a random step of its visit.
        for _ in range(round(visit_rate * per_visit * self.spec.think_s)):
            spawn(self.rng.randrange(per_visit))
        for offset in poisson_arrivals(visit_rate, self.spec.duration_s, self.rng):
            delay = self.t0 + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            spawn(0)
        if tasks:
            await asyncio.wait(tasks)

    async def _closed_loop(self) -> None:
        share = self.spec.concurrency // self.workers
        share += 1 if self.index < self.spec.concurrency % self.workers else 0
        end = self.t0 + self.spec.duration_s

        async def user_loop() -> None:
            while True:
                started = time.perf_counter()
                if started >= end:
                    return
                request, who = self._request()
                await self._one(request, who, started)

        await asyncio.gather(*(user_loop() for _ in range(share)))

    async def run(self, start_wall: float) -> PhaseResult:
        connections = max(self.spec.concurrency, 64)
        await self.driver.open(connections)
        try:
            await asyncio.sleep(max(0.0, start_wall - time.time()))
            cpu0 = time.process_time()
            self.t0 = time.perf_counter()
            if self.spec.rate > 0 and self.spec.visits:
                await self._open_loop_visits()
            elif self.spec.rate > 0:
                await self._open_loop()
            else:
                await self._closed_loop()
            self.result.client_cpu_s = time.process_time() - cpu0
        finally:
            await self.driver.close()
        self.result.measured_s = max(0.0, self.spec.duration_s - self.spec.warmup_s)
        self.result.wall_start = start_wall
        return self.result


_users_cache: dict[str, list[BenchUser]] = {}


def _worker_main(target: Target, spec: PhaseSpec, users_path: str, index: int, workers: int,
                 start_wall: float) -> PhaseResult:
    import uvloop

    if users_path not in _users_cache:
        _users_cache.clear()
        _users_cache[users_path] = load_users(Path(users_path))
    worker = _Worker(target, spec, _users_cache[users_path], index, workers)
    return uvloop.run(worker.run(start_wall))


def _warm_up_worker() -> None:
    """Import everything a phase needs, so that the first phase starts on time."""
    import aiohttp  # noqa: F401
    import uvloop  # noqa: F401


@dataclass
class PendingPhase:
    spec: PhaseSpec
    start_wall: float
    _parts: AsyncResult[list[PhaseResult]]

    def wait(self) -> PhaseResult:
        merged = PhaseResult(self.spec.name)
        for part in self._parts.get(timeout=self.spec.duration_s + 120):
            merged.merge(part)
        return merged


class LoadGenerator:
    """A pool of worker processes, spawned once (fresh interpreters: no inherited event loop or
    sockets) and reused by every phase of a run."""

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(self.processes)
        # Imports happen while the caller starts the stack; the first phase waits for them.
        self._ready = self._pool.starmap_async(_warm_up_worker,
                                               [() for _ in range(self.processes)])

    def start_phase(self, target: Target, spec: PhaseSpec, users_path: Path,
                    workers: int) -> PendingPhase:
        """Start a phase in the background: the caller snapshots the servers while it runs."""
        self._ready.wait()
        workers = max(1, min(workers, self.processes))
        start_wall = time.time() + _START_DELAY_S
        pending = self._pool.starmap_async(
            _worker_main,
            [(target, spec, str(users_path), i, workers, start_wall) for i in range(workers)],
        )
        return PendingPhase(spec, start_wall, pending)

    def run_phase(self, target: Target, spec: PhaseSpec, users_path: Path,
                  workers: int) -> PhaseResult:
        return self.start_phase(target, spec, users_path, workers).wait()

    def close(self) -> None:
        """End the workers (idle between phases; after an error, possibly stuck in one)."""
        self._pool.terminate()
        self._pool.join()
