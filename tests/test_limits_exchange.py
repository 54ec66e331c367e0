"""In-process limits as the server sees them: slots held until the exchange is over, tokens
reserved before a call and settled after it, and the quota headers read before a 429."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import anyio
import pytest
from quota_server import MODEL, MSGS, QuotaServer, serving

from aiollm import Client, ConfigurationError, Limits, fanout
from aiollm._ratelimit_headers import parse_reset
from aiollm.limits import MAX_COOL_DOWN, ProviderLimiter
from aiollm.providers import Call

pytestmark = pytest.mark.anyio


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def borrowed(client: Client) -> int:
    slots = client.limiter("openai")._local.slots
    assert slots is not None
    return int(slots.borrowed_tokens)


async def test_slot_is_held_until_the_body_ends_not_until_the_caller_leaves() -> None:
    async with serving(QuotaServer(frames=4, gap=0.005, tail=0.08)) as server:
        limits = {"openai": Limits(max_concurrency=3)}
        async with Client(providers=server.settings(), limits=limits) as client:

            async def consume() -> str:
                async with client.stream(MODEL, MSGS) as stream:
                    return (await stream.final()).text

            texts = await fanout.gather([consume for _ in range(9)])
            await wait_for(lambda: borrowed(client) == 0)
    assert texts == ["t0 t1 t2 t3 "] * 9
    assert server.completed == 9
    assert server.max_open <= 3  # 6 were seen at once when slots went back at the last frame
    assert server.max_open >= 2


async def test_the_caller_does_not_wait_for_the_end_of_the_body() -> None:
    # The body ends 3 s after the last frame: the caller has its completion at once, the
    # slot stays taken until the connection is closed (after the finish grace of 1 s).
    async with serving(QuotaServer(frames=2, tail=3.0)) as server:
        async with Client(
            providers=server.settings(), limits={"openai": Limits(max_concurrency=1)}
        ) as client:
            async with client.stream(MODEL, MSGS) as stream:
                completion = await stream.final()
            assert completion.text == "t0 t1 "
            assert server.open == 1 and borrowed(client) == 1
            await wait_for(lambda: borrowed(client) == 0)
            assert await client.chat(MODEL, MSGS)  # the slot is usable again


async def test_tokens_per_minute_reserve_the_estimate_before_the_call() -> None:
    # Each call reserves max_tokens (100) plus its prompt (6): the budget fits 10 calls.
    estimate = 106
    hold = asyncio.Event()
    async with serving(QuotaServer(hold=hold, usage=20)) as server:
        limits = {"openai": Limits(tokens_per_minute=10 * estimate)}
        async with Client(providers=server.settings(), limits=limits) as client:
            limiter = client.limiter("openai")
            call = Call(
                op="chat", model="m", stream=True, messages=MSGS, params={"max_tokens": 100}
            )
            assert limiter.estimate(call) == estimate

            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(partial(client.chat, MODEL, MSGS, max_tokens=100))
                await wait_for(lambda: len(server.arrivals) >= 10)
                await anyio.sleep(0.3)
                started = len(server.arrivals)
                assert 10 <= started <= 11
                # Settling with the usage reported (20 each) frees room for more calls.
                hold.set()
                await wait_for(lambda: len(server.arrivals) >= started + 10)
                tg.cancel_scope.cancel()
            assert limiter.tokens_in_window() <= 10 * estimate + 1


async def test_a_cancelled_wait_gives_its_token_reservation_back() -> None:
    limiter = ProviderLimiter("openai", Limits(tokens_per_minute=1000))
    first = await limiter.acquire(900)
    with anyio.move_on_after(0.05):
        await limiter.acquire(500)  # does not fit: waits, then is cancelled
    assert 850 < limiter.tokens_in_window() <= 900
    first.settle(100)
    assert limiter.tokens_in_window() <= 100
    first.release()


async def test_remaining_requests_zero_holds_calls_until_the_reset() -> None:
    replies = iter([{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "400ms"}])

    def headers() -> dict[str, str]:
        return next(replies, {})

    async with serving(QuotaServer(headers=headers)) as server:
        async with Client(providers=server.settings()) as client:
            await client.chat(MODEL, MSGS)
            await client.chat(MODEL, MSGS)
    first, second = server.arrivals
    assert second - first >= 0.35


async def test_remaining_tokens_below_the_estimate_holds_the_call() -> None:
    def headers() -> dict[str, str]:
        return {"x-ratelimit-remaining-tokens": "50", "x-ratelimit-reset-tokens": "0.4"}

    async with serving(QuotaServer(headers=headers)) as server:
        async with Client(providers=server.settings()) as client:
            await client.chat(MODEL, MSGS, max_tokens=10)
            await client.chat(MODEL, MSGS, max_tokens=10)  # fits what is left: no wait
            await client.chat(MODEL, MSGS, max_tokens=200)  # does not fit: waits for the reset
    _, b, c = server.arrivals
    assert c - b >= 0.35


async def test_low_remaining_requests_space_the_calls_out() -> None:
    def headers() -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": "100",
            "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "1s",
        }

    async with serving(QuotaServer(headers=headers)) as server:
        async with Client(providers=server.settings()) as client:
            for _ in range(3):
                await client.chat(MODEL, MSGS)
    a, _, c = server.arrivals
    assert c - a >= 0.45  # two left in one second: half a second apart at least


async def test_retry_after_sets_a_bounded_cool_down() -> None:
    limiter = ProviderLimiter("openai", Limits())
    assert limiter.throttled(10_000.0) == MAX_COOL_DOWN
    assert limiter.cooling_down


def test_parse_reset() -> None:
    assert parse_reset("1s") == 1.0
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_reset("0.5") == 0.5
    assert parse_reset(str(1_000_000_000 + 30), wall_now=1_000_000_000) == 30
    for bad in (None, "", "soon", "-1", "1x", "nan"):
        assert parse_reset(bad) is None


def test_limits_from_environment_with_a_shared_store() -> None:
    env = {"AIOLLM_OPENAI_RPS": "5", "AIOLLM_OPENAI_SHARED": "redis://:pw@127.0.0.1:1/0"}
    limits = Limits.from_env("openai", env)
    assert limits is not None
    assert limits.shared == "redis://:pw@127.0.0.1:1/0" and limits.on_shared_failure == "local"
    assert "pw" not in repr(limits)
    env["AIOLLM_OPENAI_ON_SHARED_FAILURE"] = "explode"
    with pytest.raises(ConfigurationError):
        Limits.from_env("openai", env)


def test_a_share_of_the_limits_per_worker() -> None:
    limits = Limits(requests_per_second=20, max_concurrency=12, tokens_per_minute=1000)
    part = limits.share(8)
    assert part.requests_per_second == 2.5 and part.max_concurrency == 1
    assert part.tokens_per_minute == 125 and part.shared is None
