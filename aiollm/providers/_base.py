"""What a provider is: settings, a token source, a request builder and a sans-IO codec.

A provider module defines a :class:`Provider` subclass and a :class:`Codec` subclass.
The core does the rest: transport, framing, retries, token refresh, limits and the
:class:`~aiollm.Stream`. Codecs never see bytes off the socket or an event loop; they
are fed frames (batches of server-sent events as :meth:`SSEDecoder.feed_raw
<aiollm.framing.SSEDecoder.feed_raw>` returns them, or raw JSON documents) and return lists
of :mod:`aiollm.events`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import msgspec

from .._redact import REDACTED, SECRET_PARAMS, redact_headers, redact_text
from .._retry_after import parse_retry_after as parse_retry_after
from ..errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    UnsupportedOperationError,
)
from ..events import Embeddings, Event, Usage
from ..framing import ServerSentEvent, SSEItem

Operation = Literal["chat", "complete", "embed"]


@dataclass
class Call:
    """What the caller asked for, before any provider-specific shaping."""

    op: Operation
    model: str
    stream: bool
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    input: str | list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)


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


_json_encoder = msgspec.json.Encoder()


def json_body(obj: Any) -> bytes:
    """Encode a request body as compact JSON (UTF-8, non-ASCII kept as is)."""
    return _json_encoder.encode(obj)


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    code: str | int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    body: Any = None,
) -> APIError:
    """The generic mapping of an HTTP status to the error hierarchy (providers refine it)."""
    cls: type[APIError]
    if status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitError
    elif status == 408 or status >= 500:
        cls = ServerError
    elif 400 <= status < 500:
        cls = InvalidRequestError
    else:
        cls = APIError
    return cls(
        message,
        provider=provider,
        status=status,
        code=code,
        request_id=request_id,
        retry_after=retry_after,
        body=body,
    )


class Codec(ABC):
    """Per-response, sans-IO decoder: frames in, uniform events out.

    One instance serves one HTTP response. It raises :class:`~aiollm.APIError` subclasses
    for error frames and bodies, :class:`~aiollm.ProtocolError` for frames it cannot make
    sense of. ``request_id`` and ``extra`` end up on the :class:`~aiollm.Completion`.
    """

    provider: ClassVar[str] = ""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.request_id: str | None = None
        self.extra: dict[str, Any] = {}
        self.done = False
        """True once the terminal frame arrived; the stream stops reading then."""
        self.embeddings: Embeddings | None = None
        """Set by ``on_json`` for an ``embed`` call (embeddings are a result, not events)."""

    def on_response(self, status: int, headers: Mapping[str, str]) -> None:  # noqa: B027
        """The response head arrived (any status); e.g. take a request id from a header."""

    def partial_usage(self) -> Usage | None:
        """The latest usage reported so far, for the completion of a stream cut short.

        A codec whose frames carry a running total yields one :class:`Usage` event at the
        end and overrides this, so that a partial completion still carries the counts.
        """
        return None

    def on_sse(self, event: ServerSentEvent) -> list[Event]:
        """Decode one server-sent event (a batch of one: see :meth:`on_sse_batch`)."""
        out: list[Event] = []
        self.on_sse_batch([event], out)
        return out

    def on_sse_batch(self, events: Sequence[SSEItem], out: list[Event]) -> None:
        """Decode the events one body chunk completed (see ``SSEDecoder.feed_raw``) into ``out``.

        Stops after the terminal frame (:attr:`done`). If a frame raises, ``out`` already
        holds the events of the frames before it, so the caller can deliver them first.
        A codec takes its common frames inline here, in one loop, and the others one by
        one. This default is for codecs whose responses are never event streams.
        """
        if events:
            raise ProtocolError(
                "unexpected event-stream body for this request", provider=self.provider
            )

    @abstractmethod
    def on_json(self, document: bytes) -> list[Event]:
        """Decode one JSON document (a whole body, an NDJSON line, or an error body)."""

    def on_other(self, body: bytes, content_type: str) -> list[Event]:
        """Decode a body that is neither an event stream nor JSON (e.g. an HTML error page)."""
        snippet = body[:200].decode("utf-8", "replace").strip()
        raise ProtocolError(
            f"unexpected {content_type or 'untyped'} response body: {snippet!r}",
            provider=self.provider,
        )

    def on_end(self) -> list[Event]:
        """The body ended; return any final events or raise if the stream was cut short."""
        return []

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The error for a non-2xx response; the default reads nothing provider-specific."""
        snippet = body[:300].decode("utf-8", "replace").strip()
        return error_for_status(
            status,
            snippet or f"HTTP {status}",
            provider=self.provider,
            retry_after=parse_retry_after(headers),
        )


