"""Any OpenAI-compatible server (``openai/<model>``), and the OpenAI wire codec.

Settings: ``base_url`` (``OPENAI_BASE_URL``, includes ``/v1``; default
``https://api.openai.com/v1``) and ``api_key`` (``OPENAI_API_KEY``; required for the default
base URL, optional for a custom server). Streams are real SSE ``chat.completion.chunk``s;
usage is asked for with ``stream_options.include_usage``; ``[DONE]`` ends the stream, and a
body that ends after a ``finish_reason`` without ``[DONE]`` is a normal end too.

The codec (:class:`OpenAICodec`) is shared with the gateway provider, which speaks the same
wire format behind a different URL scheme, token and error codes.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from .._redact import redact_text
from ..auth import StaticToken
from ..errors import (
    APIError,
    AuthenticationError,
    ContentFilterError,
    ContextOverflowError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from ..events import Embeddings, Event, Finish, TextDelta, Usage
from ..framing import ServerSentEvent, SSEItem, as_event
from ._base import (
    Call,
    Codec,
    HTTPRequest,
    Provider,
    TokenSourceLike,
    error_for_status,
    json_body,
    parse_retry_after,
)
from ._hints import openai_compatible_hint

__all__ = ["DEFAULT_BASE_URL", "OpenAICodec", "OpenAIProvider", "WireError", "WireResponse"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

ErrorCode = str | int | None


# -- wire structs (only the fields we read) ---------------------------------------------------
class WireUsage(msgspec.Struct):
    """``usage`` of a response or of the final chunk."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def event(self) -> Usage:
        """As a uniform :class:`~aiollm.Usage` event."""
        return Usage(self.prompt_tokens, self.completion_tokens, self.total_tokens)


