"""What a provider is: settings, a credential, request building and a sans-IO response decoder.

A provider defines a :class:`Provider` subclass and a :class:`ResponseDecoder`
subclass. The core does the rest: transport, token fetching, retries, limits and the
:class:`~aiollm.Stream`. Nothing here does IO: a decoder is fed the body's bytes and returns
:mod:`aiollm.events`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..errors import (
    AiollmError,
    APIError,
    ConfigurationError,
    ProtocolError,
    UnsupportedOperationError,
    error_for_status,
)
from ..events import Event
from ..framing import BodyKind, JSONFramer, ServerSentEvent, SSEDecoder, SSEItem, sniff_body
from ..request import HTTPRequest, TokenEndpoint, json_body, parse_retry_after

__all__ = [
    "MAX_ERROR_BODY",
    "Call",
    "HTTPRequest",
    "Prepared",
    "Provider",
    "ResponseDecoder",
    "data_of",
    "header",
    "json_body",
    "parse_retry_after",
]

Operation = Literal["chat", "complete", "embed"]

_SSE, _JSON, _OTHER = BodyKind  # module names: an enum class's attribute lookup is slow

MAX_ERROR_BODY = 1024 * 1024
"""The most bytes of an error body (or of a body that is neither SSE nor JSON) kept."""


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


@dataclass
class Prepared:
    """A validated call with its request body encoded once (retries resend the same bytes).

    ``notes`` are facts preparing it produced (e.g. how many messages were trimmed): the
    decoder reports them as a :class:`~aiollm.events.ResponseInfo`.
    """

    call: Call
    body: bytes
    notes: dict[str, Any] = field(default_factory=dict)
    alternates: dict[str, bytes] = field(default_factory=dict)
    """Other encodings of the body a provider may fall back to (each encoded once)."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (aiohttp's headers are; plain dicts in tests are not)."""
    value = headers.get(name)
    if value is None and isinstance(headers, dict):  # aiohttp's headers have answered already
        lower = name.lower()
        for key, item in headers.items():
            if key.lower() == lower:
                found: str = item
                return found
    return value


def data_of(item: SSEItem) -> bytes:
    """The data of a server-sent event as bytes."""
    if type(item) is bytes:
        return item
    event: ServerSentEvent = item  # type: ignore[assignment]
    return event.raw if event.raw is not None else event.data.encode()


