"""Body sniffing: does a response body need the SSE decoder, the JSON framer, or neither?"""

from __future__ import annotations

import enum
from typing import Final, Literal, overload

from ._json import BOM


class BodyKind(enum.Enum):
    """What framing a response body needs: SSE, JSON, or neither (e.g. an HTML page)."""

    SSE = "sse"
    JSON = "json"
    OTHER = "other"


_SSE, _JSON, _OTHER = BodyKind  # module names: an enum class's attribute lookup is slow


SNIFF_MAX_BYTES: Final = 1024
""":func:`sniff_body` decides once it has this many bytes, whatever they are."""

_JSON_MEDIA_TYPES: Final = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "text/json",
    }
)
_SSE_HEADS: Final = (b"data:", b"event:", b"id:", b"retry:", b":")


@overload
def sniff_body(content_type: str | None, head: bytes) -> BodyKind: ...
@overload
def sniff_body(content_type: str | None, head: bytes, *, final: Literal[True]) -> BodyKind: ...
@overload
def sniff_body(content_type: str | None, head: bytes, *, final: bool) -> BodyKind | None: ...
def sniff_body(content_type: str | None, head: bytes, *, final: bool = True) -> BodyKind | None:
    """Decide how to frame a response body; ``None`` while ``head`` is too short to tell.

    ``head`` is the body's first bytes. With ``final=False`` (more may come) the answer is
    ``None`` until the bytes decide: keep them, add the next chunk and ask again (at the end
    of the body, ask with ``final=True``, the default, which always decides). The answer is
    the same however the body's start was split. Rules, in order:

    1. The media type of ``content_type`` (case-insensitive, parameters ignored) decides when
       it is specific: ``text/event-stream`` is SSE; ``application/json``,
       ``application/x-ndjson``, ``application/ndjson``, ``application/jsonl``,
       ``application/x-jsonl``, ``application/jsonlines``, ``application/x-jsonlines``,
       ``text/json`` and any ``*/*+json`` are JSON.
    2. Otherwise (no header, ``text/plain``, ``text/html``, ...) the first bytes decide, after
       a UTF-8 BOM and whitespace: ``{`` or ``[`` is JSON (servers do mislabel JSON error
       bodies); ``data:``, ``event:``, ``id:``, ``retry:`` or ``:`` is SSE; anything else,
       including an empty body, is OTHER. Undecided (``None`` unless ``final``): a head that
       is empty, whitespace, a start of the BOM or a start of one of those SSE prefixes, and
       shorter than ``SNIFF_MAX_BYTES``.
    """
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "text/event-stream":
            return _SSE
        if media in _JSON_MEDIA_TYPES or (media.endswith("+json") and "/" in media):
            return _JSON
    rest = head[3:] if head.startswith(BOM) else head
    rest = rest.lstrip(b" \t\r\n")
    if rest.startswith((b"{", b"[")):
        return _JSON
    if rest.startswith(_SSE_HEADS):
        return _SSE
    if final or len(head) >= SNIFF_MAX_BYTES:
        return _OTHER
    if not rest or (len(head) < 3 and BOM.startswith(head)):
        return None
    if any(prefix.startswith(rest) for prefix in _SSE_HEADS):
        return None
    return _OTHER


class BodySniffer:
    """Keeps a body's first bytes until :func:`sniff_body` can decide (sans-IO).

    ``feed(chunk)`` returns ``None`` while undecided, then the :class:`BodyKind` once (and
    ``None`` after); ``end()`` decides with what came if nothing did yet. :attr:`head` is every
    byte fed before the decision, for the framer chosen: nothing is lost. It holds at most
    ``SNIFF_MAX_BYTES`` plus one chunk.
    """

    def __init__(self, content_type: str | None) -> None:
        self.content_type = content_type
        self.head = b""
        self.kind: BodyKind | None = None

    def feed(self, data: bytes) -> BodyKind | None:
        """Add the next chunk; the kind when this chunk decides it, else ``None``."""
        if self.kind is not None:
            return None
        self.head += data
        self.kind = sniff_body(self.content_type, self.head, final=False)
        return self.kind

    def end(self) -> BodyKind | None:
        """The end of the body: the kind if it was not decided yet, else ``None``."""
        if self.kind is not None:
            return None
        self.kind = sniff_body(self.content_type, self.head)
        return self.kind
