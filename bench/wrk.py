"""Closed-loop maxima through the edge with wrk (C, event-driven): a request costs wrk a few tens
of microseconds of CPU where the Python load generator spends ~250 us (aiohttp over TLS), and on
a 2-core machine that difference is CPU the stack does not get. The requests are the same as the
Python generator's (Zipf-chosen bench users, their own tokens and accounts); wrk reports latency
percentiles, a Lua script counts status codes and where each read was served from.

wrk is Debian's `wrk` package (scripts/ensure-system-deps.sh installs it with the bench's
dependencies); without it the maxima fall back to the Python generator, and the report says so.
"""

from __future__ import annotations

import json
import random
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

from bench.drivers import Target
from bench.histogram import LatencyHistogram
from bench.loadgen import PhaseSpec
from bench.model import PhaseResult, SecondBin
from bench.population import BenchUser
from bench.workload import Op, transfer_parties
from bench.zipf import ZipfSampler

_REQUESTS_PER_SCRIPT = 20_000
_QUANTILES = 1000  # wrk's latency distribution, read at every 0.1 %

_SCRIPT = r"""
local requests = {}
local n, posts, prefix = 0, 0, ""
statuses, cache, database = {}, 0, 0

function setup(thread)
  thread:set("id", tostring(#threads_seen + 1))
  threads_seen[#threads_seen + 1] = thread
end
threads_seen = {}

function init(args)
  prefix = args[2] .. "-" .. id
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^(%S+)\t(%S+)\t(%S+)\t?(.*)$")
    requests[#requests + 1] = {method, path, "Bearer " .. token, body}
  end
  n = (tonumber(id) * 7919) % #requests
end

function request()
  n = n % #requests + 1
  local r = requests[n]
  if r[1] == "POST" then
    posts = posts + 1
    return wrk.format("POST", r[2], {["authorization"] = r[3],
      ["content-type"] = "application/json", ["idempotency-key"] = prefix .. "-" .. posts}, r[4])
  end
  return wrk.format("GET", r[2], {["authorization"] = r[3]})
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if body:find("READ_SOURCE_CACHE", 1, true) then cache = cache + 1
  elseif body:find("READ_SOURCE_DATABASE", 1, true) then database = database + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("WRK total %d %d\n", summary.requests, summary.duration))
  io.write(string.format("WRK socket %d %d %d %d\n", summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
  for _, thread in ipairs(threads_seen) do
    io.write(string.format("WRK sources %d %d\n", thread:get("cache"), thread:get("database")))
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("WRK status %d %d\n", status, count))
    end
  end
  for i = 1, 1000 do
    io.write(string.format("WRK q %d\n", latency:percentile(i / 10)))
  end
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def write_requests(path: Path, users: list[BenchUser], op: Op, spec: PhaseSpec) -> None:
    """The request sequence wrk cycles through, drawn as the Python generator draws it."""
    rng = random.Random(spec.seed)
    zipf = ZipfSampler(len(users), spec.zipf_exponent)
    lines = []
    for _ in range(_REQUESTS_PER_SCRIPT):
        if op is Op.TRANSFER:
            who, to = transfer_parties(rng, zipf, spec.hot_share)
        else:
            who, to = zipf.sample(rng), -1
        user = users[who]
        if op is Op.BALANCE:
            lines.append(f"GET\t/v1/accounts/{user.account_id}/balance\t{user.token}")
        elif op is Op.RECENT:
            lines.append(f"GET\t/v1/accounts/{user.account_id}/transactions:recent\t{user.token}")
        elif op is Op.TRANSFER:
            other = users[to]
            body = json.dumps({
                "fromAccountId": user.account_id, "toAccountId": other.account_id,
                "amount": {"minorUnits": str(rng.randint(1, 999)), "currency": "EUR"},
                "description": "bench"}, separators=(",", ":"))
            lines.append(f"POST\t/v1/transfers\t{user.token}\t{body}")
        else:
            raise ValueError(f"wrk drives balance, recent and transfer requests, not {op.value}")
    path.write_text("\n".join(lines) + "\n")


def run_closed_loop(target: Target, spec: PhaseSpec, op: Op, users: list[BenchUser],
                    work_dir: Path) -> PhaseResult:
    """A warm-up run, then the measured one, both with `spec.concurrency` connections."""
    if target.via != "edge" or not target.base_urls:
        raise ValueError("wrk measures the HTTP edge only")
    work_dir.mkdir(parents=True, exist_ok=True)
    script = work_dir / "bench.lua"
    script.write_text(_SCRIPT)
    requests = work_dir / f"requests-{op.value}.tsv"
    write_requests(requests, users, op, spec)
    url = target.base_urls[0]
    tag = f"wrk{int(time.time() * 1000) % 10**9}"
    if spec.warmup_s > 0:
        _run(url, script, requests, spec.concurrency, spec.warmup_s, tag + "w")
    measured_s = spec.duration_s - spec.warmup_s
    started = time.time()
    cpu_before = _children_cpu_s()
    output = _run(url, script, requests, spec.concurrency, measured_s, tag)
    result = parse_output(spec.name, op, output, measured_s, started)
    result.client_cpu_s = _children_cpu_s() - cpu_before
    return result


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(url: str, script: Path, requests: Path, connections: int, seconds: float,
         tag: str) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), url, "--", str(requests), tag]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


_LINE = re.compile(r"^WRK (\w+) (.*)$")


def parse_output(name: str, op: Op, output: str, measured_s: float,
                 started: float) -> PhaseResult:
    """wrk's summary as a PhaseResult: latency from its distribution (1,000 quantiles, each
    standing for the same share of the requests), errors by kind, reads by source."""
    result = PhaseResult(name, measured_s=measured_s, wall_start=started)
    total = cache = database = 0
    quantiles: list[float] = []
    statuses: dict[int, int] = {}
    socket_errors = (0, 0, 0, 0)
    for line in output.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        kind, values = match.group(1), [int(v) for v in match.group(2).split()]
        if kind == "total":
            total = values[0]
        elif kind == "socket":
            socket_errors = (values[0], values[1], values[2], values[3])
        elif kind == "sources":
            cache, database = cache + values[0], database + values[1]
        elif kind == "status":
            statuses[values[0]] = statuses.get(values[0], 0) + values[1]
        elif kind == "q":
            quantiles.append(values[0] / 1e6)
    ok = statuses.get(200, 0)
    for status, count in statuses.items():
        if status != 200:
            result.errors[(op.value, f"http {status}")] = count
    for label, count in zip(("connect", "read", "write", "timeout"), socket_errors, strict=True):
        if count:
            result.errors[(op.value, f"socket {label}")] = count
    if ok and quantiles:
        # wrk's latencies are not split by where a read was served from; the counts are (in
        # the timeline bin below and in the services' metrics).
        result.latency[(op.value, "mixed")] = _from_quantiles(quantiles, ok)
    second = SecondBin(count=ok, errors=total - ok, cache=cache, database=database)
    result.timeline[0] = second
    return result


def _from_quantiles(quantiles: list[float], count: int) -> LatencyHistogram:
    """A histogram of `count` requests spread evenly over wrk's quantiles."""
    out = LatencyHistogram()
    per, extra = divmod(count, len(quantiles))
    for index, value in enumerate(quantiles):
        for _ in range(per + (1 if index < extra else 0)):
            out.record(value)
    return out
