"""The OpenAI wire format: one view Struct per frame type, with only the fields the decoder reads."""

from __future__ import annotations

import msgspec

from ..events import Usage
from ._wire_common import OutputDetails, PromptDetails, TokenCounts, WireFunction, WireToolCall

__all__ = [
    "WireChoice",
    "WireChunk",
    "WireDelta",
    "WireEmbeddings",
    "WireError",
    "WireResponse",
    "WireUsage",
    "decode_chunk",
    "decode_embeddings",
    "decode_model",
    "decode_response",
    "first_choice",
    "is_error",
]


# -- wire structs: one view per frame type, only the fields read ------------------------------
class WireUsage(TokenCounts, gc=False):
    """``usage`` of a response or of the final chunk."""

    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: OutputDetails | None = None

    def event(self) -> Usage:
        """As a uniform :class:`~aiollm.Usage` event."""
        prompt, completion = self.prompt_tokens_details, self.completion_tokens_details
        return Usage(
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            completion.reasoning_tokens if completion is not None else None,
            prompt.cached_tokens if prompt is not None else None,
        )


class WireError(msgspec.Struct, gc=False):
    """The ``error`` object of an OpenAI-style error body."""

    message: str | None = None
    code: str | int | None = None
    type: str | None = None


class WireDelta(msgspec.Struct, gc=False):
    """A chunk's ``delta`` or a response's ``message``: only the fields read."""

    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[WireToolCall] | None = None
    function_call: WireFunction | None = None


class WireChoice(msgspec.Struct, gc=False):
    index: int = 0
    delta: WireDelta | None = None
    message: WireDelta | None = None
    text: str | None = None
    finish_reason: str | None = None


class WireResponse(msgspec.Struct, gc=False):
    """A streamed chunk, a whole response, or an error body of any common shape."""

    id: str | None = None
    object: str | None = None
    choices: list[WireChoice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None
    # Other error shapes: {"code": .., "msg"|"message": ..} (gateways), top-level
    # {"object": "error", "type": .., "code": .., "message": ..} (older vLLM),
    # {"detail": ..} (FastAPI-based servers).
    code: str | int | None = None
    msg: str | None = None
    message: str | None = None
    type: str | None = None
    detail: msgspec.Raw = msgspec.Raw()  # a rare, free-form object: read only in errors
    model: msgspec.Raw = msgspec.Raw()  # read from the first frame only (any JSON value)


class WireChunk(msgspec.Struct, gc=False):
    """A streamed chunk as the common path reads it (no ``id`` string to build, no error shapes).

    The first frame of a response is decoded as :class:`WireResponse` only; a later one
    without ``choices``, with an ``error`` or ``"object": "error"`` is decoded again as one
    (see ``OpenAIDecoder.frames``).
    """

    object: str | None = None
    choices: list[WireChoice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None


class _EmbeddingItem(msgspec.Struct):
    embedding: list[float] | str
    index: int | None = None


class WireEmbeddings(msgspec.Struct):
    """An embeddings response."""

    data: list[_EmbeddingItem]
    model: str | None = None
    usage: WireUsage | None = None


decode_response = msgspec.json.Decoder(WireResponse).decode
decode_chunk = msgspec.json.Decoder(WireChunk).decode
decode_model = msgspec.json.Decoder(str | None).decode
"""The model that answered (``WireResponse.model``), when it is a string."""
decode_embeddings = msgspec.json.Decoder(WireEmbeddings).decode

_SUCCESS_CODES: frozenset[object] = frozenset({0, 200, "", "0", "200"})


def is_error(wire: WireResponse) -> bool:
    """Whether a decoded body is an error rather than a result."""
    if wire.error is not None or wire.object == "error":
        return True
    if wire.choices is not None:
        return False
    detail = wire.detail
    return (wire.code is not None and wire.code not in _SUCCESS_CODES) or (
        len(detail) > 0 and detail != b"null"
    )


def first_choice(choices: list[WireChoice] | None) -> WireChoice | None:
    """Choice 0 (with ``n > 1`` only the first choice is followed)."""
    if not choices:
        return None
    first = choices[0]
    if first.index == 0:
        return first
    return next((choice for choice in choices if choice.index == 0), None)
