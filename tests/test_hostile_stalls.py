"""Stalls: idle counts between events, bytes have their own bound, the first event has one too.

A server that sends only keep-alive comments (or empty frames) cannot hold a stream open past
the ``idle`` timeout; a role-only first chunk does not satisfy ``first_event``; a stall before
the first event is retried, one after it ends the stream with StreamInterrupted and its text.
"""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web
from hostile import MESSAGES, MODELS, serve, settings

import aiollm
from aiollm import RetryPolicy, Timeout
from aiollm.errors import StreamInterrupted, TimeoutError

pytestmark = pytest.mark.anyio

HANG_GUARD = 30.0
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
ROLE_ONLY = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
DONE = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
FILLERS = {"keep-alive comments": b": keep-alive\n\n", "empty frames": b"\n\n"}
RETRY = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.01)


async def sse(
    request: web.Request, *pieces: bytes, filler: bytes | None = None
) -> web.StreamResponse:
    """Write ``pieces``, then ``filler`` every 20 ms until the client leaves (or stall)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for piece in pieces:
        await resp.write(piece)
    while True:
        await anyio.sleep(0.02)
        if filler is not None:
            await resp.write(filler)


async def stream_text(client: aiollm.Client) -> str:
    parts: list[str] = []
    with anyio.fail_after(HANG_GUARD):
        async with client.stream(MODELS["openai"], MESSAGES) as stream:
            async for event in stream:
                if isinstance(event, aiollm.TextDelta):
                    parts.append(event.text)
    return "".join(parts)


@pytest.mark.parametrize("filler", list(FILLERS))
async def test_keepalives_after_an_event_cannot_hold_the_stream_open(filler: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, TEXT, filler=FILLERS[filler])

    timeout = Timeout(idle=0.5)
    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, timeout=timeout) as client:
            with pytest.raises(StreamInterrupted) as info:
                await stream_text(client)
    assert info.value.partial.text == "hi"
    assert isinstance(info.value.error, TimeoutError) and info.value.error.phase == "idle"


@pytest.mark.parametrize("first", [b"", ROLE_ONLY], ids=["nothing", "a role-only chunk"])
@pytest.mark.parametrize("filler", list(FILLERS))
async def test_keepalives_before_the_first_event_are_retried_then_time_out(
    first: bytes, filler: str
) -> None:
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        sent += 1
        return await sse(request, first, filler=FILLERS[filler])

    timeout = Timeout(first_event=0.3)
    async with serve(handler) as origin:
        async with aiollm.Client(
            providers=settings(origin), env={}, timeout=timeout, retry=RETRY
        ) as client:
            with pytest.raises(TimeoutError) as info:
                await stream_text(client)
    assert info.value.phase == "first_event"
    assert sent == 3  # retried: nothing had reached the caller


async def test_a_stall_before_the_first_event_is_retried_and_the_text_is_exact() -> None:
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        sent += 1
        if sent == 1:
            return await sse(request, b": hello\n\n")  # a first byte, then silence
        return await sse(request, TEXT, DONE)

    timeout = Timeout(first_event=0.3)
    async with serve(handler) as origin:
        async with aiollm.Client(
            providers=settings(origin), env={}, timeout=timeout, retry=RETRY
        ) as client:
            assert await stream_text(client) == "hi"
    assert sent == 2


async def test_byte_silence_after_an_event_has_its_own_bound() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse(request, TEXT)

    timeout = Timeout(read=0.3, idle=None)
    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, timeout=timeout) as client:
            with pytest.raises(StreamInterrupted) as info:
                await stream_text(client)
    assert info.value.partial.text == "hi"
    assert isinstance(info.value.error, TimeoutError) and info.value.error.phase == "read"


async def test_a_slow_stream_that_keeps_sending_events_is_not_cut() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(6):
            await resp.write(b": keep-alive\n\n")
            await anyio.sleep(0.1)
            await resp.write(TEXT)
        await resp.write(DONE)
        return resp

    timeout = Timeout(idle=5.0, read=5.0, first_event=5.0)
    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, timeout=timeout) as client:
            assert await stream_text(client) == "hi" * 6
