"""What goes on the wire, sans-IO: :class:`HTTPRequest` and the token endpoint interface.

Providers build requests here and the transport sends them; neither side imports the other.
A provider that exchanges credentials for an access token describes that exchange as a
:class:`TokenEndpoint` (build the request, read the answer); :mod:`aiollm.auth` does the
fetching, caching and refreshing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._redact import REDACTED, SECRET_PARAMS, redact_headers, redact_text
from ._retry_after import parse_retry_after

__all__ = ["HTTPRequest", "TokenEndpoint", "json_body", "parse_retry_after"]


@dataclass(repr=False)
class HTTPRequest:
    """One HTTP request, ready for the transport.

    ``params`` are query parameters (they may hold an access token); ``secrets`` are literal
    values the transport masks in every message it builds.
    """

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        params = {
            k: REDACTED if k.lower() in SECRET_PARAMS or v in self.secrets else v
            for k, v in self.params.items()
        }
        return (
            f"HTTPRequest({self.method} {redact_text(self.url, self.secrets)} "
            f"params={params} headers={redact_headers(self.headers)})"
        )


class TokenEndpoint(ABC):
    """A sans-IO access-token exchange: the request to send and how to read the answer.

    ``timeout`` bounds the exchange in seconds (None: the transport's default).
    """

    timeout: float | None = None

    @abstractmethod
    def request(self) -> HTTPRequest:
        """The token request."""

    @abstractmethod
    def parse(
        self, status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> tuple[str, float | None]:
        """``(token, lifetime in seconds or None)`` from the answer, or the typed error.

        ``now`` is the wall clock (epoch seconds) when the answer arrived.
        """


_json_encoder = msgspec.json.Encoder()


def json_body(obj: Any) -> bytes:
    """Encode a request body as compact JSON (UTF-8, non-ASCII kept as is)."""
    return _json_encoder.encode(obj)
