"""The uniform events every provider's stream yields, and the aggregated results.

Events are tagged msgspec Structs, so they encode to JSON with a ``type`` tag and
``match`` on them works::

    match event:
        case TextDelta(text=t): print(t, end="")
        case Usage(output_tokens=n): ...
        case Finish(reason=r): ...
        case SafetyNotice(): ...

Order: whatever the provider, a stream's events come as :class:`ResponseInfo` (as soon as the
request id is known), then the content — :class:`TextDelta`, :class:`ReasoningDelta`,
:class:`ToolCallDelta`, with :class:`SafetyNotice` and further :class:`ResponseInfo` among
them — then :class:`Usage` when the provider reports it, and :class:`Finish` last (usage that a
provider sends after its finish frame comes before it). :func:`fold` turns events into the
:class:`Completion`; the stream uses it too, so a caller who folds the events it saw gets the
same result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .errors import ToolArgumentsError

__all__ = [
    "Accumulator",
    "Completion",
    "Embeddings",
    "Event",
    "Finish",
    "ReasoningDelta",
    "RefusalDelta",
    "ResponseInfo",
    "SafetyNotice",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "fold",
]


class TextDelta(msgspec.Struct, tag="text_delta", frozen=True, gc=False):
    """New text: the concatenation of a stream's deltas is exactly its final text."""

    text: str


class ReasoningDelta(msgspec.Struct, tag="reasoning_delta", frozen=True, gc=False):
    """New reasoning ("thinking") text; never mixed into :class:`TextDelta`."""

    text: str


class RefusalDelta(msgspec.Struct, tag="refusal_delta", frozen=True, gc=False):
    """The model declined: new text of its refusal (OpenAI ``delta.refusal``), kept apart
    from :class:`TextDelta` and joined on :attr:`Completion.refusal`."""

    text: str


class ToolCallDelta(msgspec.Struct, tag="tool_call_delta", frozen=True, gc=False):
    """A fragment of one tool call as it arrives.

    ``arguments`` is the new piece of the call's JSON argument string; ``id`` and ``name``
    come with the call's first fragment (later ones may repeat or omit them). Fragments of one
    call share ``index``; a new ``id`` at a used index starts another call.
    """

    index: int | None = None
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Usage(msgspec.Struct, tag="usage", frozen=True, gc=False):
    """Token counts so far (the last one a stream yields is the final count).

    ``reasoning_tokens`` (part of the output) and ``cached_tokens`` (part of the input, served
    from the provider's cache) are set where the provider reports them.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None


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


class ToolCall(msgspec.Struct, kw_only=True):
    """One complete tool call: ``arguments`` is the JSON text exactly as the model wrote it."""

    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: str = "function"

    def parsed(self) -> Any:
        """The arguments decoded from JSON (``{}`` for an empty string).

        Raises :class:`~aiollm.ToolArgumentsError` when the model wrote invalid JSON.
        """
        if not self.arguments.strip():
            return {}
        try:
            return msgspec.json.decode(self.arguments)
        except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: deep nesting
            raise ToolArgumentsError(
                f"tool call {self.name!r} has arguments that are not valid JSON ({exc})",
                call=self,
            ) from None


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
    reasoning: str = ""
    refusal: str = ""
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_message(self, *, reasoning: bool = False) -> dict[str, Any]:
        """The assistant message to send back in the next turn of the conversation.

        The shape is the OpenAI-style one every provider accepts from aiollm (each provider
        sends it in its own wire shape): ``{"role": "assistant", "content": …}`` plus
        ``tool_calls`` when the model called tools, and ``reasoning_content`` when
        ``reasoning=True`` and there was reasoning text.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type,
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        if reasoning and self.reasoning:
            message["reasoning_content"] = self.reasoning
        return message


class Embeddings(msgspec.Struct, tag="embeddings", kw_only=True):
    """Embedding vectors, in input order (the one event of an ``embed`` call)."""

    embeddings: list[list[float]]
    model: str | None = None
    usage: Usage | None = None
    provider: str | None = None
    request_id: str | None = None


Event = (
    TextDelta
    | ReasoningDelta
    | ToolCallDelta
    | RefusalDelta
    | Usage
    | Finish
    | SafetyNotice
    | ResponseInfo
    | Embeddings
)
"""Every event type a :class:`~aiollm.Stream` can yield."""


class Accumulator:
    """Folds events, in batches as they arrive, into a :class:`Completion` (pure, incremental).

    :meth:`completion` can be asked at any point (a partial result before :class:`Finish`).
    Tool-call fragments are merged by index and repaired by call id
    (:class:`~aiollm.tools.ToolCallMerger`).
    """

    __slots__ = (
        "_extra",
        "_finish",
        "_reasoning",
        "_refusal",
        "_request_id",
        "_safety",
        "_texts",
        "_tools",
        "_usage",
        "model",
        "provider",
    )

    def __init__(self, *, provider: str | None = None, model: str | None = None) -> None:
        from .tools import ToolCallMerger

        self.provider = provider
        self.model = model
        self._texts: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._tools = ToolCallMerger()
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
            elif kind is ReasoningDelta:
                self._reasoning.append(event.text)  # type: ignore[union-attr]
            elif kind is ToolCallDelta:
                self._tools.add(event)  # type: ignore[arg-type]
            elif kind is ResponseInfo:
                meta: ResponseInfo = event  # type: ignore[assignment]
                if meta.request_id is not None:
                    self._request_id = meta.request_id
                self._extra.update(meta.notes)
            elif kind is SafetyNotice:
                self._safety = event  # type: ignore[assignment]
            elif kind is RefusalDelta:
                self._refusal.append(event.text)  # type: ignore[union-attr]

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
            reasoning="".join(self._reasoning),
            refusal="".join(self._refusal),
            tool_calls=self._tools.calls(),
            extra=dict(self._extra),
        )


def fold(
    events: Iterable[Event], *, provider: str | None = None, model: str | None = None
) -> Completion:
    """The :class:`Completion` of ``events`` (what a stream of them adds up to)."""
    acc = Accumulator(provider=provider, model=model)
    acc.add(events)
    return acc.completion()
