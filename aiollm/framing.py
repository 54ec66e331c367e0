"""Response body framing: bytes in, frames out (sans-IO).

The transport hands this layer body chunks as they arrive, split anywhere; the framers turn
them into whole frames and keep nothing else:

* :class:`SSEDecoder` turns a ``text/event-stream`` body into server-sent events, following
  the WHATWG rules, and also reads streams that omit the blank line between frames.
* :class:`JSONFramer` splits a JSON body (one document, possibly pretty-printed, NDJSON, or
  documents back to back) into the raw bytes of each document, for the codec to decode.
* :func:`sniff_body` decides which of the two a body is, from its ``Content-Type`` and, when
  that does not say, its first bytes.

Everything here is pure computation on ``bytes``: no I/O, no event loop, no clock. The only
error raised for bad input is :class:`~aiollm.errors.ProtocolError`; after it a framer is
unusable. Work is linear in the input, however it is split, and memory is bounded: a line,
event or document larger than its limit raises instead of being buffered. The same bytes
give the same frames whatever the chunk boundaries: when an error is found after frames
that a :meth:`~SSEDecoder.feed` call completed, the call returns those frames and the next
call raises the error.
"""

from __future__ import annotations

import enum
import re
from typing import Final, Literal, overload

import msgspec

from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SNIFF_MAX_BYTES",
    "BodyKind",
    "JSONFramer",
    "SSEDecoder",
    "SSEItem",
    "ServerSentEvent",
    "as_event",
    "sniff_body",
]

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
"""Default bound (16 MiB) on one SSE line, one SSE event and one JSON document."""

COMMENT_COST: Final = 64
"""What a kept comment line counts against ``max_event_bytes`` beyond its length."""

