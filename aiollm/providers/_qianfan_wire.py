"""The Qianfan wire format: the view Struct of a response, stream frame or error body."""

from __future__ import annotations

import msgspec

from ._wire_common import TokenCounts, WireFunction

__all__ = ["WireChat", "decode_chat", "decode_usage"]


class _FunctionCall(WireFunction, gc=False):
    """ERNIE's ``function_call``: the call and the model's reasoning for it."""

    thoughts: str | None = None


class WireChat(msgspec.Struct, gc=False):
    """A chat response, a stream frame, or an error body."""

    id: str | None = None
    result: str | None = None
    sentence_id: int | None = None
    is_end: bool | None = None
    is_truncated: bool | None = None
    need_clear_history: bool | None = None
    ban_round: int | None = None
    finish_reason: str | None = None
    function_call: _FunctionCall | None = None
    usage: msgspec.Raw = msgspec.Raw()
    """Read from the ``is_end`` frame only (earlier frames' running counts are not used)."""
    error_code: int | str | None = None
    error_msg: str | None = None


decode_chat = msgspec.json.Decoder(WireChat).decode
decode_usage = msgspec.json.Decoder(TokenCounts).decode
