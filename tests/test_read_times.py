"""When bytes arrived: the kernel's receive time of each socket read, and the read clock's rules.

No wall-clock bound tighter than tens of ms: the event loop is blocked for a known 200 ms while
bytes wait in the kernel, and the read time must fall before that block ends.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from aiollm import Client, TextDelta
from aiollm._kernel_clock import arrival, install
from aiollm._response import _ReadClock

linux = pytest.mark.skipif(sys.platform != "linux", reason="kernel receive times: Linux only")
run_async = pytest.mark.anyio
BLOCK = 0.2


def _timespec(at: float) -> bytes:
    return struct.pack("@qq", int(at), int((at % 1) * 1e9))


def test_arrival_reads_the_kernel_time_on_the_perf_counter_scale() -> None:
    at = arrival([(socket.SOL_SOCKET, 35, _timespec(time.time() - 0.5))])
    assert at is not None
    assert 0.4 < time.perf_counter() - at < 0.6 + 0.5  # loose: a busy machine may stall here
    assert arrival([]) is None
    assert arrival([(socket.SOL_SOCKET, 35, b"\0" * 4)]) is None  # truncated
    assert arrival([(socket.SOL_SOCKET, 35, _timespec(time.time() + 30))]) is None  # future
    assert arrival([(socket.SOL_SOCKET, 35, _timespec(time.time() - 3600))]) is None  # stale


def test_install_declines_what_it_cannot_read() -> None:
    assert install(object(), lambda at: None) is False

    class Other:  # a transport whose read callback is not asyncio's plain one
        _sock = _conn_lost = _protocol = _fatal_error = _read_ready__on_eof = max_size = None
        _read_ready_cb = print

        def _read_ready__data_received(self) -> None: ...

    assert install(Other(), lambda at: None) is False


def test_read_clock_stamps_bytes_only() -> None:
    seen: list[bytes] = []
    clock = _ReadClock(seen.append)
    clock(b"abc")
    first = clock.at
    assert first > 0
    clock(b"")  # aiohttp resuming its parser: no bytes came off the socket
    assert clock.at == first
    clock.note(first - 1.0)  # the kernel's time of the next read
    clock(b"d")
    assert clock.at == first - 1.0
    clock(b"e")  # a note is used once
    assert clock.at > first
    assert seen == [b"abc", b"", b"d", b"e"]


class _Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self.noted: list[float] = []
        self.chunks: list[tuple[bytes, float | None, float]] = []
        self.pending: float | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def note(self, at: float) -> None:
        self.pending = at

    def data_received(self, data: bytes) -> None:
        self.chunks.append((data, self.pending, time.perf_counter()))
        self.pending = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


@contextmanager
def _kernel_stamping() -> Iterator[None]:
    """Receive timestamps switched on in the kernel, for as long as the block runs.

    The first socket that asks switches Linux's stamping on in a deferred work item (and the
    last one to close switches it off): packets received in between carry no time, and the
    reader falls back to the loop's. A socket kept open here, once its own probes come back
    stamped, keeps it on for the test.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    try:
        a.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
        for _ in range(200):
            b.sendall(b"x")
            _data, ancdata, _flags, _addr = a.recvmsg(16, socket.CMSG_SPACE(16))
            if ancdata:
                break
            time.sleep(0.01)
        yield
    finally:
        a.close()
        b.close()


@linux
@run_async
async def test_reads_carry_when_the_bytes_arrived_not_when_the_loop_ran() -> None:
    with _kernel_stamping():
        await _reads_carry_when_the_bytes_arrived()


async def _reads_carry_when_the_bytes_arrived() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    loop = asyncio.get_running_loop()
    receiver = _Receiver()
    transport, _ = await loop.create_connection(lambda: receiver, sock=a)
    assert install(transport, receiver.note) is True
    payload = b""
    for i in range(3):
        sent = time.perf_counter()
        b.sendall(b"chunk %d;" % i)
        payload += b"chunk %d;" % i
        time.sleep(BLOCK)  # the event loop is blocked: the bytes wait in the kernel
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(receiver.chunks) > i:
                break
        _data, at, handled = receiver.chunks[i]
        assert at is not None
        assert sent - 0.01 <= at <= handled
        assert handled - at >= BLOCK / 2  # stamped on arrival, long before the loop read it
    b.close()  # the end of the stream still closes the connection
    await asyncio.wait_for(receiver.closed, 5)
    assert b"".join(c[0] for c in receiver.chunks) == payload


def _stream_server(listener: socket.socket, sent: list[float]) -> None:
    """One streamed reply, its second frame sent while the client's loop is blocked."""
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])  # fmt: skip
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        frame = b'data: {"choices":[{"index":0,"delta":{"content":"t"},"finish_reason":null}]}\n\n'
        for delay in (0.0, BLOCK / 4):
            time.sleep(delay)
            sent.append(time.perf_counter())
            conn.sendall(frame)
        time.sleep(BLOCK)
        conn.sendall(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
        conn.sendall(b"data: [DONE]\n\n")


@linux
@run_async
async def test_stream_read_at_is_the_arrival_of_its_bytes() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[float] = []
    thread = threading.Thread(target=_stream_server, args=(listener, sent), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stamps: list[tuple[float | None, float]] = []
    settings = {"openai": {"base_url": url, "api_key": "k"}}
    with _kernel_stamping():
        await _read_at_of(settings, stamps)
    thread.join(5)
    listener.close()
    assert len(stamps) == 2 and len(sent) == 2
    for (at, delivered), server_sent in zip(stamps, sent, strict=True):
        assert at is not None
        assert server_sent - 0.01 <= at <= delivered
    at, delivered = stamps[1]
    assert at is not None and delivered - at >= BLOCK / 2


async def _read_at_of(settings: Any, stamps: list[tuple[float | None, float]]) -> None:
    async with Client(providers=settings, env={}, read_times=True) as client:
        async with client.stream("openai/m", [{"role": "user", "content": "hi"}]) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    stamps.append((stream.read_at, time.perf_counter()))
                    if len(stamps) == 1:
                        time.sleep(BLOCK)  # the second frame arrives meanwhile


@run_async
async def test_reads_are_not_stamped_unless_asked() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_stream_server, args=(listener, []), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    seen: list[float | None] = []
    async with Client(providers={"openai": {"base_url": url, "api_key": "k"}}, env={}) as client:
        async with client.stream("openai/m", [{"role": "user", "content": "hi"}]) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    seen.append(stream.read_at)
    thread.join(5)
    listener.close()
    assert seen == [None, None]  # no clock on the connection: nothing to pay per read
