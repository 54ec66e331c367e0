"""The aiohttp side: one session, connector limits, the timeouts, sending a request.

Timeouts (:class:`Timeout`) bound each way a call can wait: on the connection, on bytes, on
events (what a caller receives: a keep-alive comment or an empty frame is not one), and on the
whole call. A timeout before the first event is retried like any failure before delivery;
after it, the stream ends with :class:`~aiollm.StreamInterrupted`. Every aiohttp exception is
wrapped in a typed :class:`~aiollm.TransportError` whose message has secrets masked (aiohttp's
own messages carry the URL, and access tokens travel in query strings).

:meth:`Transport.open` returns a :class:`Response` (:mod:`aiollm._response`: the body as
chunks under the timeouts); :mod:`aiollm._aiohttp` imports aiohttp on first use and wraps
its exceptions.
"""

from __future__ import annotations

import builtins
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._aiohttp import ImportedOnUse, deadline_clock, within, wrap_client_error
from ._redact import redact_text
from ._response import Lingering, Response
from .errors import TimeoutError, TransportError
from .request import HTTPRequest

if TYPE_CHECKING:
    import ssl

    import aiohttp
else:
    aiohttp = ImportedOnUse("aiohttp", globals())

__all__ = ["Response", "Timeout", "Transport", "wrap_client_error"]

log = logging.getLogger("aiollm.transport")

MAX_URLS = 256
"""How many request URLs (with their query) a transport keeps parsed."""

MAX_SECRETS = 64
"""How many distinct secrets a transport remembers having sent (rotated tokens age out)."""

_connect_timeouts: dict[float | None, aiohttp.ClientTimeout] = {}


def _connect_timeout(connect: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for a ``connect`` limit (built once per value)."""
    found = _connect_timeouts.get(connect)
    if found is None:
        found = _connect_timeouts[connect] = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, connect=connect
        )
    return found


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


class Transport:
    """Owns (or borrows) one aiohttp ``ClientSession`` and opens responses on it.

    ``read_times``: stamp each socket read with when its bytes arrived (``Response.read_at``).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: Timeout | None = None,
        limit: int = 256,
        limit_per_host: int = 0,
        ssl_context: ssl.SSLContext | bool | None = None,
        read_times: bool = False,
    ) -> None:
        self.timeout = timeout or Timeout()
        self.read_times = read_times
        self._session = session
        self._own_session = session is None
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._ssl = ssl_context
        self._closed = False
        self._lingering: dict[Any, Lingering] = {}
        """Finished responses whose body has not ended yet (see :meth:`Response.finish`)."""
        self._sent_secrets: dict[str, None] = {}
        self._urls: dict[object, Any] = {}
        """Request URLs (with the query of their ``params``) parsed once (:meth:`_url`)."""

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

    def _url(self, req: HTTPRequest) -> Any:
        """``req``'s URL with its ``params`` as aiohttp would build it, parsed once per
        URL and query (a provider sends the same few again and again)."""
        params = req.params
        key: object = (req.url, *params.items()) if params else req.url
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            from yarl import URL  # aiohttp's own URL type, imported with it

            url = URL(req.url).extend_query(params) if params else URL(req.url)
            self._urls[key] = url
        return url

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
        now = deadline_clock()
        total_deadline = now + t.total if t.total is not None else math.inf
        first_deadline = now + t.first_byte if t.first_byte is not None else math.inf
        first_event = now + t.first_event if t.first_event is not None else math.inf
        deadline = min(total_deadline, first_deadline)
        headers = {**req.headers, **extra_headers} if extra_headers else req.headers
        try:
            url = self._url(req)
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket in the base URL
            raise TransportError(
                f"invalid request URL {redact_text(req.url, req.secrets)!r} ({exc}); "
                "check the base URL",
                provider=provider,
            ) from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", req.method, redact_text(req.url, req.secrets))
        sending = self.session.request(  # sent when awaited
            req.method,
            url,
            headers=headers,
            data=req.body,
            timeout=_connect_timeout(t.connect),
            allow_redirects=False,
        )
        try:
            if deadline == math.inf:
                resp = await sending
            else:
                async with within(max(0.0, deadline - now)):
                    resp = await sending
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
            read_times=self.read_times,
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
