"""One response of the transport: its body read as raw chunks under the timeouts, and the
end of its exchange (:meth:`Response.finish` gives the connection back without waiting).
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import _kernel_clock
from ._aiohttp import ImportedOnUse, deadline_clock, within, wrap_client_error
from ._redact import redact_text
from .errors import ProtocolError, TimeoutError

if TYPE_CHECKING:
    import aiohttp
    from multidict import CIMultiDictProxy

    from .transport import Timeout
else:
    aiohttp = ImportedOnUse("aiohttp", globals())

__all__ = ["FINISH_GRACE", "MAX_ERROR_BODY", "Lingering", "Response"]

MAX_ERROR_BODY = 1024 * 1024
"""The most bytes :meth:`Response.read` takes."""

FINISH_GRACE = 1.0
"""Seconds a finished response may take to end its body before its connection is closed."""

Lingering = tuple[asyncio.TimerHandle, Callable[[], None] | None]
"""A finished response's grace timer and what to call when its exchange is over."""


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


def dated(headers: CIMultiDictProxy[str]) -> Mapping[str, str]:
    """``headers`` with a ``Date``: the time they arrived when the server sent none, as RFC
    9110 asks of a recipient with a clock. A ``Retry-After`` date is measured against it, so
    the decoders read no clock (:func:`aiollm._retry_after.parse_retry_after`)."""
    if "Date" in headers:
        return headers
    from multidict import CIMultiDict, CIMultiDictProxy  # aiohttp's own headers type

    stamped = CIMultiDict(headers)
    stamped["Date"] = email.utils.formatdate(usegmt=True)
    return CIMultiDictProxy(stamped)


class Response:
    """A response whose body is read as raw chunks under the idle and total timeouts.

    ``headers`` always hold a ``Date`` (see :func:`dated`).

    ``read_at``: with ``read_times``, when the bytes of the last chunk returned were read from
    the socket (``time.perf_counter``), before any decoding or waiting for the reader's task to
    run; else None (stamping each read costs a little, so only a caller who asks pays).
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
        lingering: dict[Any, Lingering] | None = None,
        first_event_deadline: float = math.inf,
        read_times: bool = False,
    ) -> None:
        self._resp = resp
        self._event_deadline = first_event_deadline
        self._event_phase = "first_event"
        self._lingering: dict[Any, Lingering] = {} if lingering is None else lingering
        self._timeout = timeout
        self._total_deadline = total_deadline
        self._first_deadline = first_deadline
        self._got_first = False
        self._secrets = secrets
        self._eof = False
        self._clock = _read_clock(resp) if read_times else None
        self.read_at: float | None = None
        self.provider = provider
        self.status: int = resp.status
        self.headers: Mapping[str, str] = dated(resp.headers)
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
        self._event_deadline = deadline_clock() + idle if idle is not None else math.inf
        self._event_phase = "idle"

    async def next_chunk(self) -> bytes:
        """The next body chunk as it arrives (any size); ``b""`` at the end of the body.

        Raises :class:`~aiollm.TimeoutError` when the next byte, the next event or the end
        of the call is overdue, even while bytes that carry no event keep arriving.
        """
        if self._eof:
            return b""
        now = deadline_clock()
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
                    async with within(deadline - now):
                        chunk = await content.readany()
        except builtins.TimeoutError:
            raise self._timeout_error(phase, deadline) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise wrap_client_error(
                exc, self.provider, self._secrets, response_started=True
            ) from None
        clock = self._clock
        if clock is not None:
            self.read_at = clock.at or time.perf_counter()
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
