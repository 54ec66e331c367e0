"""No secret the client sent is reachable from any exception it raises, nor in its log lines.

Every provider meets a server that echoes the credentials it received (in JSON and HTML error
bodies, in-stream errors, token endpoint refusals), answers with something that is not HTTP, or
resets the connection. Each exception the client raises is walked — message, ``repr``,
``args``, attributes (recursively), ``__cause__`` / ``__context__`` (suppressed ones too),
``__notes__`` — and must hold none of the secrets of :data:`hostile.SECRETS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import msgspec
import pytest
from aiohttp import web
from hostile import (
    MESSAGES,
    MODELS,
    PROVIDERS,
    SECRETS,
    is_token_request,
    serve,
    serve_raw,
    settings,
    token_answer,
)

import aiollm
from aiollm import RetryPolicy, Timeout

pytestmark = pytest.mark.anyio


def texts(obj: object, seen: set[int] | None = None, depth: int = 0) -> Iterator[str]:
    """Every piece of text reachable from ``obj`` (exceptions, containers, attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 30 or obj is None or isinstance(obj, bool | int | float):
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj
        return
    if isinstance(obj, bytes | bytearray):
        yield bytes(obj).decode("utf-8", "replace")
        return
    with contextlib.suppress(Exception):
        yield repr(obj)
    with contextlib.suppress(Exception):
        yield str(obj)
    children: list[object] = []
    if isinstance(obj, BaseException):
        children += [obj.args, obj.__cause__, obj.__context__]
    if isinstance(obj, dict):
        children += [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children += list(obj)
    if isinstance(obj, msgspec.Struct):
        children += [getattr(obj, f) for f in obj.__struct_fields__]
    with contextlib.suppress(TypeError):
        children += list(vars(obj).values())
    for name in getattr(type(obj), "__slots__", ()):
        with contextlib.suppress(Exception):
            children.append(getattr(obj, name))
    for child in children:
        yield from texts(child, seen, depth + 1)


def leaked(obj: object) -> list[str]:
    """The secrets found anywhere in ``obj``."""
    return sorted({s for text in texts(obj) for s in SECRETS if s in text})


async def echo_of(request: web.Request) -> str:
    """Everything secret the request carried, as a careless server repeats it."""
    body = await request.text()
    return (
        f"invalid credentials {request.headers.get('Authorization', '')} "
        f"{request.query_string} {body}"
    )


def error_document(echo: str, code: int = 401) -> dict[str, Any]:
    """An error body every provider reads as an error, with ``echo`` in each message field."""
    return {
        "code": "InvalidApiKey",
        "message": echo,
        "error_code": 110 if code == 401 else 336100,
        "error_msg": echo,
        "error": {"code": "invalid_api_key", "message": echo, "type": "auth"},
        "msg": echo,
        "request_id": "r1",
    }


def text_frame(provider: str) -> bytes:
    if provider == "dashscope":
        return (
            b'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"text":"hi",'
            b'"finish_reason":"null"},"usage":{"input_tokens":1,"output_tokens":1,'
            b'"total_tokens":2},"request_id":"r1"}\n\n'
        )
    if provider == "qianfan":
        return b'data: {"id":"as-1","sentence_id":0,"is_end":false,"result":"hi"}\n\n'
    return b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


def error_frame(provider: str, echo: str) -> bytes:
    doc = json.dumps(error_document(echo, 500)).encode()
    if provider == "dashscope":
        return b"id:2\nevent:error\n:HTTP_STATUS/500\ndata:" + doc + b"\n\n"
    return b"data: " + doc + b"\n\n"


async def answer(mode: str, provider: str, request: web.Request) -> web.StreamResponse:
    echo = await echo_of(request)
    if mode == "json_401":
        return web.json_response(error_document(echo), status=401)
    if mode == "json_200":
        return web.json_response(error_document(echo, 500))
    if mode == "html_500":
        return web.Response(
            text=f"<html><body>{echo}</body></html>", status=500, content_type="text/html"
        )
    if mode == "text_200":
        return web.Response(text=echo, content_type="text/plain")
    if mode == "deep_500":
        nested = '{"message": "' + echo + '", "x": ' + "[" * 5000 + "]" * 5000 + "}"
        return web.Response(text=nested, status=500, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(text_frame(provider))
    if mode == "stream_error":
        await resp.write(error_frame(provider, echo))
        await resp.write_eof()
    elif mode == "reset":
        assert request.transport is not None
        request.transport.abort()
    return resp


@contextlib.asynccontextmanager
async def garbage_server() -> AsyncIterator[str]:
    """A server that answers every request with something that is not HTTP."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(65536)
            writer.write(b"garbage from a misconfigured proxy\r\n\r\n")
            await writer.drain()
        writer.close()

    async with serve_raw(reply) as origin:
        yield origin


MODES = ["json_401", "json_200", "html_500", "text_200", "deep_500", "stream_error", "reset"]


async def failures(client: aiollm.Client, provider: str) -> list[BaseException]:
    """Run a stream and a chat call; return what they raised."""
    raised: list[BaseException] = []
    for call in ("stream", "chat"):
        try:
            with anyio.fail_after(30):
                if call == "stream":
                    async with client.stream(MODELS[provider], MESSAGES) as stream:
                        async for _ in stream:
                            pass
                else:
                    await client.chat(MODELS[provider], MESSAGES)
        except aiollm.AiollmError as exc:
            raised.append(exc)
    return raised


def check(raised: list[BaseException], caplog: pytest.LogCaptureFixture) -> None:
    assert raised, "the hostile server should make the call fail"
    for exc in raised:
        assert leaked(exc) == [], f"{type(exc).__name__} holds secrets: {exc!r}"
    logged = [record.getMessage() for record in caplog.records]
    assert not [s for s in SECRETS for line in logged if s in line]
    # A record holding an error would keep its traceback, and the response, alive.
    holding = [
        r.msg
        for r in caplog.records
        if isinstance(r.args, tuple) and any(isinstance(a, BaseException) for a in r.args)
    ]
    assert holding == []


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
async def test_no_secret_in_errors_from_a_hostile_server(
    provider: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiollm")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await answer(mode, provider, request)

    retry = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.01)
    async with serve(handler) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, retry=retry) as client:
            raised = await failures(client, provider)
    check(raised, caplog)


@pytest.mark.parametrize("provider", ["qianfan", "gateway"])
@pytest.mark.parametrize("mode", ["json_401", "json_200", "html_500", "deep_500"])
async def test_no_secret_in_errors_from_a_hostile_token_endpoint(
    provider: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiollm")

    async def handler(request: web.Request) -> web.StreamResponse:
        if is_token_request(request):
            return await answer(mode, provider, request)
        return token_answer(request)  # never reached

    retry = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.01)
    async with serve(handler, tokens=False) as origin:
        async with aiollm.Client(providers=settings(origin), env={}, retry=retry) as client:
            raised = await failures(client, provider)
    check(raised, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_secret_behind_an_answer_that_is_not_http(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiollm")
    retry = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.01)
    async with garbage_server() as origin:
        async with aiollm.Client(providers=settings(origin), env={}, retry=retry) as client:
            raised = await failures(client, provider)
    assert all(isinstance(exc, aiollm.TransportError) for exc in raised)
    check(raised, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_secret_in_a_stall_timeout(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiollm")

    async def handler(request: web.Request) -> web.StreamResponse:
        await anyio.sleep(30)
        return web.Response()

    timeout = Timeout(first_byte=0.2)
    async with serve(handler) as origin:
        async with aiollm.Client(
            providers=settings(origin), env={}, timeout=timeout, max_retries=0
        ) as client:
            raised = await failures(client, provider)
    check(raised, caplog)
