"""Endless bodies end in a typed error with the client's memory bounded.

A loopback server generates each body lazily (it never holds it): a 100 MB line without a
newline, an endless event, endless JSON and HTML bodies (HTTP 200 and 500), and a gzip bomb
(a few MB on the wire that inflate to gigabytes). The client must stop each with a typed
error while its peak traced memory stays under :data:`PEAK_BOUND` — a stated bound derived
from the framing limits (16 MiB per line, event or document) plus room for one chunk's copy.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Iterator

import anyio
import pytest
from aiohttp import web
from hostile import MESSAGES, MODELS, serve, settings

import aiollm
from aiollm.errors import AiollmError

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
PEAK_BOUND = 48 * MiB
"""The client's peak traced memory over one hostile call (framing bounds: 16 MiB)."""
GIVE_UP = 100 * MiB
"""The server stops after this many bytes (a client that never gave up fails the test)."""
CHUNK = 64 * 1024


def gzip_bomb() -> Iterator[bytes]:
    """Gzip of endless zero bytes: about 1 KB on the wire for every MiB inflated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MiB
    yield compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    while True:
        yield block * 16


def endless(kind: str) -> Iterator[bytes]:
    if kind == "line":
        yield b"data: "
        while True:
            yield b"a" * CHUNK
    elif kind == "event":
        line = b"data: " + b"x" * 1000 + b"\n"
        while True:
            yield line * (CHUNK // len(line))
    elif kind.startswith("json"):
        yield b'{"error": {"message": "'
        while True:
            yield b"x" * CHUNK
    elif kind.startswith("html"):
        while True:
            yield b"<p>x</p>" * (CHUNK // 8)
    else:
        yield from gzip_bomb()


CASES = {
    "line": (200, "text/event-stream"),
    "event": (200, "text/event-stream"),
    "json": (200, "application/json"),
    "json 500": (500, "application/json"),
    "html": (200, "text/html"),
    "html 500": (500, "text/html"),
    "gzip bomb": (200, "text/event-stream"),
}


@pytest.mark.parametrize("provider", ["openai", "dashscope", "qianfan"])
@pytest.mark.parametrize("kind", list(CASES))
async def test_an_endless_body_ends_in_a_typed_error_within_bounded_memory(
    kind: str, provider: str
) -> None:
    status, content_type = CASES[kind]
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        headers = {"Content-Type": content_type}
        if kind == "gzip bomb":
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        for piece in endless(kind):
            if sent > GIVE_UP:
                break
            await resp.write(piece)
            sent += len(piece)
        return resp

    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, max_retries=0) as client:
            tracemalloc.start()
            try:
                with anyio.fail_after(120), pytest.raises(AiollmError) as info:
                    await client.chat(MODELS[provider], MESSAGES)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert isinstance(info.value, aiollm.ProtocolError | aiollm.APIError), info.value
    assert peak < PEAK_BOUND, f"peak {peak / MiB:.1f} MiB"
    assert sent < GIVE_UP
