"""Server-given delays are bounded, and a call's ``total`` timeout bounds its waits too."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from aiohttp import web
from hostile import MESSAGES, MODELS, PROVIDERS, ok_body, serve, serve_raw, settings

import aiollm
from aiollm import RetryPolicy
from aiollm._retry_after import parse_retry_after
from aiollm.errors import RateLimitError, ServerError, TimeoutError, TransportError
from aiollm.limits import Limits, ProviderLimiter

pytestmark = pytest.mark.anyio

HANG_GUARD = 30.0
"""A bound that only catches hangs (the machine is busy: never a tight wall-clock bound)."""

NOW = 1_700_000_000.0
"""A fixed wall clock (Tue, 14 Nov 2023 22:13:20 GMT) for the parser, which reads none."""


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
        ({"Retry-After": "Tue, 14 Nov 2023 22:15:20 GMT"}, 120.0),
        ({"Retry-After": "Wed, 21 Oct 2015 25:61:00 GMT"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "Infinity"}, math.inf),
        ({"retry-after-ms": "junk", "Retry-After": "2"}, 2.0),
        ({}, None),
    ],
)
def test_retry_after_never_raises(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_retry_after_far_date_is_finite_and_large() -> None:
    seconds = parse_retry_after({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, now=NOW)
    assert seconds is not None and 1e10 < seconds < math.inf


def test_a_retry_after_date_is_measured_against_now_else_the_response_date() -> None:
    later = {"Retry-After": "Tue, 14 Nov 2023 22:15:20 GMT"}  # NOW + 120 s
    assert parse_retry_after(later, now=NOW + 20) == 100.0
    # Without ``now``: the response's own Date (the transport stamps one when it has none).
    assert parse_retry_after({**later, "Date": "Tue, 14 Nov 2023 22:14:20 GMT"}) == 60.0
    assert parse_retry_after({**later, "Date": "Tue, 14 Nov 2023 22:14:20 GMT"}, now=NOW) == 120.0
    # Nothing (finite) to measure it against: no delay is known.
    for date in ({}, {"Date": "yesterday"}, {"Date": "Fri, 31 Dec 99999 23:59:59 GMT"}):
        assert parse_retry_after({**later, **date}) is None
    for now in (math.inf, -math.inf, math.nan):
        assert parse_retry_after(later, now=now) is None
    # A number of seconds needs no clock.
    assert parse_retry_after({"Retry-After": "7"}) == 7.0


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


def rate_limited(value: str, header: str = "Retry-After", **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"message": "slow down"}}, status=429, headers={header: value, **headers}
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


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_retry_after_date_is_measured_against_the_response_date(provider: str) -> None:
    # The server's clock says 120 s; the client's own clock plays no part.
    async def handler(request: web.Request) -> web.Response:
        headers = {"Date": email.utils.formatdate(NOW, usegmt=True)}
        return rate_limited(email.utils.formatdate(NOW + 120, usegmt=True), **headers)

    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}) as client:
            with anyio.fail_after(HANG_GUARD), pytest.raises(RateLimitError) as info:
                await client.chat(MODELS[provider], MESSAGES)
    assert info.value.retry_after == 120.0  # over max_retry_after: failed at once


@contextlib.asynccontextmanager
async def undated_server(head: str, body: bytes) -> AsyncIterator[str]:
    """A server whose every answer is ``head`` and ``body``, with no ``Date`` header."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request = await reader.readuntil(b"\r\n\r\n")
            for line in request.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    await reader.readexactly(int(line.split(":", 1)[1]))
            answer = f"{head}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(answer.encode() + body)
            await writer.drain()
        writer.close()

    async with serve_raw(reply) as origin:
        yield origin


async def test_an_answer_without_a_date_is_dated_when_it_arrives() -> None:
    # Retry-After in an hour by the server's clock, and no Date: measured against arrival.
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    head = (
        f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: {later}"
    )
    body = json.dumps({"error": {"message": "slow down"}}).encode()
    async with undated_server(head, body) as origin:
        async with aiollm.Client(providers=settings(origin), env={}) as client:
            with anyio.fail_after(HANG_GUARD), pytest.raises(RateLimitError) as info:
                await client.chat(MODELS["openai"], MESSAGES)
    retry_after = info.value.retry_after
    assert retry_after is not None and 3000 < retry_after <= 3600
