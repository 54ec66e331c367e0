"""No AK, SK or access token in any message, repr, traceback or log line."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from aiollm import AiollmError, Client, RetryPolicy, StreamInterrupted, TransportError
from aiollm.testing import Emulator, Fault
from aiollm.testing.qianfan import QianfanFault, expire_tokens

MODEL = "qianfan/llama_2_7b"
HI = [{"role": "user", "content": "hi"}]
TOKEN = "24.f00dfeedcafe0123456789.2592000.1700000000.282335-99999999"
AK, SK = "redact-ak-0123456789", "redact-sk-9876543210"

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head


async def bad_status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer with a broken status line: aiohttp's error then carries the whole URL."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    writer.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close the connection as soon as the request arrived."""
    await read_request(reader)
    writer.close()


async def cut_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Promise a body, send part of it, then reset."""
    await read_request(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1000\r\n\r\n"
        b'data: {"sentence_id":0,"is_end":false,"result":"partial"}\n\n'
    )
    await writer.drain()
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_clean(exc: BaseException, caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc)), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    if isinstance(exc, StreamInterrupted):
        texts += [str(exc.error), repr(exc.error), repr(exc.partial)]
    for secret in secrets:
        for text in texts:
            assert secret not in text


def client_for(settings: dict[str, str]) -> Client:
    return Client(
        providers={"qianfan": settings}, env={}, retry=RetryPolicy(max_retries=1, backoff_base=0.01)
    )


@pytest.mark.parametrize("handler", [bad_status_line, hang_up])
async def test_chat_transport_errors_hide_the_token(
    raw_server: Callable[[Handler], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
    handler: Handler,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = await raw_server(handler)
    async with client_for({"access_token": TOKEN, "base_url": url}) as c:
        with pytest.raises(AiollmError) as info:
            await c.chat(MODEL, HI)
        with pytest.raises(AiollmError) as streamed:
            async with c.stream(MODEL, HI) as s:
                await s.final()
    assert isinstance(info.value, TransportError)
    assert_clean(info.value, caplog, TOKEN)
    assert_clean(streamed.value, caplog, TOKEN)


async def test_broken_status_line_message_is_masked_not_dropped(
    raw_server: Callable[[Handler], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url = await raw_server(bad_status_line)
    async with client_for({"access_token": TOKEN, "base_url": url}) as c:
        with pytest.raises(TransportError) as info:
            await c.chat(MODEL, HI)
    # aiohttp's message names the URL; it survives with the token masked.
    assert "access_token=***" in str(info.value)
    assert_clean(info.value, caplog, TOKEN)


async def test_body_cut_after_text_hides_the_token(
    raw_server: Callable[[Handler], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = await raw_server(cut_body)
    async with client_for({"access_token": TOKEN, "base_url": url}) as c:
        with pytest.raises(StreamInterrupted) as info:
            async with c.stream(MODEL, HI) as s:
                await s.final()
    assert info.value.partial.text == "partial"
    assert_clean(info.value, caplog, TOKEN)


async def test_closed_port_hides_token_and_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = closed_port_url()
    async with client_for({"access_token": TOKEN, "base_url": url}) as c:
        with pytest.raises(TransportError) as info:
            await c.chat(MODEL, HI)
    assert "cannot connect" in str(info.value)
    assert_clean(info.value, caplog, TOKEN)
    async with client_for({"ak": AK, "sk": SK, "base_url": url}) as c:
        with pytest.raises(TransportError) as info:
            await c.chat(MODEL, HI)
    assert_clean(info.value, caplog, AK, SK)


@pytest.mark.parametrize("handler", [bad_status_line, hang_up])
async def test_token_request_errors_hide_the_keys(
    raw_server: Callable[[Handler], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
    handler: Handler,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = await raw_server(handler)
    async with client_for({"ak": AK, "sk": SK, "base_url": url}) as c:
        with pytest.raises(TransportError) as info:
            await c.chat(MODEL, HI)
        assert AK not in repr(c.auth("qianfan"))
    assert_clean(info.value, caplog, AK, SK)


async def test_whole_sessions_log_no_secrets(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with emu.client(retry=RetryPolicy(backoff_base=0.01)) as c:
        await c.chat(MODEL, HI)
        expire_tokens(emu)
        async with c.stream(MODEL, HI) as s:
            await s.final()
        emu.script(
            "qianfan", QianfanFault("error", code=110, body="line"), Fault("reset", after_tokens=2)
        )
        with pytest.raises(StreamInterrupted) as info:
            async with c.stream(MODEL, HI) as s:
                await s.final()
        assert "qianfan" in repr(c) and "qianfan" in repr(s)
        secrets = [emu.qianfan_ak, emu.qianfan_sk, *emu.state.qianfan.tokens]
        for obj in (c, s, c.auth("qianfan"), info.value):
            for secret in secrets:
                assert secret not in repr(obj)
    assert len(secrets) == 5  # ak, sk and three tokens
    assert_clean(info.value, caplog, *secrets)
