"""Any OpenAI-compatible server (``openai/<model>``), and the OpenAI wire codec.

Settings: ``base_url`` (``OPENAI_BASE_URL``, includes ``/v1``; default
``https://api.openai.com/v1``) and ``api_key`` (``OPENAI_API_KEY``; required for the default
base URL, optional for a custom server). Streams are real SSE ``chat.completion.chunk``s;
usage is asked for with ``stream_options.include_usage``; ``[DONE]`` ends the stream, and a
body that ends after a ``finish_reason`` without ``[DONE]`` is a normal end too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from ..auth import StaticToken
from ..errors import (
    APIError,
    ContentFilterError,
    ContextOverflowError,
    ProtocolError,
    QuotaExceededError,
)
from ..events import Embeddings, Event, Finish, TextDelta, Usage
from ..framing import ServerSentEvent
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

DEFAULT_BASE_URL = "https://api.openai.com/v1"


# -- wire structs (only the fields we read) ---------------------------------------------------
class WireUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def event(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.total_tokens)


class WireError(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None
    type: str | None = None


class _Delta(msgspec.Struct):
    content: str | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Message | None = None
    text: str | None = None
    finish_reason: str | None = None


class WireResponse(msgspec.Struct):
    """A chat/completions response, a streamed chunk, or an error body."""

    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None
    # Gateway-style error bodies: {"code": .., "msg"|"message": ..}
    code: str | int | None = None
    msg: str | None = None
    message: str | None = None


class _EmbeddingItem(msgspec.Struct):
    embedding: list[float]
    index: int = 0


class WireEmbeddings(msgspec.Struct):
    data: list[_EmbeddingItem]
    model: str | None = None
    usage: WireUsage | None = None


_decode_response = msgspec.json.Decoder(WireResponse).decode
_decode_embeddings = msgspec.json.Decoder(WireEmbeddings).decode


def _error_class(code: str | int | None, type_: str | None) -> type[APIError] | None:
    text = f"{code or ''} {type_ or ''}".lower()
    if "context_length" in text or "context_window" in text:
        return ContextOverflowError
    if "insufficient_quota" in text or "billing" in text:
        return QuotaExceededError
    if "content_filter" in text or "content_policy" in text:
        return ContentFilterError
    return None


class OpenAICodec(Codec):
    """Decodes OpenAI-format bodies: chunks, whole responses, embeddings and errors."""

    provider: ClassVar[str] = "openai"

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.finished = False

    def decode(self, document: bytes | str) -> WireResponse:
        """One JSON document as a :class:`WireResponse` (ProtocolError if it is not one)."""
        try:
            return _decode_response(document)
        except msgspec.DecodeError as exc:
            raise ProtocolError(
                f"malformed JSON frame ({exc}): {str(document)[:120]!r}", provider=self.provider
            ) from None

    def error_from(self, wire: WireResponse, status: int, headers: Mapping[str, str]) -> APIError:
        """The error an error body stands for (status 200 if it came inside a 200 response)."""
        err = wire.error
        if isinstance(err, WireError):
            code: str | int | None = err.code
            message = err.message or "error"
            type_ = err.type
        else:
            code = wire.code
            message = err or wire.msg or wire.message or "error"
            type_ = None
        retry_after = parse_retry_after(headers)
        cls = _error_class(code, type_)
        if cls is not None:
            return cls(
                message,
                provider=self.provider,
                status=status,
                code=code,
                request_id=wire.id,
                retry_after=retry_after,
            )
        return error_for_status(
            status if status >= 400 else 500,
            message,
            provider=self.provider,
            code=code,
            request_id=wire.id,
            retry_after=retry_after,
        )

    def is_error(self, wire: WireResponse) -> bool:
        """Whether a decoded body is an error rather than a result."""
        return wire.error is not None or (wire.choices is None and wire.code not in (None, 0, "0", ""))

    def events_of(self, wire: WireResponse) -> list[Event]:
        """The events in one chunk or response."""
        if wire.id and self.request_id is None:
            self.request_id = wire.id
        out: list[Event] = []
        choices = wire.choices
        if choices:
            choice = choices[0]
            part = choice.delta or choice.message
            text = part.content if part is not None else choice.text
            if text:
                out.append(TextDelta(text))
            if choice.finish_reason is not None:
                out.append(Finish(choice.finish_reason))
                self.finished = True
        if wire.usage is not None:
            out.append(wire.usage.event())
        return out

    def on_sse(self, event: ServerSentEvent) -> list[Event]:
        data = event.data
        if data == "[DONE]":
            self.done = True
            return []
        if not data:
            return []
        wire = self.decode(data)
        if self.is_error(wire):
            raise self.error_from(wire, 200, {})
        return self.events_of(wire)

    def on_json(self, document: bytes) -> list[Event]:
        if self.call.op == "embed":
            return self.on_embeddings(document)
        wire = self.decode(document)
        if self.is_error(wire):
            raise self.error_from(wire, 200, {})
        events = self.events_of(wire)
        if not self.call.stream:
            self.finished = True
        return events

    def on_embeddings(self, document: bytes) -> list[Event]:
        """Decode an embeddings body into :attr:`embeddings` (input order restored)."""
        try:
            wire = _decode_embeddings(document)
        except msgspec.DecodeError:
            raise self.error_from(self.decode(document), 200, {}) from None
        items = sorted(wire.data, key=lambda item: item.index)
        usage = wire.usage.event() if wire.usage is not None else None
        self.embeddings = Embeddings(
            embeddings=[item.embedding for item in items],
            model=wire.model,
            usage=usage,
            provider=self.provider,
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

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        try:
            wire = _decode_response(body)
        except msgspec.DecodeError:
            return super().http_error(status, headers, body)
        return self.error_from(wire, status, headers)


class OpenAIProvider(Provider):
    """``openai/<model>``: any OpenAI-compatible server with a Bearer key."""

    name: ClassVar[str] = "openai"
    operations: ClassVar[frozenset[str]] = frozenset({"chat", "complete", "embed"})
    codec_class: ClassVar[type[OpenAICodec]] = OpenAICodec

    @property
    def base_url(self) -> str:
        """The API base, including ``/v1``."""
        return str(self.setting("base_url", "OPENAI_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")

    def make_auth(self) -> TokenSourceLike:
        if self.base_url == DEFAULT_BASE_URL:
            return StaticToken(self.require("api_key", "OPENAI_API_KEY"))
        return StaticToken(str(self.setting("api_key", "OPENAI_API_KEY", "")))

    def body(self, call: Call) -> dict[str, Any]:
        """The JSON body of ``call`` in the OpenAI format."""
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
        if call.stream:
            body["stream"] = True
            if "stream_options" not in call.params:
                body["stream_options"] = {"include_usage": True}
            elif body["stream_options"] is None:
                del body["stream_options"]
        return body

    def path(self, call: Call) -> str:
        """The endpoint path of ``call``."""
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
            body=json_body(self.body(call)),
            secrets=(credential,) if credential else (),
        )

    def new_codec(self, call: Call) -> Codec:
        return self.codec_class(call)
