"""The DashScope wire format: the view Structs of a result or stream frame, only the fields read."""

from __future__ import annotations

import msgspec

from ..events import Usage
from ._dashscope_rules import Snapshot
from ._wire_common import OutputDetails, PromptDetails, WireToolCall

__all__ = ["WireMessage", "WireResponse", "decode_response", "error_of", "snapshot", "usage_of"]


# -- wire structs: one view of a frame, only the fields read --------------------------------
class WireMessage(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[WireToolCall] | None = None


class _Choice(msgspec.Struct, gc=False):
    message: WireMessage | None = None
    finish_reason: str | None = None


class _Output(msgspec.Struct, gc=False):
    text: str | None = None
    finish_reason: str | None = None
    choices: list[_Choice] | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    output_tokens_details: OutputDetails | None = None
    prompt_tokens_details: PromptDetails | None = None

    def event(self) -> Usage:
        total = self.total_tokens
        if total is None and self.input_tokens is not None and self.output_tokens is not None:
            total = self.input_tokens + self.output_tokens
        out, prompt = self.output_tokens_details, self.prompt_tokens_details
        return Usage(
            self.input_tokens,
            self.output_tokens,
            total,
            out.reasoning_tokens if out is not None else None,
            prompt.cached_tokens if prompt is not None else None,
        )


class WireResponse(msgspec.Struct, gc=False):
    """A result (whole or one stream frame) or an error body.

    Its ``usage``, a running total in every stream frame, is not in this view: only the last
    frame's counts, read from its bytes with :func:`usage_of`, are ever needed.
    """

    output: _Output | None = None
    request_id: str | None = None
    code: str | int | None = None
    message: str | None = None
    error: msgspec.Raw = msgspec.Raw()
    """An ``error`` object or string (OpenAI-style error bodies from proxies): rare, read
    only when there is no ``output``."""


class _Error(msgspec.Struct, gc=False):
    code: str | int | None = None
    message: str | None = None


decode_response = msgspec.json.Decoder(WireResponse).decode
_decode_error = msgspec.json.Decoder(_Error | str).decode


class _UsageOf(msgspec.Struct, gc=False):
    usage: _Usage | None = None


_decode_usage_of = msgspec.json.Decoder(_UsageOf).decode


def usage_of(document: bytes) -> Usage | None:
    """The ``usage`` of a result or stream frame (None if it has none); invalid UTF-8 reads
    as U+FFFD, as in the frame's other fields. Raises ``msgspec.DecodeError``."""
    try:
        usage = _decode_usage_of(document).usage
    except (msgspec.DecodeError, UnicodeDecodeError):
        usage = _decode_usage_of(document.decode("utf-8", "replace")).usage
    return usage.event() if usage is not None else None


def snapshot(message: WireMessage) -> Snapshot:
    """A message-format frame's channels (tool calls as ``(index, id, name, arguments)``)."""
    tools: tuple[tuple[int, str, str, str], ...] = ()
    if message.tool_calls:
        tools = tuple(
            (
                call.index if call.index is not None else i,
                call.id or "",
                (call.function.name or "") if call.function is not None else "",
                (call.function.arguments or "") if call.function is not None else "",
            )
            for i, call in enumerate(message.tool_calls)
        )
    return Snapshot(message.reasoning_content or "", message.content or "", tools)


def error_of(wire: WireResponse) -> tuple[str | int | None, str | None] | None:
    """``(code, message)`` of an error body, else None: no ``output``, and a non-empty
    ``code`` at the top level or an ``error`` object or string."""
    if wire.output is not None:
        return None
    if wire.code not in (None, "", 0, "0"):
        return wire.code, wire.message
    raw = wire.error
    if not len(raw) or raw == b"null":
        return None
    try:
        nested = _decode_error(raw)
    except msgspec.DecodeError:  # an error of another shape: its text is the message
        return None, bytes(raw)[:300].decode("utf-8", "replace")
    if isinstance(nested, str):
        return None, nested
    return nested.code, nested.message or wire.message
