"""Eight worker processes sharing one quota through a real redis-server, seen by the server.

The rate case runs ``AIOLLM_SHARED_RATE_SECONDS`` seconds (4 by default, to keep the suite
short; ``nox -s shared_rate`` runs the full 20 s version, where no 1-second window may hold
more than 21 requests; the short version allows 23, 10% of scheduling noise).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from quota_server import MODEL, MSGS, QuotaServer, serving
from redis_server import RedisServer, redis_server

from aiollm import Client, Limits

__all__ = ["redis_server"]

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("shared_worker.py")
RATE_SECONDS = float(os.environ.get("AIOLLM_SHARED_RATE_SECONDS", "4"))


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def expect(self, word: str) -> None:
        assert self.process.stdout is not None
        line = await anyio.to_thread.run_sync(self.process.stdout.readline)
        assert line.strip() == word, f"worker said {line!r}, expected {word}"

    def go(self, end_at: float) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"end_at": end_at}) + "\n")
        self.process.stdin.flush()

    async def result(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await anyio.to_thread.run_sync(self.process.stdout.readline)
        await anyio.to_thread.run_sync(self.process.wait)
        return dict(json.loads(line))


@asynccontextmanager
async def workers(n: int, cfg: dict[str, Any]) -> AsyncIterator[list[Worker]]:
    started = [Worker(cfg) for _ in range(n)]
    try:
        for worker in started:
            await worker.expect("READY")
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait()
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None:
                    stream.close()


async def test_eight_workers_share_requests_per_second(redis_server: RedisServer) -> None:
    async with serving(QuotaServer(frames=1)) as server:
        cfg = {"port": server.port, "redis": redis_server.url, "mode": "calls", "tasks": 2}
        cfg["limits"] = {"requests_per_second": 20}
        cfg["warm_up"] = True
        async with workers(8, cfg) as procs:
            server.arrivals.clear()  # the warm-up calls
            end_at = time.monotonic() + RATE_SECONDS
            for worker in procs:
                worker.go(end_at)
            calls = [(await worker.result())["calls"] for worker in procs]
    times = sorted(server.arrivals)
    overall = (len(times) - 1) / (times[-1] - times[0])
    # The rate as the median over every run of 20 gaps: a first or last request the machine
    # delayed does not move it.
    rate = 20 / statistics.median(b - a for a, b in zip(times, times[20:], strict=False))
    most = server.most_in_one_second()
    print(f"\n8 workers, {len(times)} calls over {times[-1] - times[0]:.2f}s: {overall:.2f}/s")
    print(f"median rate over 20 consecutive gaps: {rate:.2f}/s")
    print(f"most in any 1-second window: {most}; calls per worker: {calls}")
    if RATE_SECONDS >= 20:  # the timed session (nox -s shared_rate): the figures the issue asks
        assert sum(calls) == len(times) >= 20 * RATE_SECONDS
        assert abs(rate - 20) <= 1.0  # within 5%
        assert most <= 21
    else:
        # In the suite, beside other jobs: the limit is never exceeded, but arrivals jitter on a
        # busy machine (a late request lands in the next second's window) and slow workers may
        # use less than the quota; the bounds allow for that scheduling noise.
        assert sum(calls) == len(times) >= 0.5 * 20 * RATE_SECONDS
        assert 0.5 * 20 <= rate <= 20 * 1.1
        assert most <= 20 * 1.25
    assert sum(1 for c in calls if c > 0) >= 6  # the quota was shared, not taken by one


async def test_eight_workers_share_max_concurrency(redis_server: RedisServer) -> None:
    async with serving(QuotaServer(frames=3, gap=0.01, tail=0.02)) as server:
        cfg = {"port": server.port, "redis": redis_server.url, "mode": "calls", "tasks": 3}
        cfg["limits"] = {"max_concurrency": 12}
        cfg["warm_up"] = True
        async with workers(8, cfg) as procs:
            server.completed = server.max_open = 0  # after the warm-up calls
            end_at = time.monotonic() + 2.0
            for worker in procs:
                worker.go(end_at)
            calls = [(await worker.result())["calls"] for worker in procs]
    print(f"\nmost open at once: {server.max_open}; calls per worker: {calls}")
    print(f"connections closed before the body ended: {server.dropped}")
    assert server.completed >= sum(calls) >= 24  # (+ a warm-up call ending late)
    assert 6 <= server.max_open <= 12


async def test_a_killed_workers_slots_come_back_within_the_lease_ttl(
    redis_server: RedisServer,
) -> None:
    ttl = 1.5
    limits = Limits(max_concurrency=4, lease_ttl=ttl, shared=redis_server.url)
    server = QuotaServer(frames=2, hold=asyncio.Event())
    async with serving(server):
        cfg = {"port": server.port, "redis": redis_server.url, "mode": "hold", "tasks": 4}
        cfg["limits"] = {"max_concurrency": 4, "lease_ttl": ttl}
        async with workers(1, cfg) as (worker,):
            worker.go(0.0)
            await worker.expect("HELD")
            settings = server.settings()
            async with Client(providers=settings, limits={"openai": limits}) as client:
                keys = client.limiter("openai").shared.keys  # type: ignore[union-attr]
                r = aioredis.Redis.from_url(redis_server.url)
                assert await r.zcard(keys["slots"]) == 4
                worker.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                held, server.hold = server.hold, None
                before = len(server.arrivals)
                with anyio.fail_after(ttl + 5.0):
                    async with anyio.create_task_group() as tg:
                        for _ in range(4):
                            tg.start_soon(client.chat, MODEL, MSGS)
                back = [t - killed for t in server.arrivals[before:]]
                held.set()  # the killed worker's requests end
                await r.aclose()
    print(f"\nslots back {min(back):.2f}-{max(back):.2f}s after SIGKILL (lease_ttl {ttl}s)")
    assert len(back) == 4
    assert min(back) >= 0.5  # held until they expired, not freed by the kill itself
    assert max(back) <= ttl + 3.0
