"""The uniform events every provider's stream yields, and the aggregated results.

Events are tagged msgspec Structs, so they encode to JSON with a ``type`` tag and
``match`` on them works::

    match event:
        case TextDelta(text=t): print(t, end="")
        case Usage(output_tokens=n): ...
        case Finish(reason=r): ...
        case SafetyNotice(): ...

The order of a stream's events is the same on every provider: a :class:`ResponseInfo` as soon
as the request id is known, then :class:`TextDelta` s (with :class:`SafetyNotice` and
further :class:`ResponseInfo` among them), then :class:`Usage` when the provider reports it,
and :class:`Finish` last. :func:`fold` turns events into the :class:`Completion`; the stream
uses it too, so a caller who folds the events it saw gets the same result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = [
    "Accumulator",
    "Completion",
    "Embeddings",
    "Event",
    "Finish",
    "ResponseInfo",
    "SafetyNotice",
    "TextDelta",
    "Usage",
    "fold",
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


class ResponseInfo(msgspec.Struct, tag="response_info", frozen=True):
    """Facts about the response: its ``request_id`` and provider ``notes``.

    Notes end up in ``Completion.extra`` (a later note of the same name replaces an earlier
    one), e.g. Qianfan's ``sentence_anomalies``, ``need_clear_history`` and
    ``trimmed_messages``, DashScope's ``stream_mode``.
    """

    request_id: str | None = None
    notes: dict[str, Any] = msgspec.field(default_factory=dict)


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


class Embeddings(msgspec.Struct, tag="embeddings", kw_only=True):
    """Embedding vectors, in input order (the one event of an ``embed`` call)."""

    embeddings: list[list[float]]
    model: str | None = None
    usage: Usage | None = None
    provider: str | None = None
    request_id: str | None = None


Event = TextDelta | Usage | Finish | SafetyNotice | ResponseInfo | Embeddings
"""Every event type a :class:`~aiollm.Stream` can yield."""


class Accumulator:
    """Folds events, one at a time or in batches, into a :class:`Completion`.

    Pure and incremental: :meth:`completion` can be asked at any point (a partial result
    before the stream's :class:`Finish`).
    """

    __slots__ = (
        "_extra",
        "_finish",
        "_request_id",
        "_safety",
        "_texts",
        "_usage",
        "model",
        "provider",
    )

    def __init__(self, *, provider: str | None = None, model: str | None = None) -> None:
        self.provider = provider
        self.model = model
        self._texts: list[str] = []
        self._usage: Usage | None = None
        self._finish: Finish | None = None
        self._safety: SafetyNotice | None = None
        self._request_id: str | None = None
        self._extra: dict[str, Any] = {}

    def add(self, events: Iterable[Event]) -> None:
        """Take ``events`` in order."""
        texts = self._texts
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                texts.append(event.text)  # type: ignore[union-attr]
            elif kind is Usage:
                self._usage = event  # type: ignore[assignment]
            elif kind is Finish:
                self._finish = event  # type: ignore[assignment]
            elif kind is ResponseInfo:
                info: ResponseInfo = event  # type: ignore[assignment]
                if info.request_id is not None:
                    self._request_id = info.request_id
                self._extra.update(info.notes)
            elif kind is SafetyNotice:
                self._safety = event  # type: ignore[assignment]

    def completion(self) -> Completion:
        """The :class:`Completion` of the events taken so far."""
        return Completion(
            text="".join(self._texts),
            finish_reason=self._finish.reason if self._finish is not None else None,
            usage=self._usage,
            request_id=self._request_id,
            provider=self.provider,
            model=self.model,
            safety=self._safety,
            extra=dict(self._extra),
        )


def fold(
    events: Iterable[Event], *, provider: str | None = None, model: str | None = None
) -> Completion:
    """The :class:`Completion` of ``events`` (what a stream of them adds up to)."""
    acc = Accumulator(provider=provider, model=model)
    acc.add(events)
    return acc.completion()
