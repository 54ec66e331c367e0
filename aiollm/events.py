"""The uniform events every provider's stream yields, and the aggregated results.

Events are tagged msgspec Structs, so they encode to JSON with a ``type`` tag and
``match`` on them works::

    match event:
        case TextDelta(text=t): print(t, end="")
        case Usage(output_tokens=n): ...
        case Finish(reason=r): ...
        case SafetyNotice(): ...
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Completion",
    "Embeddings",
    "Event",
    "Finish",
    "SafetyNotice",
    "TextDelta",
    "Usage",
]


class TextDelta(msgspec.Struct, tag="text_delta", frozen=True, gc=False):
    """New text: the concatenation of a stream's deltas is exactly its final text."""

    text: str


class Usage(msgspec.Struct, tag="usage", frozen=True, gc=False):
    """Token counts so far (the last one a stream yields is the final count)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


class Finish(msgspec.Struct, tag="finish", frozen=True, gc=False):
    """The model stopped: ``reason`` is ``stop``, ``length``, ``content_filter`` … as the provider said."""

    reason: str | None = None


class SafetyNotice(msgspec.Struct, tag="safety_notice", frozen=True):
    """The provider flagged the conversation (e.g. Qianfan ``need_clear_history``).

    ``clear_history`` means the conversation should be reset; ``ban_round`` names the
    offending round (-1 = the current question) when the provider says.
    """

    clear_history: bool = False
    ban_round: int | None = None
    message: str | None = None


Event = TextDelta | Usage | Finish | SafetyNotice
"""Every event type a :class:`~aiollm.Stream` can yield."""


class Completion(msgspec.Struct, kw_only=True):
    """The aggregated result of a call (or of the part of a stream that arrived).

    ``extra`` keeps provider-specific facts (e.g. Qianfan ``need_clear_history``,
    ``ban_round``, ``sentence_anomalies``).
    """

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    request_id: str | None = None
    provider: str | None = None
    model: str | None = None
    safety: SafetyNotice | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class Embeddings(msgspec.Struct, kw_only=True):
    """Embedding vectors, in input order."""

    embeddings: list[list[float]]
    model: str | None = None
    usage: Usage | None = None
    provider: str | None = None
    request_id: str | None = None
