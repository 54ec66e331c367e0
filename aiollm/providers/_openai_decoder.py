"""The OpenAI wire decoder: chunks, whole responses, embeddings and error bodies (the gateway's too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import msgspec

from .._redact import redact_text
from ..errors import (
    APIError,
    ProtocolError,
    StreamOptionsRejectedError,
    error_for_status,
    status_class,
)
from ..events import (
    Embeddings,
    Event,
    Finish,
    ReasoningDelta,
    RefusalDelta,
    ResponseInfo,
    TextDelta,
    ToolCallDelta,
)
from ..framing import SSEItem
from ..tools import ThinkSplitter
from ._base import Call, ResponseDecoder, data_of, header
from ._openai_errors import (
    ErrorCode,
    base64_floats,
    class_by_name,
    detail_text,
    normalize_code,
    retry_after_of,
    specific_class,
)
from ._openai_wire import (
    WireChoice,
    WireChunk,
    WireDelta,
    WireError,
    WireResponse,
    decode_chunk,
    decode_embeddings,
    decode_model,
    decode_response,
    first_choice,
    is_error,
)

__all__ = ["OpenAIDecoder"]

_DONE = b"[DONE]"
_NO_CHOICE = WireChoice()
"""Stands for a chunk with no choice 0 (it adds no events)."""


class OpenAIDecoder(ResponseDecoder):
    """Decodes OpenAI-format bodies: chunks, whole responses, embeddings and errors.

    Every frame is decoded once into :class:`WireResponse`, whichever frame it is. Hooks for
    decoders of the same wire format: :meth:`error_class` (how an error body is classified)
    and :meth:`clean_message` (what an error message may show).
    """

    provider: ClassVar[str] = "openai"

    def __init__(
        self, call: Call, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(call, status, headers)
        self.request_id = header(self.headers, "x-request-id") or None
        self._reason: str | None = None
        self._finishing = False  # a finish_reason (or a whole response) arrived
        self._seen = False  # a first frame arrived (its ResponseInfo went out)
        think = call.params.get("think_tags")
        self._think = ThinkSplitter(inside=think == "inside") if think else None
        """``think_tags``: reasoning inlined in the content between ``<think>`` tags."""

    # -- frames --------------------------------------------------------------------------
    def frames(self, items: Sequence[SSEItem], out: list[Event]) -> None:
        append, plain, seen = out.append, self._think is None, self._seen
        for item in items:
            data = item if type(item) is bytes else data_of(item)
            try:  # the first frame is decoded whole at once (see _frame)
                wire: WireChunk | WireResponse = (
                    decode_chunk(data) if seen else decode_response(data)
                )
            except (msgspec.DecodeError, UnicodeDecodeError):  # also [DONE] and empty data
                if data == _DONE:
                    self._end_stream(out)
                    return
                if not data:
                    continue
                wire = self._frame(item, data, out)
                seen = True
            else:
                if (
                    not seen
                    or wire.choices is None
                    or wire.error is not None
                    or wire.object == "error"
                ):
                    wire = self._frame(item, data, out, wire if not seen else None)
                    seen = True
            choices = wire.choices
            if choices:
                choice = choices[0]
                if choice.index:  # n > 1: only choice 0 is followed
                    choice = first_choice(choices) or _NO_CHOICE
                delta = choice.delta or choice.message
                if delta is None:
                    if choice.text:
                        append(TextDelta(choice.text))
                elif (
                    plain
                    and delta.reasoning_content is None
                    and delta.tool_calls is None
                    and delta.reasoning is None
                    and delta.refusal is None
                    and delta.function_call is None
                ):  # plain text, the common frame
                    if delta.content:
                        append(TextDelta(delta.content))
                else:
                    self._parts(delta, out)
                if choice.finish_reason is not None and not self._finishing:
                    self._finishing = True
                    self._reason = choice.finish_reason
            if wire.usage is not None:
                append(wire.usage.event())

    def _frame(
        self,
        item: SSEItem,
        data: bytes,
        out: list[Event],
        whole: WireChunk | WireResponse | None = None,
    ) -> WireResponse:
        """A frame off the common path, decoded whole (``whole``: it was already): an error
        body raises; the first frame of a response gives its facts (:class:`ResponseInfo`)."""
        if type(whole) is WireResponse:
            wire = whole
        else:
            try:
                wire = decode_response(data)
            except (msgspec.DecodeError, UnicodeDecodeError):
                kind = "message" if type(item) is bytes else item.event  # type: ignore[union-attr]
                wire = self._undecodable(data, kind)
        if is_error(wire):
            raise self.error_from(wire, self.status, {})
        if not self._seen:
            self._first(wire, out)
        return wire

    def document(self, document: bytes, out: list[Event]) -> None:
        if self.call.op == "embed":
            self._embeddings(document, out)
            return
        wire = self.decode(document)
        if is_error(wire):
            raise self.error_from(wire, self.status, {})
        if wire.object == "chat.completion.chunk":
            # A server that sends chunks as NDJSON rather than SSE.
            self.frames([document], out)
            return
        if not wire.choices:
            raise ProtocolError(
                "the response has no choices (neither a result nor a known error shape)",
                provider=self.provider,
            )
        if not self._seen:
            self._first(wire, out)
        choice = first_choice(wire.choices)
        reason: str | None = None
        if choice is not None:
            part = choice.message or choice.delta
            if part is not None:
                self._parts(part, out)
            elif choice.text:
                out.append(TextDelta(choice.text))
            reason = choice.finish_reason
        self._end_think(out)
        if wire.usage is not None:
            out.append(wire.usage.event())
        out.append(Finish(reason))
        self.finished = True

    def finish(self, out: list[Event]) -> None:
        if self.call.op == "embed":
            raise ProtocolError("the body ended with no embeddings", provider=self.provider)
        if not self._finishing:
            raise ProtocolError(
                "the body ended before a finish_reason or [DONE]", provider=self.provider
            )
        self._end_think(out)
        out.append(Finish(self._reason))

    def _end_stream(self, out: list[Event]) -> None:
        self._end_think(out)
        out.append(Finish(self._reason))
        self.finished = True

    # -- the parts of a delta or message ----------------------------------------------------
    def _parts(self, delta: WireDelta, out: list[Event]) -> None:
        """Reasoning, text, refusal and tool-call fragments of one delta, in that order."""
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:
            out.append(ReasoningDelta(reasoning))
        if delta.content:
            if self._think is None:
                out.append(TextDelta(delta.content))
            else:
                self._split(delta.content, out)
        if delta.refusal:
            out.append(RefusalDelta(delta.refusal))
        for call in delta.tool_calls or ():
            function = call.function
            out.append(
                ToolCallDelta(
                    index=call.index,
                    id=call.id or None,
                    name=(function.name or None) if function is not None else None,
                    arguments=(function.arguments or "") if function is not None else "",
                )
            )
        legacy = delta.function_call
        if legacy is not None:
            out.append(
                ToolCallDelta(index=0, name=legacy.name or None, arguments=legacy.arguments or "")
            )

    def _split(self, content: str, out: list[Event]) -> None:
        """Content with inline ``<think>`` reasoning (``think_tags=True``)."""
        assert self._think is not None
        for inside, piece in self._think.feed(content):
            out.append(ReasoningDelta(piece) if inside else TextDelta(piece))

    def _end_think(self, out: list[Event]) -> None:
        if self._think is not None:
            for inside, piece in self._think.end():
                out.append(ReasoningDelta(piece) if inside else TextDelta(piece))

    def _first(self, wire: WireResponse, out: list[Event]) -> None:
        self._seen = True
        if self.request_id is None and wire.id:
            self.request_id = wire.id
        try:
            model = decode_model(wire.model) if len(wire.model) else None
        except msgspec.DecodeError:  # not a string: the response's facts do without it
            model = None
        notes = {"response_model": model} if model else {}
        if self.request_id is not None or notes:
            out.append(ResponseInfo(request_id=self.request_id, notes=notes))

    def decode(self, document: bytes | str) -> WireResponse:
        """One JSON document as a :class:`WireResponse` (ProtocolError if it is not one)."""
        try:
            return decode_response(document)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            text = document if isinstance(document, str) else document.decode("utf-8", "replace")
            raise ProtocolError(
                f"malformed JSON frame ({exc}): {self.clean_message(text[:120])!r}",
                provider=self.provider,
            ) from None

    def _undecodable(self, data: bytes, kind: str) -> WireResponse:
        """A frame whose bytes did not decode: invalid UTF-8 reads as U+FFFD, else it is
        malformed (an ``event: error`` frame with plain text is an error message)."""
        text = data.decode("utf-8", "replace")
        try:
            return self.decode(text)
        except ProtocolError:
            if kind == "error":
                raise APIError(self.clean_message(text[:300]), provider=self.provider) from None
            raise

    def _embeddings(self, document: bytes, out: list[Event]) -> None:
        """Decode an embeddings body (input order restored)."""
        try:
            wire = decode_embeddings(document)
        except (msgspec.DecodeError, UnicodeDecodeError):
            other = self.decode(document)
            if is_error(other):
                raise self.error_from(other, self.status, {}) from None
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
                    vector = base64_floats(vector)
                except ValueError as exc:
                    raise ProtocolError(
                        f"undecodable base64 embedding: {exc}", provider=self.provider
                    ) from None
            vectors.append(vector)
        usage = wire.usage.event() if wire.usage is not None else None
        out.append(
            Embeddings(
                embeddings=vectors,
                model=wire.model,
                usage=usage,
                provider=self.provider,
                request_id=self.request_id,
            )
        )
        self.finished = True

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
            message = err or wire.msg or wire.message or detail_text(wire.detail)
            type_ = wire.type
        return normalize_code(code), self.clean_message(message or "error"), type_

    def error_class(
        self, code: ErrorCode, type_: str | None, message: str, status: int
    ) -> type[APIError]:
        """The class of an error: specific codes first, then the real status, then words."""
        specific = specific_class(code, type_, message, status)
        if specific is not None:
            return specific
        if status >= 400:
            return status_class(status)
        if isinstance(code, int) and 400 <= code < 600:
            # In-body errors that carry an HTTP status as their code (vLLM, LiteLLM).
            return status_class(code)
        return class_by_name(code, type_) or APIError

    def error_from(self, wire: WireResponse, status: int, headers: Mapping[str, str]) -> APIError:
        """The error an error body stands for; ``status`` is the real HTTP status (200 in-body)."""
        code, message, type_ = self.error_fields(wire)
        cls = self.error_class(code, type_, message, status)
        if self._asked_usage() and "stream_options" in message and status < 500:
            cls = StreamOptionsRejectedError
        if type_ and type_ not in message:
            message = f"{message} [{type_}]"
        return cls(
            message,
            provider=self.provider,
            status=status,
            code=code,
            request_id=wire.id or header(self.headers, "x-request-id") or self.request_id,
            retry_after=retry_after_of(headers),
        )

    def _asked_usage(self) -> bool:
        """Whether the request carried the ``stream_options`` aiollm adds by default."""
        return self.call.stream and "stream_options" not in self.call.params

    def http_error(self, body: bytes) -> APIError:
        status, headers = self.status, self.headers
        try:
            wire = decode_response(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            wire = None
        if wire is not None and is_error(wire):
            return self.error_from(wire, status, headers)
        snippet = self.clean_message(body[:300].decode("utf-8", "replace").strip())
        if self._asked_usage() and "stream_options" in snippet and status < 500:
            return StreamOptionsRejectedError(
                snippet, provider=self.provider, status=status, request_id=self.request_id
            )
        return error_for_status(
            status,
            snippet or f"HTTP {status}",
            provider=self.provider,
            request_id=header(self.headers, "x-request-id"),
            retry_after=retry_after_of(headers),
        )
