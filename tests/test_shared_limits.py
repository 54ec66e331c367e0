"""Limits shared through a real redis-server by several clients (as separate workers would)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from quota_server import MODEL, MSGS, QuotaServer, serving
from redis.crc import key_slot
from redis_server import RedisServer, redis_server

from aiollm import Client, Limits, SharedLimitsError, fanout
from aiollm.shared_limits import quota_keys

__all__ = ["redis_server"]

pytestmark = pytest.mark.anyio


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.01)


@asynccontextmanager
async def clients(server: QuotaServer, limits: Limits, n: int = 2) -> AsyncIterator[list[Client]]:
    """``n`` clients with the same credentials and limits: ``n`` workers of one service."""
    async with AsyncExitStack() as stack:
        made = [
            await stack.enter_async_context(
                Client(providers=server.settings(), limits={"openai": limits})
            )
            for _ in range(n)
        ]
        yield made


def keys_of(client: Client) -> dict[str, str]:
    shared = client.limiter("openai").shared
    assert shared is not None
    return shared.keys


async def test_concurrency_is_shared_and_released_when_the_exchange_is_over(
    redis_server: RedisServer,
) -> None:
    limits = Limits(max_concurrency=3, shared=redis_server.url)
    async with serving(QuotaServer(frames=3, gap=0.01, tail=0.03)) as server:
        async with clients(server, limits, 3) as workers:
            calls = [lambda c=c: c.chat(MODEL, MSGS) for c in workers for _ in range(5)]
            replies = await fanout.gather(calls)
            keys = keys_of(workers[0])
            r = aioredis.Redis.from_url(redis_server.url)
            await wait_for(lambda: _zcard(r, keys["slots"], 0))
            await r.aclose()
    assert [c.text for c in replies] == ["t0 t1 t2 "] * 15
    assert 2 <= server.max_open <= 3


async def _zcard(r: aioredis.Redis, key: str, expected: int) -> bool:
    """Whether ``expected`` leases are live (expired ones stay until a call purges them)."""
    seconds, micros = await r.time()
    return int(await r.zcount(key, seconds * 1_000_000 + micros, "+inf")) == expected


async def test_rate_is_shared_and_smooth(redis_server: RedisServer) -> None:
    limits = Limits(requests_per_second=10, shared=redis_server.url)
    async with serving(QuotaServer()) as server:
        async with clients(server, limits, 3) as workers:
            await fanout.gather(
                [lambda c=c: c.chat(MODEL, MSGS) for c in workers for _ in range(6)]
            )
    times = sorted(server.arrivals)
    assert len(times) == 18
    assert times[-1] - times[0] >= 1.6  # 17 gaps of 0.1 s, give or take the scheduling
    assert server.most_in_one_second() <= 13  # 10/s, +1 at the edges, +2 for arrival jitter


async def test_keys_carry_a_hash_tag_and_no_credential(redis_server: RedisServer) -> None:
    limits = Limits(max_concurrency=2, tokens_per_minute=10_000, shared=redis_server.url)
    hold = asyncio.Event()
    async with serving(QuotaServer(hold=hold)) as server:
        settings = server.settings()
        settings["openai"]["api_key"] = "sk-topsecret"
        r = aioredis.Redis.from_url(redis_server.url)
        async with Client(providers=settings, limits={"openai": limits}) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.chat, MODEL, MSGS)
                # The slot is taken on acquiring; the worker registry on the first lease
                # renewal, which runs a moment later (its own task).
                await wait_for(lambda: _zcard(r, keys_of(client)["slots"], 1))
                await wait_for(lambda: _zcard(r, keys_of(client)["workers"], 1))
                found = sorted(k.decode() for k in await r.keys("*"))
                hold.set()
        await r.aclose()
        other = Client(providers=server.settings(), limits={"openai": limits})
        assert keys_of(other) != keys_of(client)  # another account, another quota
        await other.aclose()
    names = {k.rsplit(":", 1)[1] for k in found}
    assert {"slots", "tpm"} <= names <= {"slots", "tpm", "workers"}  # workers: after a renewal
    assert all(k.startswith("aiollm:{openai:") and "topsecret" not in k for k in found)
    assert len({key_slot(k.encode()) for k in quota_keys("openai", "abc").values()}) == 1


async def test_a_throttle_seen_by_one_worker_pauses_the_others(redis_server: RedisServer) -> None:
    limits = Limits(shared=redis_server.url)
    async with serving(QuotaServer()) as server:
        server.answers.append((429, {"Retry-After": "0.6"}))
        async with clients(server, limits, 2) as (a, b):
            with pytest.raises(Exception, match="slow down"):
                await a.chat(MODEL, MSGS, max_retries=0)
            await b.chat(MODEL, MSGS)
    first, second = server.arrivals
    assert second - first >= 0.5


async def test_tokens_per_minute_are_reserved_on_shared_state(redis_server: RedisServer) -> None:
    # Each call reserves 106 tokens; the shared budget fits 4 calls, whoever makes them.
    hold = asyncio.Event()
    limits = Limits(tokens_per_minute=4 * 106, shared=redis_server.url)
    async with serving(QuotaServer(hold=hold, usage=10)) as server:
        async with clients(server, limits, 2) as workers:
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(lambda c=workers[i % 2]: c.chat(MODEL, MSGS, max_tokens=100))
                await anyio.sleep(0.5)
                assert len(server.arrivals) == 4
                hold.set()  # settling at 10 tokens each frees the budget for the rest
    assert len(server.arrivals) == 12


async def test_cancelled_calls_leave_no_lease_and_no_broken_connection(
    redis_server: RedisServer,
) -> None:
    # Two pooled connections for everything: a reply left half-read by a cancelled command
    # would surface as a wrong answer on a later command.
    pool = aioredis.BlockingConnectionPool.from_url(redis_server.url, max_connections=2)
    shared = aioredis.Redis(connection_pool=pool)
    limits = Limits(max_concurrency=4, requests_per_second=400, shared=shared, lease_ttl=1.0)
    rng = random.Random(15)
    async with serving(QuotaServer(frames=3, gap=0.002)) as server:
        async with clients(server, limits, 2) as workers:

            async def cancelled(i: int) -> None:
                with anyio.move_on_after(rng.uniform(0, 0.03)):
                    async with workers[i % 2].stream(MODEL, MSGS) as stream:
                        await stream.final()

            for batch in range(10):
                async with anyio.create_task_group() as tg:
                    for i in range(100):
                        tg.start_soon(cancelled, batch * 100 + i)
                for n in range(20):
                    await shared.set(f"probe:{n}", n)
                    assert int(await shared.get(f"probe:{n}")) == n
            keys = keys_of(workers[0])
            # Nothing is left once the pending releases ran (and in any case after the bound).
            await wait_for(lambda: _zcard(shared, keys["slots"], 0), timeout=1.0 + 10.0)
            # The whole quota is usable again: 4 streams open at once.
            hold = server.hold = asyncio.Event()
            before = len(server.arrivals)
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(workers[i % 2].chat, MODEL, MSGS)
                with anyio.fail_after(5):
                    while len(server.arrivals) < before + 4:
                        await anyio.sleep(0.01)
                hold.set()
    assert await shared.ping()
    await shared.aclose()
    await pool.disconnect()


async def test_redis_restart_mid_run_falls_back_then_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiollm.limits")
    limits = Limits(requests_per_second=40, max_concurrency=4, shared=redis_server.url)
    async with serving(QuotaServer(frames=2, gap=0.01)) as server:
        async with clients(server, limits, 2) as workers:
            done = 0

            async def worker(client: Client) -> None:
                nonlocal done
                for _ in range(30):
                    await client.chat(MODEL, MSGS)
                    done += 1

            async with anyio.create_task_group() as tg:
                for c in workers:
                    tg.start_soon(worker, c)
                while done < 10:
                    await anyio.sleep(0.01)
                redis_server.stop()
                stopped_at = done
                while done < stopped_at + 10:  # calls go on under the local share
                    await anyio.sleep(0.01)
                redis_server.start()
            shared = workers[0].limiter("openai").shared
            assert shared is not None
            await workers[0].chat(MODEL, MSGS)
            with anyio.fail_after(10):
                while shared.degraded:  # it tries Redis again by itself
                    await workers[0].chat(MODEL, MSGS)
    assert done == 60
    messages = [r.getMessage() for r in caplog.records]
    assert any("unavailable" in m and "share of the limits" in m for m in messages)
    assert any("are back" in m for m in messages)


async def test_redis_down_with_the_raise_policy_fails_calls_then_recovers(
    redis_server: RedisServer,
) -> None:
    limits = Limits(max_concurrency=2, shared=redis_server.url, on_shared_failure="raise")
    async with serving(QuotaServer()) as server:
        async with clients(server, limits, 1) as (client,):
            await client.chat(MODEL, MSGS)
            redis_server.stop()
            with pytest.raises(SharedLimitsError, match="unavailable"):
                await client.chat(MODEL, MSGS)
            with pytest.raises(SharedLimitsError):  # known down: fails at once
                await client.chat(MODEL, MSGS)
            sent = len(server.arrivals)
            redis_server.start()
            with anyio.fail_after(10):
                while True:
                    try:
                        await client.chat(MODEL, MSGS)
                        break
                    except SharedLimitsError:
                        await anyio.sleep(0.1)
    assert sent == 1 and len(server.arrivals) == 2


async def test_a_stalled_redis_counts_as_down(redis_server: RedisServer) -> None:
    limits = Limits(max_concurrency=2, shared=redis_server.url, shared_timeout=0.2)
    async with serving(QuotaServer()) as server:
        async with clients(server, limits, 1) as (client,):
            await client.chat(MODEL, MSGS)
            redis_server.pause()
            try:
                reply = await client.chat(MODEL, MSGS)  # falls back after 0.2 s
                assert client.limiter("openai").shared.degraded  # type: ignore[union-attr]
            finally:
                redis_server.resume()
    assert reply.text == "t0 t1 t2 "
