"""Server-given delays are bounded, and a call's ``total`` timeout bounds its waits too."""

from __future__ import annotations

import math

import anyio
import pytest
from aiohttp import web
from hostile import MESSAGES, MODELS, PROVIDERS, ok_body, serve, settings

import aiollm
from aiollm import RetryPolicy
from aiollm._retry_after import parse_retry_after
from aiollm.errors import RateLimitError, ServerError, TimeoutError, TransportError
from aiollm.limits import Limits, ProviderLimiter

pytestmark = pytest.mark.anyio

HANG_GUARD = 30.0
"""A bound that only catches hangs (the machine is busy: never a tight wall-clock bound)."""


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": " 3 "}, 3.0),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "inf"}, math.inf),
        ({"Retry-After": "Infinity"}, math.inf),
        ({"Retry-After": "1e400"}, math.inf),
        ({"Retry-After": "9" * 5000}, math.inf),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "Fri, 31 Dec 99999 23:59:59 GMT"}, math.inf),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 25:61:00 GMT"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "Infinity"}, math.inf),
        ({"retry-after-ms": "junk", "Retry-After": "2"}, 2.0),
        ({}, None),
    ],
)
def test_retry_after_never_raises(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_far_date_is_finite_and_large() -> None:
    seconds = parse_retry_after({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})
    assert seconds is not None and 1e10 < seconds < math.inf


def test_policy_does_not_wait_beyond_its_bound() -> None:
    policy = RetryPolicy(max_retries=5, max_retry_after=10.0)
    for retry_after in (math.inf, 1e300, 10.5, math.nan):
        assert policy.delay(RateLimitError("x", retry_after=retry_after), 1, 0.0) is None
    assert policy.delay(RateLimitError("x", retry_after=4.0), 1, 0.0) == 4.0
    # Nor beyond what is left of the call's deadline.
    assert policy.delay(RateLimitError("x", retry_after=4.0), 1, 0.0, remaining=3.0) is None
    assert policy.delay(ServerError("x"), 1, 0.0, remaining=0.0) is None


def test_resets_and_stalls_before_the_first_event_are_retryable() -> None:
    policy = RetryPolicy()
    assert policy.retryable(TransportError("reset", response_started=True))
    assert policy.retryable(TimeoutError("stall", phase="idle", response_started=True))
    assert not policy.retryable(TimeoutError("late", phase="total"))


async def test_cooldown_is_capped_and_bounded_by_the_deadline() -> None:
    limiter = ProviderLimiter("openai", Limits())
    assert limiter.throttled(math.inf, max_cooldown=5.0) == 5.0
    assert limiter.cooling_down
    with pytest.raises(RateLimitError) as info:
        await limiter.acquire(deadline=anyio.current_time() + 1.0)
    assert info.value.retry_after is not None and 1.0 < info.value.retry_after <= 5.0


async def test_huge_usage_is_settled_without_overflow() -> None:
    for reported in (10**400, -5):
        limiter = ProviderLimiter("openai", Limits(tokens_per_minute=1000))
        lease = await limiter.acquire(100)
        lease.settle(reported)
        lease.release()
    assert limiter.tokens_in_window() <= 10_000


def rate_limited(value: str, header: str = "Retry-After") -> web.Response:
    return web.json_response(
        {"error": {"message": "slow down"}}, status=429, headers={header: value}
    )


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("header", "value"),
    [("Retry-After", "inf"), ("Retry-After", "1e400"), ("retry-after-ms", "Infinity")],
)
async def test_an_infinite_retry_after_fails_the_call_and_blocks_nothing(
    provider: str, header: str, value: str
) -> None:
    answers = [rate_limited(value, header)]

    async def handler(request: web.Request) -> web.Response:
        if answers:
            return answers.pop()
        body, content_type = ok_body(provider)
        return web.Response(body=body, content_type=content_type)

    async with serve(handler) as origin:
        retry = RetryPolicy(max_retry_after=0.2)
        async with aiollm.Client(providers=settings(origin), env={}, retry=retry) as client:
            with anyio.fail_after(HANG_GUARD):
                with pytest.raises(RateLimitError) as info:
                    await client.chat(MODELS[provider], MESSAGES)
                assert info.value.retry_after == math.inf
                # The provider's cool-down is bounded: the next call gets through.
                reply = await client.chat(MODELS[provider], MESSAGES)
    assert reply.text == "hello"


async def test_a_retry_after_beyond_the_total_timeout_fails_well_before_it() -> None:
    async def handler(request: web.Request) -> web.Response:
        return rate_limited("6")

    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}) as client:
            start = anyio.current_time()
            with anyio.fail_after(HANG_GUARD), pytest.raises(RateLimitError) as info:
                await client.chat(MODELS["openai"], MESSAGES, timeout=2)
            assert anyio.current_time() - start < 5.0
            assert info.value.retry_after == 6.0
            # A later call with the same budget does not sit out the cool-down either.
            start = anyio.current_time()
            with anyio.fail_after(HANG_GUARD), pytest.raises(RateLimitError):
                await client.chat(MODELS["openai"], MESSAGES, timeout=2)
            assert anyio.current_time() - start < 5.0


async def test_backoff_waits_count_against_the_total_timeout() -> None:
    sent = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal sent
        sent += 1
        return web.json_response({"error": {"message": "busy"}}, status=503)

    retry = RetryPolicy(max_retries=50, backoff_base=1.0, backoff_max=1.0, max_total_delay=1e6)
    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, retry=retry) as client:
            start = anyio.current_time()
            with anyio.fail_after(HANG_GUARD), pytest.raises(ServerError):
                await client.chat(MODELS["openai"], MESSAGES, timeout=2)
            assert anyio.current_time() - start < 6.0
    assert 1 <= sent < 50


@pytest.mark.parametrize("provider", ["openai", "dashscope", "qianfan"])
async def test_a_reset_after_the_head_before_any_event_is_retried(provider: str) -> None:
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        sent += 1
        if sent == 1:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"choices":[{"index":0,"delta":{"cont')
            assert request.transport is not None
            request.transport.abort()
            return resp
        body, content_type = ok_body(provider)
        return web.Response(body=body, content_type=content_type)

    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}) as client:
            with anyio.fail_after(HANG_GUARD):
                reply = await client.chat(MODELS[provider], MESSAGES)
    assert reply.text == "hello"
    assert sent == 2