class ResponseDecoder(ABC):
    """One response's body, sans-IO: ``feed(bytes) -> events``, ``end() -> events``.

    Built by the provider from the response head (``status`` and ``headers``; without a
    ``Content-Type`` the body's first bytes tell an event stream from JSON). It sniffs the body (event stream, JSON or
    other), frames it, maps each frame to events once, turns error bodies into typed errors
    and applies the end-of-body rule. The contract:

    - :meth:`feed` takes the next body chunk (any split) and returns the events it completes;
      :meth:`end` is called once at the end of the body and returns the last events, or
      raises if the body was cut short.
    - After the terminal frame :attr:`finished` is true and the rest of the body is ignored;
      the last event of a chat response is then :class:`~aiollm.Finish`.
    - A bad frame raises an :class:`~aiollm.AiollmError`. When frames before it in the same
      chunk decoded, their events are returned and the error is kept in :attr:`error`; every
      later call raises it. Nothing else is ever raised.
    - :meth:`abort` (the exchange was cut short elsewhere) returns events that complete the
      record of what arrived, e.g. a running usage total; it never raises.
    """

    provider: ClassVar[str] = ""

    def __init__(
        self, call: Call, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        self.call = call
        self.status = status
        self.headers = headers = headers if headers is not None else {}
        self.content_type = header(headers, "Content-Type") or ""
        self.finished = False
        self.error: AiollmError | None = None
        self._body: bytearray | None = None
        self._sse: SSEDecoder | None = None
        self._json: JSONFramer | None = None
        self._sniffed = False
        self._head = b""

    # -- the contract ---------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        """The events the next body chunk completes."""
        if self.error is not None:
            raise self.error
        if self.finished or not data:
            return []
        out: list[Event] = []
        try:
            sse = self._sse
            if sse is not None:
                self.frames(sse.feed_raw(data), out)
            elif self._sniffed:
                self._feed_other(data, out)
            else:
                self._start(data, out)
        except Exception as exc:
            return self._failed(exc, out)
        return out

    def end(self) -> list[Event]:
        """The body ended: its last events, or the error if it was cut short."""
        if self.error is not None:
            raise self.error
        if self.finished:
            return []
        out: list[Event] = []
        try:
            if not self._sniffed:
                self._start(b"", out, last=True)
            if self.status >= 300:
                raise self.http_error(bytes(self._body or b""))
            if self._sse is not None:
                self.frames(self._sse.close_raw(), out)
            elif self._json is not None:
                for document in self._json.close():
                    self.document(document, out)
            elif self._body is not None:
                self.other(bytes(self._body))
            if not self.finished:
                self.finish(out)
                self.finished = True
        except Exception as exc:
            return self._failed(exc, out)
        return out

    def abort(self) -> list[Event]:
        """The exchange was cut short: events that complete the record (never raises)."""
        return []

    # -- what a provider supplies ---------------------------------------------------------
    @abstractmethod
    def frames(self, items: Sequence[SSEItem], out: list[Event]) -> None:
        """Map the server-sent events of one chunk to events in ``out`` (stop once finished)."""

    @abstractmethod
    def document(self, document: bytes, out: list[Event]) -> None:
        """Map one JSON document (a whole body, an NDJSON line, an error body) to events."""

    @abstractmethod
    def finish(self, out: list[Event]) -> None:
        """The end-of-body rule when no terminal frame came: final events, or raise."""

    def other(self, body: bytes) -> None:
        """A body that is neither an event stream nor JSON (e.g. an HTML error page)."""
        snippet = body[:200].decode("utf-8", "replace").strip()
        raise ProtocolError(
            f"unexpected {self.content_type or 'untyped'} response body: {snippet!r}",
            provider=self.provider,
        )

    def http_error(self, body: bytes) -> APIError:
        """The error of a non-2xx response: the status table unless the body says more."""
        snippet = body[:300].decode("utf-8", "replace").strip()
        return error_for_status(
            self.status,
            snippet or f"HTTP {self.status}",
            provider=self.provider,
            retry_after=parse_retry_after(self.headers),
        )

    # -- internals -------------------------------------------------------------------------
    def _start(self, data: bytes, out: list[Event], *, last: bool = False) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        kind = _OTHER
        if self.status < 300:
            found = sniff_body(self.content_type, data, final=last)
            if found is None:
                self._head = data  # too few bytes yet to tell what the body is
                return
            kind = found
        self._sniffed = True
        if kind is _SSE:
            self._sse = SSEDecoder()
            if data:
                self.frames(self._sse.feed_raw(data), out)
        else:
            if kind is _JSON:
                self._json = JSONFramer()
            self._feed_other(data, out)

    def _feed_other(self, data: bytes, out: list[Event]) -> None:
        framer = self._json
        if framer is not None:
            for document in framer.feed(data):
                self.document(document, out)
                if self.finished:
                    return
            return
        body = self._body
        if body is None:
            body = self._body = bytearray()
        body += data
        if len(body) > MAX_ERROR_BODY:
            what = f"HTTP {self.status}" if self.status >= 300 else "unrecognised"
            raise ProtocolError(
                f"{what} {self.content_type or 'untyped'} body over {MAX_ERROR_BODY} bytes",
                provider=self.provider,
            )

    def _failed(self, exc: Exception, out: list[Event]) -> list[Event]:
        # A decoder raises typed errors only: never let a bare KeyError reach the caller.
        error = exc if isinstance(exc, AiollmError) else ProtocolError.wrapping(exc, self.provider)
        self.error = error
        if out:
            return out
        raise error


_UNREAD: Any = object()


class Provider(ABC):
    """One provider's settings, credential, request building and decoder factory."""

    name: ClassVar[str]
    setting_keys: ClassVar[frozenset[str]] = frozenset()
    """The keys ``providers={name: {...}}`` accepts; any other is a ConfigurationError."""
    operations: ClassVar[frozenset[str]] = frozenset({"chat"})

    def __init__(self, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.settings = dict(settings)
        self.env = env
        self._values: dict[tuple[str, str | None], Any] = {}

    # -- settings -----------------------------------------------------------------------
    def setting(self, key: str, env_var: str | None = None, default: Any = None) -> Any:
        """A setting from the constructor, else the environment variable, else ``default``
        (each read once, when first asked: a call does not search the environment)."""
        value = self._values.get((key, env_var), _UNREAD)
        if value is _UNREAD:
            value = self.settings.get(key)
            if value is None and env_var:
                value = self.env.get(env_var) or None
            self._values[key, env_var] = value
        return default if value is None else value

    def require(self, key: str, env_var: str) -> str:
        """A required setting, or a :class:`ConfigurationError` naming how to set it."""
        value = self.setting(key, env_var)
        if not value:
            self._values.pop((key, env_var), None)  # not set yet: read again next time
            raise ConfigurationError(
                f"missing {key!r}: set the {env_var} environment variable or pass "
                f"providers={{{self.name!r}: {{{key!r}: ...}}}} to aiollm.Client",
                provider=self.name,
            )
        return str(value)

    @abstractmethod
    def credential(self) -> str | TokenEndpoint:
        """The credential from the settings: a key, or the endpoint that issues tokens."""

    # -- requests -----------------------------------------------------------------------
    def check(self, call: Call) -> None:
        """Validate ``call`` before anything is sent (raise InvalidRequestError)."""
        if call.op not in self.operations:
            raise UnsupportedOperationError(
                f"{self.name} has no {call.op!r} endpoint; it supports: "
                + ", ".join(sorted(self.operations)),
                provider=self.name,
            )

    def prepare(self, call: Call) -> Prepared:
        """Validate ``call`` and encode its body, once per call."""
        self.check(call)
        return Prepared(call, json_body(self.body(call)))

    def explain(self, exc: APIError, request: HTTPRequest) -> APIError:
        """Add what to check to the error of an HTTP response to ``request`` (default: nothing)."""
        return exc

    @abstractmethod
    def body(self, call: Call) -> dict[str, Any]:
        """The JSON body of ``call``."""

    @abstractmethod
    def build_request(self, prepared: Prepared, credential: str) -> HTTPRequest:
        """The HTTP request of one attempt with ``credential`` from the token source."""

    def failed(self, prepared: Prepared, error: AiollmError) -> None:  # noqa: B027
        """An attempt of ``prepared`` failed with ``error``, before the retry decision.

        A provider may learn from it (e.g. that the server does not stream), so that its
        next requests differ; the decision itself belongs to the stream's retry loop.
        """

    @abstractmethod
    def decoder(
        self, prepared: Prepared, status: int, headers: Mapping[str, str]
    ) -> ResponseDecoder:
        """A decoder for one response to ``prepared``, from the response head."""