class WireError(msgspec.Struct):
    """The ``error`` object of an OpenAI-style error body."""

    message: str | None = None
    code: str | int | None = None
    type: str | None = None


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class WireResponse(msgspec.Struct):
    """A chat/completions response, a streamed chunk, or an error body of any common shape."""

    id: str | None = None
    object: str | None = None
    choices: list[_Choice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None
    # Other error shapes: {"code": .., "msg"|"message": ..} (gateways), top-level
    # {"object": "error", "type": .., "code": .., "message": ..} (older vLLM),
    # {"detail": ..} (FastAPI-based servers).
    code: str | int | None = None
    msg: str | None = None
    message: str | None = None
    type: str | None = None
    detail: Any = None


class _EmbeddingItem(msgspec.Struct):
    embedding: list[float] | str
    index: int | None = None


class WireEmbeddings(msgspec.Struct):
    """An embeddings response."""

    data: list[_EmbeddingItem]
    model: str | None = None
    usage: WireUsage | None = None


class _TextDelta(msgspec.Struct, gc=False):
    content: str | None = None


class _TextChoice(msgspec.Struct, gc=False):
    index: int = 0
    delta: _TextDelta | None = None
    text: str | None = None
    finish_reason: str | None = None


class _TextChunk(msgspec.Struct, gc=False):
    """What a streamed chunk must show to be a plain text chunk (the common frame)."""

    choices: list[_TextChoice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None


_decode_response = msgspec.json.Decoder(WireResponse).decode
_decode_text_chunk = msgspec.json.Decoder(_TextChunk).decode
_decode_embeddings = msgspec.json.Decoder(WireEmbeddings).decode

_SUCCESS_CODES: frozenset[object] = frozenset({0, 200, "", "0", "200"})
_INT_CODE = re.compile(r"-?\d+")
_CONTEXT_WORDS = re.compile(r"(?i)context[ _-]?(length|window)|maximum context|prompt is too long")


def normalize_code(code: ErrorCode) -> ErrorCode:
    """A numeric code as an ``int`` (``"-98432"`` → ``-98432``), anything else unchanged."""
    if isinstance(code, str):
        code = code.strip()
        if _INT_CODE.fullmatch(code):
            return int(code)
    return code


def status_class(status: int) -> type[APIError]:
    """The error class the generic HTTP status mapping gives ``status``."""
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDeniedError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitError
    if status == 408 or status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return APIError


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``Retry-After`` in seconds, or None."""
    return parse_retry_after(headers)


def _specific_class(
    code: ErrorCode, type_: str | None, message: str, status: int
) -> type[APIError] | None:
    """Classes an OpenAI-style code/type names whatever the HTTP status says."""
    text = f"{code if isinstance(code, str) else ''} {type_ or ''}".lower()
    if "context_length" in text or "context_window" in text:
        return ContextOverflowError
    if status < 500 and status != 429 and _CONTEXT_WORDS.search(message):
        # vLLM, LiteLLM and others say it only in words ("maximum context length is ...").
        return ContextOverflowError
    if "insufficient_quota" in text or "billing" in text or "quota_exceeded" in text:
        return QuotaExceededError
    if "content_filter" in text or "content_policy" in text:
        return ContentFilterError
    return None


def _class_by_name(code: ErrorCode, type_: str | None) -> type[APIError] | None:
    """A class from an error's ``type``/``code`` words (for errors without a real status)."""
    text = f"{code if isinstance(code, str) else ''} {type_ or ''}".lower()
    if "auth" in text or "api_key" in text:
        return AuthenticationError
    if "permission" in text or "forbidden" in text:
        return PermissionDeniedError
    if "not_found" in text or "notfound" in text:
        return NotFoundError
    if "rate_limit" in text or "ratelimit" in text or "throttl" in text:
        return RateLimitError
    if "server_error" in text or "internal" in text or "overloaded" in text or "api_error" in text:
        return ServerError
    if "invalid_request" in text or "badrequest" in text or "bad_request" in text:
        return InvalidRequestError
    return None


def _first_choice(choices: list[_Choice] | None) -> _Choice | None:
    """Choice 0 (with ``n > 1`` only the first choice is followed)."""
    if not choices:
        return None
    first = choices[0]
    if first.index == 0:
        return first
    return next((choice for choice in choices if choice.index == 0), None)


def _detail_text(detail: Any) -> str | None:
    if detail is None:
        return None
    if isinstance(detail, str):
        return detail
    return msgspec.json.encode(detail).decode()[:300]


def _base64_floats(data: str) -> list[float]:
    """``encoding_format="base64"`` embeddings: little-endian float32s."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None
    if len(raw) % 4:
        raise ValueError("not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class OpenAICodec(Codec):
    """Decodes OpenAI-format bodies: chunks, whole responses, embeddings and errors.

    Hooks for codecs of the same wire format: :meth:`error_class` (how an error body is
    classified) and :meth:`clean_message` (what an error message may show).
    """

    provider: ClassVar[str] = "openai"

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.finished = False
        """True once a ``finish_reason`` (or a whole, non-chunk response) arrived."""
        self._warm = False  # a first frame went through on_frame

    def on_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Take the ``x-request-id`` header as the request id (else the body's ``id`` is used)."""
        request_id = headers.get("x-request-id")
        if request_id:
            self.request_id = request_id

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, document: bytes | str) -> WireResponse:
        """One JSON document as a :class:`WireResponse` (ProtocolError if it is not one)."""
        try:
            return _decode_response(document)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            text = document if isinstance(document, str) else document.decode("utf-8", "replace")
            raise ProtocolError(
                f"malformed JSON frame ({exc}): {self.clean_message(text[:120])!r}",
                provider=self.provider,
            ) from None

    def is_error(self, wire: WireResponse) -> bool:
        """Whether a decoded body is an error rather than a result."""
        if wire.error is not None or wire.object == "error":
            return True
        if wire.choices is not None:
            return False
        return (wire.code is not None and wire.code not in _SUCCESS_CODES) or (
            wire.detail is not None
        )

    def events_of(self, wire: WireResponse, *, whole: bool = False) -> list[Event]:
        """The events in one chunk (or, ``whole``, one complete response: usage before finish)."""
        if wire.id and self.request_id is None:
            self.request_id = wire.id
        out: list[Event] = []
        finish: str | None = None
        choice = _first_choice(wire.choices)
        if choice is not None:
            part = choice.delta or choice.message
            text = part.content if part is not None else choice.text
            if text:
                out.append(TextDelta(text))
            finish = choice.finish_reason
            if finish is not None and not whole:
                out.append(Finish(finish))
                self.finished = True
        if wire.usage is not None:
            out.append(wire.usage.event())
        if whole:
            out.append(Finish(finish))
            self.finished = True
        return out

    def on_sse_batch(self, events: Sequence[SSEItem], out: list[Event]) -> None:
        append = out.append
        for event in events:
            raw = event if type(event) is bytes else event.raw  # type: ignore[union-attr]
            if self._warm and raw is not None and raw != b"[DONE]":
                # The common frame, decoded with only the fields that tell it apart: text
                # of choice 0 with no finish, usage or error. Any other goes to on_frame.
                try:
                    chunk = _decode_text_chunk(raw)
                except msgspec.DecodeError:
                    pass
                else:
                    choices = chunk.choices
                    if choices and chunk.error is None and chunk.usage is None:
                        choice = choices[0]
                        delta = choice.delta
                        if choice.index == 0 and choice.finish_reason is None:
                            text = delta.content if delta is not None else choice.text
                            if text:
                                append(TextDelta(text))
                                continue
                            if delta is not None:
                                continue
            out += self.on_frame(as_event(event))
            if self.done:
                return

    def on_frame(self, event: ServerSentEvent) -> list[Event]:
        """One server-sent event, any kind (:meth:`on_sse_batch` takes plain text inline)."""
        self._warm = True  # the first frame has set the request id
        raw = event.raw
        if raw is None:
            data: bytes | str = event.data
            if data == "[DONE]":
                self.done = True
                return []
        else:
            data = raw
            if raw == b"[DONE]":
                self.done = True
                return []
        try:
            wire = _decode_response(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            retried = self._on_undecodable(event)
            if retried is None:
                return []
            wire = retried
        if self.is_error(wire):
            raise self.error_from(wire, 200, {})
        return self.events_of(wire)

    def _on_undecodable(self, event: ServerSentEvent) -> WireResponse | None:
        """Decode the text of a frame whose data did not decode; ``None`` if it is empty.

        From undecoded bytes (``event.raw``) this is the retry that reads invalid UTF-8
        as U+FFFD; otherwise it raises the error for a malformed frame.
        """
        data = event.text()
        if not data:
            return None
        try:
            return self.decode(data)
        except ProtocolError:
            if event.event == "error":
                raise APIError(self.clean_message(data[:300]), provider=self.provider) from None
            raise

    def on_json(self, document: bytes) -> list[Event]:
        if self.call.op == "embed":
            return self.on_embeddings(document)
        wire = self.decode(document)
        if self.is_error(wire):
            raise self.error_from(wire, 200, {})
        if wire.object == "chat.completion.chunk":
            # A server that sends chunks as NDJSON rather than SSE.
            return self.events_of(wire)
        if not wire.choices:
            raise ProtocolError(
                "the response has no choices (neither a result nor a known error shape)",
                provider=self.provider,
            )
        return self.events_of(wire, whole=True)

    def on_embeddings(self, document: bytes) -> list[Event]:
        """Decode an embeddings body into :attr:`embeddings` (input order restored)."""
        try:
            wire = _decode_embeddings(document)
        except (msgspec.DecodeError, UnicodeDecodeError):
            other = self.decode(document)
            if self.is_error(other):
                raise self.error_from(other, 200, {}) from None
            raise ProtocolError(
                "the embeddings response has no well-formed 'data' list", provider=self.provider
            ) from None
        items = wire.data
        indices = sorted(item.index for item in items if item.index is not None)
        if indices == list(range(len(items))):
            # Servers may list the vectors in any order; ``index`` is the input position.
            items = sorted(items, key=lambda item: item.index or 0)
        expected = len(self.call.input) if isinstance(self.call.input, list) else 1
        if len(items) != expected:
            raise ProtocolError(
                f"asked for {expected} embedding(s), the response has {len(items)}",
                provider=self.provider,
            )
        vectors: list[list[float]] = []
        for item in items:
            vector = item.embedding
            if isinstance(vector, str):
                try:
                    vector = _base64_floats(vector)
                except ValueError as exc:
                    raise ProtocolError(
                        f"undecodable base64 embedding: {exc}", provider=self.provider
                    ) from None
            vectors.append(vector)
        usage = wire.usage.event() if wire.usage is not None else None
        self.embeddings = Embeddings(
            embeddings=vectors,
            model=wire.model,
            usage=usage,
            provider=self.provider,
            request_id=self.request_id,
        )
        return [usage] if usage is not None else []

    def on_end(self) -> list[Event]:
        if self.call.op == "embed":
            if self.embeddings is None:
                raise ProtocolError("the body ended with no embeddings", provider=self.provider)
            return []
        if not (self.done or self.finished):
            raise ProtocolError(
                "the body ended before a finish_reason or [DONE]", provider=self.provider
            )
        return []

    # -- errors --------------------------------------------------------------------------------
    def clean_message(self, message: str) -> str:
        """``message`` fit to show: keys and tokens the server may echo are masked."""
        return redact_text(message)

    def error_fields(self, wire: WireResponse) -> tuple[ErrorCode, str, str | None]:
        """``(code, message, type)`` of an error body of any supported shape."""
        err = wire.error
        if isinstance(err, WireError):
            code: ErrorCode = err.code
            message = err.message or wire.msg or wire.message
            type_ = err.type
        else:
            code = wire.code
            message = err or wire.msg or wire.message or _detail_text(wire.detail)
            type_ = wire.type
        return normalize_code(code), self.clean_message(message or "error"), type_

    def error_class(
        self, code: ErrorCode, type_: str | None, message: str, status: int
    ) -> type[APIError]:
        """The class of an error: specific codes first, then the real status, then words."""
        specific = _specific_class(code, type_, message, status)
        if specific is not None:
            return specific
        if status >= 400:
            return status_class(status)
        if isinstance(code, int) and 400 <= code < 600:
            # In-body errors that carry an HTTP status as their code (vLLM, LiteLLM).
            return status_class(code)
        return _class_by_name(code, type_) or APIError

    def error_from(self, wire: WireResponse, status: int, headers: Mapping[str, str]) -> APIError:
        """The error an error body stands for; ``status`` is the real HTTP status (200 in-body)."""
        code, message, type_ = self.error_fields(wire)
        cls = self.error_class(code, type_, message, status)
        if type_ and type_ not in message:
            message = f"{message} [{type_}]"
        return cls(
            message,
            provider=self.provider,
            status=status,
            code=code,
            request_id=wire.id or headers.get("x-request-id") or self.request_id,
            retry_after=retry_after_of(headers),
        )

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        try:
            wire = _decode_response(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            wire = None
        if wire is not None and self.is_error(wire):
            return self.error_from(wire, status, headers)
        snippet = self.clean_message(body[:300].decode("utf-8", "replace").strip())
        return error_for_status(
            status,
            snippet or f"HTTP {status}",
            provider=self.provider,
            request_id=headers.get("x-request-id"),
            retry_after=retry_after_of(headers),
        )


class OpenAIProvider(Provider):
    """``openai/<model>``: any OpenAI-compatible server with a Bearer key."""

    name: ClassVar[str] = "openai"
    setting_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "base_url"})
    operations: ClassVar[frozenset[str]] = frozenset({"chat", "complete", "embed"})
    codec_class: ClassVar[type[OpenAICodec]] = OpenAICodec

    @property
    def base_url(self) -> str:
        """The API base, including ``/v1``."""
        return str(self.setting("base_url", "OPENAI_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")

    def explain(self, exc: APIError, request: HTTPRequest) -> APIError:
        return openai_compatible_hint(exc, request.url, request.secrets)

    def make_auth(self) -> TokenSourceLike:
        if self.base_url == DEFAULT_BASE_URL:
            return StaticToken(self.require("api_key", "OPENAI_API_KEY"))
        return StaticToken(str(self.setting("api_key", "OPENAI_API_KEY", "")))

    def check(self, call: Call) -> None:
        super().check(call)
        if call.op == "embed":
            items = [call.input] if isinstance(call.input, str) else call.input
            if not items or not all(isinstance(item, str) for item in items):
                raise InvalidRequestError(
                    "input must be a string or a non-empty list of strings", provider=self.name
                )
        elif call.op == "complete" and not isinstance(call.prompt, str):
            raise InvalidRequestError("prompt must be a string", provider=self.name)

    def body(self, call: Call, *, stream: bool) -> dict[str, Any]:
        """The JSON body of ``call`` in the OpenAI format (``stream`` asks for SSE)."""
        body: dict[str, Any] = {"model": call.model}
        if call.op == "chat":
            if call.messages is not None:
                body["messages"] = call.messages
            else:
                body["messages"] = [{"role": "user", "content": call.prompt or ""}]
        elif call.op == "complete":
            body["prompt"] = call.prompt
        else:
            body["input"] = call.input
        body.update(call.params)
        if stream:
            body["stream"] = True
            if "stream_options" not in body:
                body["stream_options"] = {"include_usage": True}
            elif body["stream_options"] is None:
                del body["stream_options"]
        else:
            # Servers reject stream_options without stream; the call is not streamed.
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def path(self, call: Call) -> str:
        """The endpoint path of ``call`` below the ``/v1`` base."""
        return {"chat": "/chat/completions", "complete": "/completions", "embed": "/embeddings"}[
            call.op
        ]

    def build_request(self, call: Call, credential: str) -> HTTPRequest:
        headers = {"Content-Type": "application/json"}
        if call.stream:
            headers["Accept"] = "text/event-stream"
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return HTTPRequest(
            "POST",
            self.base_url + self.path(call),
            headers=headers,
            body=json_body(self.body(call, stream=call.stream)),
            secrets=(credential,) if credential else (),
        )

    def new_codec(self, call: Call) -> Codec:
        return self.codec_class(call)