class TokenSourceLike(ABC):
    """The part of a token source the core uses (see :mod:`aiollm.auth`)."""

    refreshable: ClassVar[bool] = False

    @abstractmethod
    async def get(self, transport: Any) -> str:
        """A valid credential (fetching or refreshing it if needed)."""

    def invalidate(self, token: str) -> None:  # noqa: B027 - optional hook
        """Forget ``token`` after the service rejected it (refreshable sources only)."""


class Provider(ABC):
    """One provider's settings, auth, request building and codec factory."""

    name: ClassVar[str]
    setting_keys: ClassVar[frozenset[str]] = frozenset()
    """The keys ``providers={name: {...}}`` accepts; any other is a ConfigurationError."""
    operations: ClassVar[frozenset[str]] = frozenset({"chat"})
    sse_data_line_events: ClassVar[bool] = True
    """Frame the event stream per ``data:`` line (robust to gateways that omit blank lines)."""
    sse_json_line_events: ClassVar[bool] = False
    """Dispatch a bare ``{...}`` line inside an event stream as an event (servers that write
    JSON error objects there without ``data:``)."""

    def __init__(self, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.settings = dict(settings)
        self.env = env
        self._auth: TokenSourceLike | None = None

    # -- settings -----------------------------------------------------------------------
    def setting(self, key: str, env_var: str | None = None, default: Any = None) -> Any:
        """A setting from the constructor, else the environment variable, else ``default``."""
        value = self.settings.get(key)
        if value is None and env_var:
            value = self.env.get(env_var) or None
        return default if value is None else value

    def require(self, key: str, env_var: str) -> str:
        """A required setting, or a :class:`ConfigurationError` naming how to set it."""
        value = self.setting(key, env_var)
        if not value:
            raise ConfigurationError(
                f"missing {key!r}: set the {env_var} environment variable or pass "
                f"providers={{{self.name!r}: {{{key!r}: ...}}}} to aiollm.Client",
                provider=self.name,
            )
        return str(value)

    # -- auth -------------------------------------------------------------------------
    @property
    def auth(self) -> TokenSourceLike:
        """The provider's token source, built on first use (so a missing key fails at call time)."""
        if self._auth is None:
            self._auth = self.make_auth()
        return self._auth

    @abstractmethod
    def make_auth(self) -> TokenSourceLike:
        """Build the token source from the settings (raise ConfigurationError if incomplete)."""

    # -- requests ---------------------------------------------------------------------
    def check(self, call: Call) -> None:
        """Validate ``call`` before anything is sent (raise InvalidRequestError)."""
        if call.op not in self.operations:
            raise UnsupportedOperationError(
                f"{self.name} has no {call.op!r} endpoint; it supports: "
                + ", ".join(sorted(self.operations)),
                provider=self.name,
            )

    def explain(self, exc: APIError, request: HTTPRequest) -> APIError:
        """Add what to check to the error of an HTTP response to ``request`` (default: nothing)."""
        return exc

    @abstractmethod
    def build_request(self, call: Call, credential: str) -> HTTPRequest:
        """The HTTP request for ``call`` with ``credential`` from the token source."""

    @abstractmethod
    def new_codec(self, call: Call) -> Codec:
        """A fresh codec for one response to ``call``."""
