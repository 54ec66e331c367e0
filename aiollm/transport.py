"""The aiohttp side: one session, connector limits, four timeouts, bodies as chunks.

Timeouts (:class:`Timeout`) bound each way a call can wait: on the connection, on bytes, on
events (what a caller receives: a keep-alive comment or an empty frame is not one), and on the
whole call. A timeout before the first event is retried like any failure before delivery;
after it, the stream ends with :class:`~aiollm.StreamInterrupted`. Every aiohttp exception is wrapped in a
typed :class:`~aiollm.TransportError` whose message has secrets masked (aiohttp's own messages
carry the URL, and access tokens travel in query strings).
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from . import _kernel_clock
from ._redact import redact_text
from .errors import ProtocolError, TimeoutError, TransportError
from .request import HTTPRequest

__all__ = ["Response", "Timeout", "Transport"]

log = logging.getLogger("aiollm.transport")

MAX_ERROR_BODY = 1024 * 1024

MAX_SECRETS = 64
"""How many distinct secrets a transport remembers having sent (rotated tokens age out)."""

FINISH_GRACE = 1.0
"""Seconds a finished response may take to end its body before its connection is closed."""

_Lingering = tuple[asyncio.TimerHandle, Callable[[], None] | None]
"""A finished response's grace timer and what to call when its exchange is over."""