_BOM: Final = b"\xef\xbb\xbf"
_WS: Final = re.compile(rb"[ \t\r\n]*")
# Inside a container: skip everything up to the next bracket, whole strings included; stops
# at a bracket, at the end, or at the quote of a string that does not end in the window.
_SKIP: Final = re.compile(rb'(?:[^"{}\[\]]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.DOTALL)
# A string's body after its opening quote: stops at the closing quote, at the end, or at a
# backslash that is the last byte (its escape not yet here).
_STR_BODY: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# ``re`` costs more than linear time on long runs of nested repeats: match in windows.
_WINDOW: Final = 32 * 1024


def _scan_json(buf: bytes | bytearray, p: int, depth: int, in_str: bool) -> tuple[int, int, bool]:
    """Advance over a JSON value from ``p``: ``(p, depth, in_str)`` where it closed, or at the end.

    ``depth`` counts the open brackets, ``in_str`` says whether ``p`` is inside a string. It
    returns as soon as ``depth`` is 0 outside a string (``p`` just past the closing byte), or
    at the end of ``buf`` (``p`` where to resume when more bytes come). Brackets are counted,
    not matched: the caller's decoder validates.
    """
    n = len(buf)
    while p < n:
        w = p + _WINDOW
        if in_str:
            e = _STR_BODY.match(buf, p, w).end()  # type: ignore[union-attr]
            if e < n and buf[e] == 0x22:
                in_str = False
                p = e + 1
                if depth == 0:
                    break
                continue
            p = e
            if e >= n - 1:
                break  # the end, or a final backslash: wait for more
            continue  # stopped at the window's end
        i = _SKIP.match(buf, p, w).end()  # type: ignore[union-attr]
        if i >= n or i >= w:
            p = i
            continue
        c = buf[i]
        p = i + 1
        if c == 0x22:
            in_str = True
        elif c == 0x7B or c == 0x5B:
            depth += 1
        else:
            depth -= 1
            if depth <= 0:
                depth = 0
                break
    return p, depth, in_str


# -- server-sent events -------------------------------------------------------------------


class ServerSentEvent(msgspec.Struct, gc=False):
    """One dispatched server-sent event.

    ``event`` is the event type (``"message"`` unless an ``event:`` field set it); ``data``
    the ``data:`` lines joined by ``"\\n"``; ``id`` the stream's *last event ID* when the
    event was dispatched (``""`` when never set); ``retry`` the ``retry:`` value of this
    event's block, else ``None``; ``comments`` the comment lines of the block (text after the
    ``:``, e.g. ``"HTTP_STATUS/429"``); ``raw`` the undecoded data bytes, set (with ``data``
    left ``""``) in the events :meth:`SSEDecoder.feed_raw` returns.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None
    comments: tuple[str, ...] = ()
    raw: bytes | None = None

    def text(self) -> str:
        """The data as text: :attr:`data`, or :attr:`raw` decoded (invalid UTF-8 replaced)."""
        raw = self.raw
        return self.data if raw is None else raw.decode("utf-8", "replace")


SSEItem = ServerSentEvent | bytes
"""What :meth:`SSEDecoder.feed_raw` returns: an event, or a *plain* event's data bytes alone.

A plain event is of type ``message``, has no comments and no ``retry``, and the last event ID
is ``""`` when it is dispatched: the bytes ``b`` stand for ``ServerSentEvent(raw=b)``.
"""


def as_event(item: SSEItem) -> ServerSentEvent:
    """``item`` as a :class:`ServerSentEvent` (plain data bytes become ``ServerSentEvent(raw=...)``)."""
    return ServerSentEvent(raw=item) if type(item) is bytes else item  # type: ignore[return-value]


_Fields = tuple[bytes | None, int | None, list[bytes], str, int]
"""An event's fields: event type, retry, comments, last event ID, size so far."""


def _text(item: SSEItem) -> ServerSentEvent:
    """``item`` with its data decoded into ``data`` (invalid UTF-8 replaced)."""
    if type(item) is bytes:
        return ServerSentEvent(data=item.decode("utf-8", "replace"))
    e: ServerSentEvent = item  # type: ignore[assignment]
    return ServerSentEvent(e.event, e.text(), e.id, e.retry, e.comments)


class SSEDecoder:
    """Incremental ``text/event-stream`` parser, in one mode.

    Feed body chunks with :meth:`feed_raw` (or :meth:`feed`) as they arrive and call
    :meth:`close` at the end of the body; each returns the events that call completed.

    **The WHATWG rules**: LF, CR and CRLF line ends (a CRLF may be split across chunks), one
    leading BOM stripped, ``:`` comment lines, a line without a colon being a field name with
    an empty value, one space after the colon stripped, ``data`` lines joined by ``"\\n"``,
    dispatch at a blank line when some ``data`` line was seen, ``id`` values containing NUL
    ignored, ``retry`` only when all ASCII digits (more than 18 significant digits: ignored),
    unknown fields ignored, invalid UTF-8 replaced by U+FFFD. Comment lines go into the event's
    ``comments``; a blank line clears them with the event type and ``retry``.

    **Frames without blank lines.** Some servers omit the blank line between frames, and some
    write bare JSON error objects into the stream. Three rules, which never change a stream
    whose frames are JSON values each ended by a blank line, read them:

    1. While the pending data (the ``data`` lines so far, joined by LF) is *one complete JSON
       object or array* (valid for msgspec, optionally surrounded by whitespace), a ``data`` line with a non-blank value, or a bare JSON
       line (rule 2), starts a new frame: the pending event is dispatched first, with the
       fields its block had when its data was complete; ``event``, ``id``, ``retry`` and
       comment lines seen since then belong to the new frame. If a blank line comes first,
       those lines apply to the pending event as WHATWG says. Data split over several lines
       (pretty-printed, or split mid-value) never forms a complete value before its last line,
       so it is still joined.
    2. A line starting with ``{`` is a bare JSON line: it is dispatched at once as its own
       ``message`` event whose data is the whole line (the WHATWG rules would ignore it as an
       unknown field); an event being built around it continues.
    3. At the end of the body the last line is read even without its line end; then a
       pending event whose data is a complete JSON value is dispatched. Any other unfinished
       event is discarded (WHATWG).

    The constructor's ``data_line_events``, ``json_line_events`` and ``raw_data`` are
    accepted and ignored (the one mode reads what they used to switch on).

    ``max_line_bytes`` bounds a line and ``max_event_bytes`` an event (its data with the LFs
    between lines, plus each comment line's length and ``COMMENT_COST``); exceeding either
    raises :class:`~aiollm.errors.ProtocolError`. After an error, or after :meth:`close`,
    :meth:`feed` raises ``ProtocolError``.
    """

    __slots__ = (
        "_closed",
        "_comment_cache",
        "_comments",
        "_cr",
        "_data",
        "_error",
        "_event",
        "_event_cache",
        "_fast_limit",
        "_frozen",
        "_head",
        "_jdata",
        "_jscan",
        "_jstat",
        "_last_id",
        "_max_event",
        "_max_line",
        "_parts",
        "_plen",
        "_reconnect",
        "_retry",
        "_size",
        "_started",
    )

    def __init__(
        self,
        *,
        data_line_events: bool = False,
        json_line_events: bool = False,
        max_line_bytes: int = DEFAULT_MAX_BYTES,
        max_event_bytes: int = DEFAULT_MAX_BYTES,
        raw_data: bool = False,
    ) -> None:
        if max_line_bytes < 1 or max_event_bytes < 1:
            raise ValueError("max_line_bytes and max_event_bytes must be positive")
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._fast_limit = min(max_line_bytes, max_event_bytes)  # no block here is too big
        self._closed = False
        self._error: ProtocolError | None = None  # found after events: raised by the next call
        self._started = False  # BOM check done
        self._head = b""  # first bytes while they may still be a split BOM
        self._cr = False  # the last chunk ended with CR: drop a leading LF of the next one
        self._parts: list[bytes] = []  # the unterminated last line
        self._plen = 0
        # The event being built (reset at each blank line).
        self._data: bytes | bytearray | None = None
        self._event: bytes | None = None
        self._retry: int | None = None
        self._comments: list[bytes] = []
        self._size = 0
        self._jstat = 0  # pending data: 0 not known to be complete JSON, 1 complete, 2 never
        # The pending event's fields when its data was complete (rule 1), while undecided.
        self._frozen: _Fields | None = None
        # The incremental JSON scan of ``_jdata``: (position, depth or -1 before it, in_str).
        self._jdata: bytes | bytearray | None = None
        self._jscan: tuple[int, int, bool] = (0, -1, False)
        # The last event type and single comment seen, decoded.
        self._event_cache: tuple[bytes, str] = (b"message", "message")
        self._comment_cache: tuple[bytes, tuple[str, ...]] = (b"", ("",))
        # Stream state.
        self._last_id = ""
        self._reconnect: int | None = None

    @property
    def last_event_id(self) -> str:
        """The last event ID buffer: the latest ``id`` field value (``""`` if none)."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The latest valid ``retry`` value seen anywhere in the stream (milliseconds)."""
        return self._reconnect

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the body; return the events it completed, data as text."""
        return [_text(item) for item in self.feed_raw(data)]

    def feed_raw(self, data: bytes) -> list[SSEItem]:
        """Parse the next chunk of the body; return the events it completed, data as bytes.

        A plain event comes as its data bytes alone (see :data:`SSEItem`), any other as a
        :class:`ServerSentEvent` with ``raw`` set; :func:`as_event` makes an event of either.
        """
        if self._closed:
            self._raise_pending()
            raise ProtocolError("SSEDecoder.feed() called after close() or after an error")
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            return []
        if not self._started:
            head = self._head + data
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return []
            self._started = True
            self._head = b""
            data = head[3:] if head.startswith(_BOM) else head
            if not data:
                return []
        if self._cr:
            self._cr = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        if b"\r" in data:
            # CR, LF and CRLF are each one line end: make them all LF. A CR that ends the
            # chunk is a line end now; remember it to drop the LF of a split CRLF.
            self._cr = data[-1] == 0x0D
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in data:
            self._parts.append(data)
            self._plen += len(data)
            if self._plen > self._max_line:
                self._closed = True
                raise self._line_too_long(self._plen)
            return []
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts = []
        out: list[SSEItem] = []
        try:
            data = self._fast_lane(data, out)
            lines = data.split(b"\n")
            tail = lines.pop()
            self._lines(lines, out)
            if len(tail) > self._max_line:
                raise self._line_too_long(len(tail))
        except ProtocolError as exc:
            self._closed = True
            if not out:
                raise
            self._error = exc
            return out
        if tail:
            self._parts.append(tail)
        self._plen = len(tail)
        return out

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the body; return the events it completes, data as text."""
        return [_text(item) for item in self.close_raw()]

    def close_raw(self) -> list[SSEItem]:
        """Signal the end of the body; return the events it completes, as :meth:`feed_raw`.

        The last line is read even without its line end; then an event whose data is a
        complete JSON value is dispatched, any other unfinished event discarded. Raises an
        error found earlier; calling it again returns ``[]``.
        """
        if self._closed:
            self._raise_pending()
            return []
        self._closed = True
        out: list[SSEItem] = []
        if self._parts:
            self._lines([b"".join(self._parts)], out)
        self._dispatch_at_end(out)
        self._parts = []
        self._data = None
        self._comments = []
        return out

    # -- internals ----------------------------------------------------------------------

    def _raise_pending(self) -> None:
        error = self._error
        if error is not None:
            self._error = None
            raise error

    def _line_too_long(self, size: int) -> ProtocolError:
        return ProtocolError(
            f"server-sent event line longer than max_line_bytes={self._max_line} "
            f"(at least {size} bytes without a line end); pass a larger "
            "SSEDecoder(max_line_bytes=...) if the server legitimately sends such lines"
        )

    def _event_too_big(self, size: int) -> ProtocolError:
        return ProtocolError(
            f"server-sent event larger than max_event_bytes={self._max_event} "
            f"(at least {size} bytes of data and comments before its blank line); pass a "
            "larger SSEDecoder(max_event_bytes=...) if the server legitimately sends such events"
        )

    def _fast_lane(self, data: bytes, out: list[SSEItem]) -> bytes:
        """Take the leading blocks that are each one ``data`` line, if all are; return the rest.

        With nothing pending and no last event ID, such blocks are plain events whose data is
        the line's value: one split gives them all. Any other shape is left to :meth:`_lines`.
        """
        if not data.startswith(b"data:") or self._data is not None or self._last_id:
            return data
        if self._event is not None or self._comments or self._retry is not None:
            return data
        j = data.rfind(b"\n\n")
        if j < 0 or j > self._fast_limit:
            return data
        region = data[:j]
        if region.startswith(b"data: "):
            pieces = region[6:].split(b"\n\ndata: ")
        elif b"\n\ndata: " in region:
            return data
        else:
            pieces = region[5:].split(b"\n\ndata:")
        if region.count(b"\n") != 2 * len(pieces) - 2:
            return data  # some block has another line, or blank lines come in a row
        out += pieces
        return data[j + 2 :]

    def _complete(self, data: bytes | bytearray) -> int:
        """Whether ``data`` is one complete JSON object or array: 1 yes, 2 never, 0 not yet.

        Incremental over calls with the same ``data`` object growing (the pending data), so
        each byte is scanned once; a value that closes is then checked once with msgspec.
        """
        if data is self._jdata:
            p, depth, in_str = self._jscan
        else:
            self._jdata = data
            p, depth, in_str = 0, -1, False
        n = len(data)
        if depth < 0:
            p = _WS.match(data, p).end()  # type: ignore[union-attr]
            if p >= n:
                self._jscan = (p, -1, False)
                return 0
            if data[p] != 0x7B and data[p] != 0x5B:
                return 2
            depth = 1
            p += 1
        p, depth, in_str = _scan_json(data, p, depth, in_str)
        if depth > 0 or in_str:
            self._jscan = (p, depth, in_str)
            return 0
        if _WS.match(data, p).end() < n:  # type: ignore[union-attr]
            return 2
        try:
            msgspec.json.decode(data, type=msgspec.Raw)
        except (msgspec.DecodeError, RecursionError):
            return 2
        return 1

    def _make(
        self,
        data: bytes | bytearray,
        event: bytes | None,
        retry: int | None,
        comments: list[bytes],
        last_id: str,
    ) -> SSEItem:
        """The item for an event with these fields."""
        value = data if type(data) is bytes else bytes(data)
        if not event or event == b"message":
            if not comments and retry is None and not last_id:
                return value
            name = "message"
        elif event == self._event_cache[0]:
            name = self._event_cache[1]
        else:
            name = event.decode("utf-8", "replace")
            self._event_cache = (event, name)
        if not comments:
            texts: tuple[str, ...] = ()
        elif len(comments) == 1:
            if comments[0] != self._comment_cache[0]:
                self._comment_cache = (comments[0], (comments[0].decode("utf-8", "replace"),))
            texts = self._comment_cache[1]
        else:
            texts = tuple(c.decode("utf-8", "replace") for c in comments)
        return ServerSentEvent(name, "", last_id, retry, texts, value)

    def _dispatch_at_end(self, out: list[SSEItem]) -> None:
        """Rule 3: dispatch the pending event if its data is a complete JSON value."""
        data = self._data
        frozen = self._frozen
        if frozen is not None:
            out.append(self._make(data, *frozen[:4]))  # type: ignore[arg-type]
        elif data is not None and self._complete(data) == 1:
            out.append(self._make(data, self._event, self._retry, self._comments, self._last_id))

    def _lines(self, lines: list[bytes], out: list[SSEItem]) -> None:
        """Interpret whole lines (without their line ends) in order."""
        max_line = self._max_line
        if len(lines) > 1 and max(map(len, lines)) > max_line:
            for i, line in enumerate(lines):  # the lines before the long one count
                if len(line) > max_line:
                    self._lines(lines[:i], out)
                    raise self._line_too_long(len(line))
        max_event = self._max_event
        append = out.append
        data = self._data
        event = self._event
        comments = self._comments
        size = self._size
        jstat = self._jstat
        frozen = self._frozen
        try:
            for line in lines:
                if not line:  # a blank line: dispatch
                    if data is not None:
                        retry = self._retry
                        if frozen is not None:  # the lines since apply to this event
                            if event is None:
                                event = frozen[0]
                            if retry is None:
                                retry = frozen[1]
                            comments = frozen[2] + comments
                            frozen = None
                        if event is None and retry is None and not comments and not self._last_id:
                            append(data if type(data) is bytes else bytes(data))
                        else:
                            append(self._make(data, event, retry, comments, self._last_id))
                        data = None
                        jstat = 0
                    if event is not None or comments or self._retry is not None:
                        event = None
                        comments = []
                        self._retry = None
                    size = 0
                    continue
                if len(line) > max_line:
                    raise self._line_too_long(len(line))
                if data is not None and jstat != 2:
                    # Rule 1: after a complete JSON value, does this line start a new frame?
                    if jstat == 0:
                        jstat = self._complete(data)
                        if jstat == 1:
                            frozen = (event, self._retry, comments, self._last_id, size)
                            event = None
                            comments = []
                            self._retry = None
                    if jstat == 1 and (
                        line[0] == 0x7B
                        or (line.startswith(b"data:") and bool(line[5:].strip(b" \t")))
                    ):
                        assert frozen is not None
                        append(self._make(data, *frozen[:4]))
                        size -= frozen[4]
                        frozen = None
                        data = None
                        jstat = 0
                c = line[0]
                if c == 0x3A:  # ":" a comment
                    size += len(line) + COMMENT_COST
                    if size > max_event:
                        raise self._event_too_big(size)
                    comments.append(line[1:])
                    continue
                if c == 0x64 and line.startswith(b"data:"):
                    value = line[5:]
                    if value[:1] == b" ":
                        value = value[1:]
                elif c == 0x7B:  # "{" a bare JSON line: its own event (rule 2)
                    lid = self._last_id
                    append(ServerSentEvent(raw=line, id=lid) if lid else line)
                    continue
                else:
                    name, _, value = line.partition(b":")
                    if value[:1] == b" ":
                        value = value[1:]
                    if name != b"data":
                        if name == b"event":
                            event = value
                        elif name == b"id":
                            if b"\x00" not in value:
                                self._last_id = value.decode("utf-8", "replace")
                        elif name == b"retry" and value.isdigit():  # ASCII digits only
                            digits = value.lstrip(b"0")
                            if len(digits) <= 18:
                                self._retry = self._reconnect = int(digits or b"0")
                        continue
                size += len(value) + 1
                if size > max_event:
                    raise self._event_too_big(size - 1)
                if data is None:
                    data = value
                else:
                    if type(data) is bytes:
                        data = bytearray(data)
                    data += b"\n"
                    data += value
        finally:
            self._data = data
            self._event = event
            self._comments = comments
            self._size = size
            self._jstat = jstat
            self._frozen = frozen


# -- JSON ---------------------------------------------------------------------------------

_SCALAR: Final = re.compile(rb'[^ \t\r\n{}\[\]",:]*')
_SCALAR_OK: Final = re.compile(
    rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null"
)


class JSONFramer:
    """Incremental splitter of a body made of JSON documents.

    :meth:`feed` takes body chunks and returns the raw bytes of every document completed so
    far (without surrounding whitespace), for the caller to decode; :meth:`close` ends the
    body and returns a final top-level scalar, if any. It reads one document (possibly
    pretty-printed), NDJSON (each line returned as soon as it is complete) and documents back
    to back with or without whitespace between them. A leading UTF-8 BOM is skipped.

    It finds document boundaries by counting brackets outside strings; it does not validate
    the documents (the caller's decoder does), except that a top-level scalar must be a JSON
    number, ``true``, ``false``, ``null`` or a string, and a closing bracket, ``,`` or ``:``
    between documents is an error. Two top-level numbers or literals need whitespace between.

    Raises :class:`~aiollm.errors.ProtocolError` for a document larger than
    ``max_document_bytes``, for invalid bytes between documents, and at :meth:`close` for a
    truncated document. The documents a :meth:`feed` call completed before such bytes are
    returned first; the next call raises. After an error, or after :meth:`close`,
    :meth:`feed` raises ``ProtocolError``.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_depth",
        "_error",
        "_in_str",
        "_max",
        "_pos",
        "_scalar",
        "_start",
        "_started",
    )

    def __init__(self, *, max_document_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_document_bytes < 1:
            raise ValueError("max_document_bytes must be positive")
        self._max = max_document_bytes
        self._buf = bytearray()
        self._pos = 0  # scan position in _buf
        self._start = -1  # start of the open document in _buf; -1 between documents
        self._depth = 0
        self._in_str = False
        self._scalar = False  # the open document is a top-level number or literal
        self._started = False  # leading BOM check done
        self._closed = False
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Scan the next chunk of the body; return the documents it completed."""
        if self._closed:
            self._raise_pending()
            raise ProtocolError("JSONFramer.feed() called after close() or after an error")
        if not data:
            return []
        self._buf += data
        if not self._started:
            if len(self._buf) < 3 and _BOM.startswith(self._buf):
                return []
            self._skip_bom()
        out: list[bytes] = []
        try:
            self._scan(out)
        except ProtocolError as exc:
            self._closed = True
            if not out:
                raise
            self._error = exc
        return out

    def close(self) -> list[bytes]:
        """Signal the end of the body; return a final top-level scalar document, if any.

        Raises :class:`~aiollm.errors.ProtocolError` when the body ends inside a document, or
        an error found earlier. Calling it again returns ``[]``.
        """
        if self._closed:
            self._raise_pending()
            return []
        self._closed = True
        if not self._started:
            self._skip_bom()
        out: list[bytes] = []
        if self._start >= 0:
            buf = self._buf
            if self._scalar:
                self._emit_scalar(bytes(buf[self._start :]), out, final=True)
            else:
                kind = "string" if self._in_str else "object or array"
                raise ProtocolError(
                    f"truncated JSON body: the body ended inside a {kind} "
                    f"({len(buf) - self._start} bytes since the document began)"
                )
        elif self._buf.startswith(_BOM[:1]):
            raise ProtocolError("truncated JSON body: it is an incomplete byte order mark")
        self._buf = bytearray()
        return out

    def _raise_pending(self) -> None:
        error = self._error
        if error is not None:
            self._error = None
            raise error

    def _skip_bom(self) -> None:
        self._started = True
        if self._buf.startswith(_BOM):
            del self._buf[:3]

    def _too_big(self, size: int) -> ProtocolError:
        return ProtocolError(
            f"JSON document larger than max_document_bytes={self._max} "
            f"(at least {size} bytes); pass a larger JSONFramer(max_document_bytes=...) "
            "if the server legitimately sends such documents"
        )

    def _emit_scalar(self, tok: bytes, out: list[bytes], *, final: bool) -> None:
        if _SCALAR_OK.fullmatch(tok) is None:
            if final:
                raise ProtocolError(
                    f"truncated JSON body: it ends with {tok[:40]!r}, which is not a "
                    "complete JSON value"
                )
            raise ProtocolError(f"invalid JSON value at the top level: {tok[:40]!r}")
        if len(tok) > self._max:
            raise self._too_big(len(tok))
        out.append(tok)

    def _scan(self, out: list[bytes]) -> None:
        buf = self._buf
        n = len(buf)
        p = self._pos
        start = self._start
        try:
            while True:
                if start < 0:
                    # Between documents: skip whitespace, look at the first byte.
                    p = _WS.match(buf, p).end()  # type: ignore[union-attr]
                    if p >= n:
                        break
                    c = buf[p]
                    if c in b"}],:":
                        raise ProtocolError(
                            f"invalid JSON body: unexpected {chr(c)!r} between documents"
                        )
                    start = p
                    if c == 0x7B or c == 0x5B:  # { [
                        self._depth = 1
                        p += 1
                    elif c == 0x22:  # "
                        self._in_str = True
                        p += 1
                    else:
                        self._scalar = True
                if self._scalar:
                    e = _SCALAR.match(buf, p).end()  # type: ignore[union-attr]
                    if e >= n:
                        p = n
                        break  # it may continue in the next chunk
                    self._emit_scalar(bytes(buf[start:e]), out, final=False)
                    self._scalar = False
                    start = -1
                    p = e
                    continue
                p, self._depth, self._in_str = _scan_json(buf, p, self._depth, self._in_str)
                if self._depth > 0 or self._in_str:
                    break  # the end of the buffer inside a document
                if p - start > self._max:
                    raise self._too_big(p - start)
                out.append(bytes(buf[start:p]))
                start = -1
        finally:
            # Drop what is consumed; keep the open document only.
            keep = start if start >= 0 else p
            if keep:
                del buf[:keep]
                p -= keep
                if start >= 0:
                    start = 0
            self._pos = p
            self._start = start
        if start >= 0 and len(buf) > self._max:
            raise self._too_big(len(buf))


# -- sniffing -----------------------------------------------------------------------------


class BodyKind(enum.Enum):
    """What framing a response body needs: SSE, JSON, or neither (e.g. an HTML page)."""

    SSE = "sse"
    JSON = "json"
    OTHER = "other"


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
            return BodyKind.SSE
        if media in _JSON_MEDIA_TYPES or (media.endswith("+json") and "/" in media):
            return BodyKind.JSON
    rest = head[3:] if head.startswith(_BOM) else head
    rest = rest.lstrip(b" \t\r\n")
    if rest.startswith((b"{", b"[")):
        return BodyKind.JSON
    if rest.startswith(_SSE_HEADS):
        return BodyKind.SSE
    if final or len(head) >= SNIFF_MAX_BYTES:
        return BodyKind.OTHER
    if not rest or (len(head) < 3 and _BOM.startswith(head)):
        return None
    if any(prefix.startswith(rest) for prefix in _SSE_HEADS):
        return None
    return BodyKind.OTHER
