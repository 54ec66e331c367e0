"""Tool calls and inline reasoning, sans-IO: the pieces every provider's decoder shares.

- :class:`ToolCall` is one complete call on a :class:`~aiollm.Completion`; ``arguments`` is the
  JSON string the model wrote, :meth:`ToolCall.parsed` decodes it (a malformed string is a
  :class:`~aiollm.ToolArgumentsError` then, never while streaming).
- :class:`ToolCallMerger` folds :class:`~aiollm.events.ToolCallDelta` fragments into calls:
  fragments merge by ``index``; a fragment whose ``id`` differs from the call at its index starts
  a new call (servers that send ``index: 0`` for every call, or none); names and ids are never
  concatenated, only the argument pieces are.
- :class:`ThinkSplitter` separates ``<think>…</think>`` inlined in the content into reasoning
  and text, with tags split across chunks.
"""

from __future__ import annotations

from .events import ToolCall, ToolCallDelta

__all__ = ["ThinkSplitter", "ToolCall", "ToolCallMerger"]


class _Building:
    __slots__ = ("id", "index", "name", "pieces")

    def __init__(self, index: int | None, id: str | None, name: str | None) -> None:
        self.index = index
        self.id = id
        self.name = name
        self.pieces: list[str] = []


class ToolCallMerger:
    """Folds :class:`ToolCallDelta` fragments into :class:`ToolCall` objects, in order."""

    __slots__ = ("_by_index", "_calls")

    def __init__(self) -> None:
        self._calls: list[_Building] = []
        self._by_index: dict[int | None, _Building] = {}

    def add(self, delta: ToolCallDelta) -> None:
        """Merge one fragment."""
        current = self._by_index.get(delta.index)
        if current is None and delta.index is None and self._calls and not delta.id:
            current = self._calls[-1]  # no index, no id: a continuation of the latest call
        if current is None or (delta.id and current.id and delta.id != current.id):
            current = _Building(delta.index, delta.id or None, delta.name or None)
            self._calls.append(current)
            self._by_index[delta.index] = current
        else:
            if delta.id and not current.id:
                current.id = delta.id
            if delta.name and not current.name:
                current.name = delta.name
        if delta.arguments:
            current.pieces.append(delta.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCall]:
        """The calls so far, in the order they started."""
        return [ToolCall(id=c.id, name=c.name, arguments="".join(c.pieces)) for c in self._calls]


class ThinkSplitter:
    """Splits streamed content into ``(is_reasoning, text)`` pieces at ``<think>`` tags.

    Feed content as it arrives; a tag split across chunks is held back until it is complete
    (or, at :meth:`end`, given back as ordinary text). Text is passed through exactly; only
    the tags themselves are removed. ``inside=True`` starts in reasoning (for servers that
    omit the opening tag).
    """

    __slots__ = ("_close", "_held", "_inside", "_open")

    def __init__(
        self, open_tag: str = "<think>", close_tag: str = "</think>", *, inside: bool = False
    ) -> None:
        self._open = open_tag
        self._close = close_tag
        self._inside = inside
        self._held = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """The pieces of ``text`` that are certain, in order."""
        out: list[tuple[bool, str]] = []
        s = self._held + text if self._held else text
        self._held = ""
        while s:
            tag = self._close if self._inside else self._open
            at = s.find(tag)
            if at < 0:
                keep = _partial_suffix(s, tag)
                if keep:
                    s, self._held = s[:-keep], s[-keep:]
                if s:
                    out.append((self._inside, s))
                return out
            if at:
                out.append((self._inside, s[:at]))
            self._inside = not self._inside
            s = s[at + len(tag) :]
        return out

    def end(self) -> list[tuple[bool, str]]:
        """What was held back at the end of the content (an incomplete tag is text)."""
        held, self._held = self._held, ""
        return [(self._inside, held)] if held else []


def _partial_suffix(s: str, tag: str) -> int:
    """The length of the longest suffix of ``s`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(s)), 0, -1):
        if tag.startswith(s[-n:]):
            return n
    return 0
