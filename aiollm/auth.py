"""Token sources: a static key, and a cached token that is fetched once and refreshed ahead.

A provider says what its credential is, sans-IO: a key (a string) or a
:class:`~aiollm.request.TokenEndpoint` (how to ask for a token and how to read the answer).
:func:`token_source` turns that into a :class:`TokenSource`, which the stream asks for a
credential before every attempt; the fetching goes through the transport here, never in a
provider module.

:class:`CachedToken` is single flight: any number of concurrent callers that find no valid
token cause exactly one fetch, and all of them get its result (or its error). A token the
service rejected is dropped with :meth:`CachedToken.invalidate`, so the next caller fetches
a fresh one. Subclasses only say how to fetch (see the Qianfan and gateway providers).
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import anyio

from ._redact import Secret
from .errors import AiollmError, ProtocolError
from .request import TokenEndpoint

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["CachedToken", "EndpointToken", "StaticToken", "TokenSource", "token_source"]


class TokenSource(ABC):
    """What the stream asks for a credential before each attempt."""

    refreshable: ClassVar[bool] = False
    """Whether :meth:`invalidate` makes the next :meth:`get` fetch a new credential."""

    @abstractmethod
    async def get(self, transport: Transport) -> str:
        """A valid credential (fetching or refreshing it if needed)."""

    def invalidate(self, token: str) -> None:  # noqa: B027 - optional hook
        """Forget ``token`` after the service rejected it (refreshable sources only)."""


class StaticToken(TokenSource):
    """A fixed API key or ready access token."""

    refreshable: ClassVar[bool] = False

    def __init__(self, token: str) -> None:
        self._token = Secret(token)

    async def get(self, transport: Transport) -> str:
        """The key itself."""
        return self._token.get()

    def __repr__(self) -> str:
        return "StaticToken('***')"


def _own_copy(error: BaseException) -> BaseException:
    """A fresh exception like ``error`` (same type, message and attributes, no traceback)."""
    try:
        twin = copy.copy(error)
    except Exception:
        twin = None
    if type(twin) is not type(error):
        message = str(error)
        provider = getattr(error, "provider", None)
        return AiollmError(f"fetching the token failed: {message}", provider=provider)
    assert twin is not None
    twin.__traceback__ = None
    return twin


class _Flight:
    __slots__ = ("done", "error", "token")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.token: str | None = None
        self.error: BaseException | None = None


class CachedToken(TokenSource):
    """A token fetched on demand, cached, refreshed ahead of expiry, single flight.

    ``refresh_ahead`` is the fraction of a token's lifetime kept in reserve (capped at
    ``max_margin`` seconds): a 30-day token is refreshed 5 minutes before it expires, a
    10-second one after 9 seconds. ``fetches`` counts the fetches made.
    """

    refreshable: ClassVar[bool] = True

    def __init__(
        self,
        *,
        refresh_ahead: float = 0.1,
        max_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh_ahead = refresh_ahead
        self._max_margin = max_margin
        self._clock = clock
        self._token: Secret | None = None
        self._refresh_at = 0.0
        self._flight: _Flight | None = None
        self.fetches = 0

    @abstractmethod
    async def fetch(self, transport: Transport) -> tuple[str, float | None]:
        """Fetch a new token: ``(token, lifetime_seconds or None when unknown)``."""

    def _valid(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token.get()
        return None

    async def get(self, transport: Transport) -> str:
        """A valid token, fetching one (single flight) when none is cached or it is due."""
        cancelled = anyio.get_cancelled_exc_class()
        while True:
            token = self._valid()
            if token is not None:
                return token
            flight = self._flight
            if flight is None:
                return await self._lead(transport)
            await flight.done.wait()
            if flight.token is not None:
                return flight.token
            if flight.error is not None and not isinstance(flight.error, cancelled):
                # Each waiter raises its own exception: raising the shared one would grow its
                # traceback by every waiter's frames (quadratic work to log them all).
                raise _own_copy(flight.error) from flight.error
            # The leader was cancelled: try again (perhaps as the new leader).

    async def _lead(self, transport: Transport) -> str:
        flight = self._flight = _Flight()
        try:
            self.fetches += 1
            token, lifetime = await self.fetch(transport)
            now = self._clock()
            if lifetime is None:
                self._refresh_at = float("inf")
            else:
                margin = min(self._max_margin, max(0.0, lifetime) * self._refresh_ahead)
                self._refresh_at = now + max(0.0, lifetime - margin)
            self._token = Secret(token)
            flight.token = token
            return token
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            self._flight = None
            flight.done.set()

    def invalidate(self, token: str) -> None:
        """Drop ``token`` if it is the cached one (the service rejected it)."""
        if self._token is not None and self._token.get() == token:
            self._token = None

    def __repr__(self) -> str:
        state = "cached" if self._valid() is not None else "empty"
        return f"{type(self).__name__}(<{state}>, fetches={self.fetches})"


class EndpointToken(CachedToken):
    """A token from a provider's :class:`~aiollm.request.TokenEndpoint`, fetched on the transport.

    ``endpoint`` is the sans-IO exchange; ``lifetime`` the lifetime in seconds of the last
    token fetched (None when unknown).
    """

    def __init__(
        self,
        endpoint: TokenEndpoint,
        *,
        provider: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        refresh_ahead: float = 0.1,
        max_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(refresh_ahead=refresh_ahead, max_margin=max_margin, clock=clock)
        self.endpoint = endpoint
        self.provider = provider
        self._wall_clock = wall_clock
        self.lifetime: float | None = None

    async def fetch(self, transport: Transport) -> tuple[str, float | None]:
        """Send the endpoint's request and read its answer."""
        timeout = transport.timeout
        limit = self.endpoint.timeout
        if limit is not None:
            timeout = replace(timeout, first_byte=limit, total=limit)
        status, headers, body = await transport.request_bytes(
            self.endpoint.request(), timeout=timeout, provider=self.provider
        )
        try:
            token, self.lifetime = self.endpoint.parse(
                status, headers, body, now=self._wall_clock()
            )
        except AiollmError:
            raise
        except Exception as exc:  # a parser's contract is typed errors: hold it to it here
            raise ProtocolError(
                f"could not read the token answer ({type(exc).__name__})", provider=self.provider
            ) from exc
        return token, self.lifetime

    def __repr__(self) -> str:
        return f"EndpointToken({self.endpoint!r}, {super().__repr__()})"


def token_source(credential: str | TokenEndpoint, *, provider: str | None = None) -> TokenSource:
    """The token source for a provider's credential: a key as is, an endpoint cached."""
    if isinstance(credential, TokenEndpoint):
        return EndpointToken(credential, provider=provider)
    return StaticToken(credential)
