"""What the transport needs of aiohttp: the module imported on first use, asyncio's own
deadlines, and aiohttp's exceptions as typed, redacted :class:`~aiollm.TransportError` s."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from ._redact import redact_text
from .errors import TimeoutError, TransportError

__all__ = ["ImportedOnUse", "deadline_clock", "within", "wrap_client_error"]


class ImportedOnUse:
    """A module imported on its first attribute access: ``import aiollm`` does not pay for
    aiohttp (about half of its import time, most of it aiohttp building SSL contexts).

    The module then replaces this stand-in in ``namespace`` (the importing module's
    globals), so that later lookups find the module itself.
    """

    def __init__(self, name: str, namespace: dict[str, Any]) -> None:
        self._name = name
        self._namespace = namespace

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        self._namespace[self._name] = module
        return getattr(module, attr)


if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = ImportedOnUse("aiohttp", globals())


if sys.version_info >= (3, 11):
    # aiohttp runs on asyncio only; its native timeout costs a fifth of a cancel scope.
    from asyncio import timeout as within
else:  # pragma: no cover - Python 3.10

    @asynccontextmanager
    async def within(delay: float) -> AsyncIterator[None]:
        with anyio.fail_after(delay):
            yield


deadline_clock = time.monotonic
"""The clock of every transport deadline (asyncio's own clock; only differences are used)."""


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