class _ImportedOnUse:
    """A module imported on its first attribute access: ``import aiollm`` does not pay for
    aiohttp (about half of its import time, most of it aiohttp building SSL contexts)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        globals()[self._name] = module  # later lookups find the module itself
        return getattr(module, attr)


if sys.version_info >= (3, 11):
    # aiohttp runs on asyncio only; its native timeout costs a fifth of a cancel scope.
    from asyncio import timeout as _within
else:  # pragma: no cover - Python 3.10

    @asynccontextmanager
    async def _within(delay: float) -> AsyncIterator[None]:
        with anyio.fail_after(delay):
            yield


_now = time.monotonic
"""The clock of every deadline here (asyncio's own clock; only differences are used)."""

_connect_timeouts: dict[float | None, aiohttp.ClientTimeout] = {}


def _connect_timeout(connect: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for a ``connect`` limit (built once per value)."""
    found = _connect_timeouts.get(connect)
    if found is None:
        found = _connect_timeouts[connect] = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, connect=connect
        )
    return found


if TYPE_CHECKING:
    import ssl

    import aiohttp
else:
    aiohttp = _ImportedOnUse("aiohttp")


@dataclass(frozen=True)
class Timeout:
    """Timeouts in seconds (None = no limit).

    - ``connect``: opening a connection.
    - ``first_byte``: from sending the request to the first body byte (headers included).
    - ``first_event``: from sending the request to the first event (text, reasoning, a tool
      call, usage, the finish: anything but the response's own facts). A role-only first
      chunk, keep-alive comments and empty frames do not count.
    - ``idle``: the longest gap between two events. A server that sends only keep-alive
      comments cannot hold a stream open past it.
    - ``read``: the longest silence at the byte level (no byte at all), after the first byte.
    - ``total``: the whole call, every attempt and every wait between them (backoff, rate
      limit cool-down) included. Off by default, so a long stream that keeps producing is
      never killed.
    """

    connect: float | None = 10.0
    first_byte: float | None = 120.0
    idle: float | None = 60.0
    total: float | None = None
    first_event: float | None = 120.0
    read: float | None = 60.0

    def merged(self, other: Timeout | float | None) -> Timeout:
        """This timeout overridden by a per-call one (a number sets ``total``)."""
        if other is None:
            return self
        if isinstance(other, Timeout):
            return other
        return replace(self, total=float(other))

    def within(self, remaining: float) -> Timeout:
        """This timeout for an attempt with ``remaining`` seconds of the call's ``total`` left."""
        if remaining == math.inf:
            return self
        return replace(self, total=max(0.0, remaining))


class _ReadClock:
    """Installed as a connection's ``data_received``: notes when bytes came off the socket.

    The kernel's receive time of the read when the socket gives it (:mod:`._kernel_clock`),
    else the time the event loop handed the bytes over.
    """

    __slots__ = ("arrived", "at", "inner")

    def __init__(self, inner: Callable[[bytes], None]) -> None:
        self.inner = inner
        self.at = 0.0
        self.arrived = 0.0

    def note(self, arrived: float) -> None:
        """The kernel's receive time of the bytes about to be handed over."""
        self.arrived = arrived

    def __call__(self, data: bytes) -> None:
        if data:  # aiohttp calls it with b"" itself to resume parsing: no bytes arrived then
            arrived, self.arrived = self.arrived, 0.0
            self.at = arrived or time.perf_counter()
        self.inner(data)


def _read_clock(resp: aiohttp.ClientResponse) -> _ReadClock | None:
    """The read clock of ``resp``'s connection (installed once per connection)."""
    conn = resp.connection
    proto = conn.protocol if conn is not None else None
    if proto is None or not hasattr(proto, "__dict__"):
        return None
    clock = proto.__dict__.get("data_received")
    if not isinstance(clock, _ReadClock):
        clock = _ReadClock(proto.data_received)
        proto.data_received = clock  # type: ignore[method-assign]
        _kernel_clock.install(proto.transport, clock.note)
    return clock


class Response:
    """A response whose body is read as raw chunks under the idle and total timeouts.

    ``read_at``: when the bytes of the last chunk returned were read from the socket
    (``time.perf_counter``), before any decoding or waiting for the reader's task to run.
    """

    __slots__ = (
        "_clock",
        "_eof",
        "_event_deadline",
        "_event_phase",
        "_first_deadline",
        "_got_first",
        "_lingering",
        "_resp",
        "_secrets",
        "_timeout",
        "_total_deadline",
        "content_type",
        "headers",
        "provider",
        "read_at",
        "status",
    )

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        *,
        timeout: Timeout,
        total_deadline: float,
        first_deadline: float,
        secrets: tuple[str, ...],
        provider: str | None,
        lingering: dict[Any, _Lingering] | None = None,
        first_event_deadline: float = math.inf,
    ) -> None:
        self._resp = resp
        self._event_deadline = first_event_deadline
        self._event_phase = "first_event"
        self._lingering: dict[Any, _Lingering] = {} if lingering is None else lingering
        self._timeout = timeout
        self._total_deadline = total_deadline
        self._first_deadline = first_deadline
        self._got_first = False
        self._secrets = secrets
        self._eof = False
        self._clock = _read_clock(resp)
        self.read_at = 0.0
        self.provider = provider
        self.status: int = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.content_type: str = resp.headers.get("Content-Type", "")

    @property
    def url(self) -> str:
        """The request URL with secrets masked (built when asked for: it is not cheap)."""
        return redact_text(str(self._resp.url), self._secrets)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"

    def event_arrived(self) -> None:
        """An event reached the caller: the next one is due within the ``idle`` timeout."""
        idle = self._timeout.idle
        self._event_deadline = _now() + idle if idle is not None else math.inf
        self._event_phase = "idle"

    async def next_chunk(self) -> bytes:
        """The next body chunk as it arrives (any size); ``b""`` at the end of the body.

        Raises :class:`~aiollm.TimeoutError` when the next byte, the next event or the end
        of the call is overdue, even while bytes that carry no event keep arriving.
        """
        if self._eof:
            return b""
        now = _now()
        if self._got_first:
            read = self._timeout.read
            deadline = now + read if read is not None else math.inf
            phase = "read"
        else:
            deadline, phase = self._first_deadline, "first_byte"
        if self._event_deadline < deadline:
            deadline, phase = self._event_deadline, self._event_phase
        if self._total_deadline <= deadline:
            deadline, phase = self._total_deadline, "total"
        if deadline <= now:
            raise self._timeout_error(phase, deadline)
        content = self._resp.content
        try:
            # What has arrived already needs no wait, hence no timer (a cancel scope costs
            # more than a small stream's whole decoding).
            chunk = content.read_nowait()
            if not chunk and not content.at_eof():
                if deadline == math.inf:
                    chunk = await content.readany()
                else:
                    async with _within(deadline - now):
                        chunk = await content.readany()
        except builtins.TimeoutError:
            raise self._timeout_error(phase, deadline) from None
        except aiohttp.ClientError as exc:
            raise wrap_client_error(
                exc, self.provider, self._secrets, response_started=True
            ) from None
        except OSError as exc:
            raise wrap_client_error(
                exc, self.provider, self._secrets, response_started=True
            ) from None
        clock = self._clock
        self.read_at = clock.at if clock is not None and clock.at else time.perf_counter()
        if chunk:
            self._got_first = True
        else:
            self._eof = True
        return chunk

    def _timeout_error(self, phase: str, deadline: float) -> TimeoutError:
        limit = getattr(self._timeout, phase)
        what = {
            "idle": "no event arrived",
            "read": "no data arrived",
            "first_byte": "no response body arrived",
            "first_event": "no event arrived",
            "total": "the request did not finish",
        }[phase]
        return TimeoutError(
            f"{what} within the {phase} timeout of {limit}s; raise "
            f"Timeout({phase}=...) if the model is slow",
            provider=self.provider,
            phase=phase,
            response_started=True,
        )

    async def read(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """Read the rest of the body (at most ``limit`` bytes, else ProtocolError)."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.next_chunk():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"response body exceeds {limit} bytes", provider=self.provider)
            parts.append(chunk)
        return b"".join(parts)

    def finish(self, on_done: Callable[[], None] | None = None) -> None:
        """The decoder saw the end: give the connection back as soon as the body ends.

        Bytes after the terminal frame are dropped. If the body has ended, the connection
        goes back to the pool now; if not, aiohttp puts it back when the end arrives (a
        server usually ends the body right after its last frame, but that end may come in
        a later packet). A server that keeps the body open :data:`FINISH_GRACE` seconds
        longer gets the connection closed. Nothing here waits. ``on_done`` is called once,
        when the exchange is over (the body ended or the connection was closed): the
        concurrency slot is given back then, as the server sees it.
        """
        content = self._resp.content
        if content.is_eof():
            while not content.at_eof():
                content.read_nowait()
            self._eof = True
            self.close()
            if on_done is not None:
                on_done()
            return
        resp = self._resp
        lingering = self._lingering

        def ended() -> None:
            entry = lingering.pop(resp, None)
            if entry is not None:
                entry[0].cancel()
                if entry[1] is not None:
                    entry[1]()

        def late() -> None:
            entry = lingering.pop(resp, None)
            resp.close()
            if entry is not None and entry[1] is not None:
                entry[1]()

        handle = asyncio.get_running_loop().call_later(FINISH_GRACE, late)
        lingering[resp] = (handle, on_done)
        content.on_eof(ended)

    def close(self) -> None:
        """Give the connection back: to the pool when the body was read to the end, else closed."""
        if self._eof:
            self._resp.release()
        else:
            self._resp.close()


def wrap_client_error(
    exc: BaseException,
    provider: str | None,
    secrets: tuple[str, ...],
    *,
    response_started: bool = False,
) -> TransportError:
    """A typed, redacted TransportError for an aiohttp/OS exception."""
    detail = redact_text(f"{type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError):
        return TimeoutError(
            f"connecting timed out ({detail}); check the base URL or raise Timeout(connect=...)",
            provider=provider,
            phase="connect",
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        msg = f"the response body was cut off ({detail})"
    elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientConnectorDNSError):
        msg = f"cannot connect ({detail}); check the base URL and the network"
    elif isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        msg = f"the server closed the connection ({detail})"
    else:
        msg = f"HTTP transport failed ({detail})"
    return TransportError(msg, provider=provider, response_started=response_started)


class Transport:
    """Owns (or borrows) one aiohttp ``ClientSession`` and opens responses on it."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: Timeout | None = None,
        limit: int = 256,
        limit_per_host: int = 0,
        ssl_context: ssl.SSLContext | bool | None = None,
    ) -> None:
        self.timeout = timeout or Timeout()
        self._session = session
        self._own_session = session is None
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._ssl = ssl_context
        self._closed = False
        self._lingering: dict[Any, _Lingering] = {}
        """Finished responses whose body has not ended yet (see :meth:`Response.finish`)."""
        self._sent_secrets: dict[str, None] = {}

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret a request carried (the latest :data:`MAX_SECRETS`), to mask in errors."""
        return tuple(self._sent_secrets)

    def _remember(self, secrets: tuple[str, ...]) -> None:
        known = self._sent_secrets
        for secret in secrets:
            if secret not in known:
                known[secret] = None
                if len(known) > MAX_SECRETS:
                    del known[next(iter(known))]

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running loop."""
        if self._closed:
            raise TransportError("the client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                ssl=self._ssl if self._ssl is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
            )
        return self._session

    async def open(
        self,
        req: HTTPRequest,
        *,
        timeout: Timeout | None = None,
        provider: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send ``req`` and wait for the response headers (under connect/first-byte/total)."""
        t = timeout or self.timeout
        if req.secrets:
            self._remember(req.secrets)
        now = _now()
        total_deadline = now + t.total if t.total is not None else math.inf
        first_deadline = now + t.first_byte if t.first_byte is not None else math.inf
        first_event = now + t.first_event if t.first_event is not None else math.inf
        deadline = min(total_deadline, first_deadline)
        headers = dict(req.headers)
        if extra_headers:
            headers.update(extra_headers)
        kwargs: dict[str, Any] = {
            "params": req.params or None,
            "headers": headers,
            "data": req.body,
            "timeout": _connect_timeout(t.connect),
            "allow_redirects": False,
        }
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", req.method, redact_text(req.url, req.secrets))
        try:
            if deadline == math.inf:
                resp = await self.session.request(req.method, req.url, **kwargs)
            else:
                async with _within(max(0.0, deadline - now)):
                    resp = await self.session.request(req.method, req.url, **kwargs)
        except builtins.TimeoutError:
            phase = "total" if total_deadline <= first_deadline else "first_byte"
            raise TimeoutError(
                f"no response within the {phase} timeout of {getattr(t, phase)}s",
                provider=provider,
                phase=phase,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise wrap_client_error(exc, provider, req.secrets) from None
        return Response(
            resp,
            timeout=t,
            total_deadline=total_deadline,
            first_deadline=first_deadline,
            first_event_deadline=first_event,
            secrets=req.secrets,
            provider=provider,
            lingering=self._lingering,
        )

    async def request_bytes(
        self, req: HTTPRequest, *, timeout: Timeout | None = None, provider: str | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send ``req`` and read the whole (bounded) body: ``(status, headers, body)``."""
        resp = await self.open(req, timeout=timeout, provider=provider)
        try:
            body = await resp.read()
            return resp.status, resp.headers, body
        finally:
            resp.close()

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        self._closed = True
        lingering = list(self._lingering.items())
        self._lingering.clear()
        for resp, (handle, on_done) in lingering:
            handle.cancel()
            resp.close()
            if on_done is not None:
                on_done()
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def __repr__(self) -> str:
        return f"<Transport own_session={self._own_session} closed={self._closed}>"
