"""The server-sent events decoder: :class:`SSEDecoder` and what it returns."""

from __future__ import annotations

import functools
from itertools import repeat
from operator import itemgetter
from typing import Final

import msgspec

from ..errors import ProtocolError
from ._deferred import DeferredError
from ._json import BOM, DEFAULT_MAX_BYTES, JSONValueScan

COMMENT_COST: Final = 64
"""What a kept comment line counts against ``max_event_bytes`` beyond its length."""

_MIN_LANE_LINES: Final = 16  # fewer lines do not pay for the fast lane's set-up


class ServerSentEvent(msgspec.Struct, gc=False):
    """One dispatched server-sent event.

    ``event``: the event type; ``data``: the ``data`` lines joined by ``"\\n"``; ``id``: the
    stream's last event ID at dispatch; ``retry``: this block's valid ``retry`` value;
    ``comments``: the block's comment lines without the ``:``; ``raw``: the data bytes (with
    ``data`` left ``""``) in the events :meth:`SSEDecoder.feed_raw` returns.
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


_Fields = tuple[bytes | None, int | None, list[bytes], str, int]  # event, retry, comments, id, size


def _text(item: SSEItem) -> ServerSentEvent:
    """``item`` with its data decoded into ``data`` (invalid UTF-8 replaced)."""
    if type(item) is bytes:
        return ServerSentEvent(data=item.decode("utf-8", "replace"))
    e: ServerSentEvent = item  # type: ignore[assignment]
    return ServerSentEvent(e.event, e.text(), e.id, e.retry, e.comments)


class SSEDecoder(DeferredError):
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
       object or array* (valid for msgspec, whitespace around it allowed), a ``data`` line
       with a non-blank value, or a bare JSON line (rule 2), starts a new frame: the pending
       event is dispatched first, with the fields its block had when its data was complete;
       ``event``, ``id``, ``retry`` and comment lines seen since then belong to the new
       frame. If a blank line comes first, those lines apply to the pending event as WHATWG
       says. Data split over several lines (pretty-printed, or split mid-value) never forms a
       complete value before its last line, so it is still joined.
    2. A line starting with ``{`` is a bare JSON line: it is dispatched at once as its own
       ``message`` event whose data is the whole line (the WHATWG rules would ignore it as an
       unknown field); an event being built around it continues.
    3. At the end of the body the last line is read even without its line end; then a
       pending event whose data is a complete JSON value is dispatched. Any other unfinished
       event is discarded (WHATWG).

    ``max_line_bytes`` bounds a line and ``max_event_bytes`` an event (its data with the LFs
    between lines, plus each comment line's length and ``COMMENT_COST``); exceeding either
    raises :class:`~aiollm.errors.ProtocolError`. After an error, or after :meth:`close`,
    :meth:`feed` raises ``ProtocolError``.
    """

    # The state starts at these class defaults (a decoder per response: what a stream never
    # changes is never set on it).
    _closed = False
    _error: ProtocolError | None = None  # found after events: raised by the next call
    _started = False  # BOM check done
    _boundary = True  # the last line read was blank: a block starts
    _head = b""  # first bytes while they may still be a split BOM
    _cr = False  # the last chunk ended with CR: drop a leading LF of the next one
    _plen = 0  # the length of the unterminated last line
    # The event being built (reset at each blank line).
    _data: bytes | bytearray | None = None
    _event: bytes | None = None
    _retry: int | None = None
    _size = 0
    _jstat = 0  # pending data: 0 not known to be complete JSON, 1 complete, 2 never
    # The pending event's fields when its data was complete (rule 1), while undecided.
    _frozen: _Fields | None = None
    _scan: JSONValueScan | None = None  # is the pending data complete JSON? (made when asked)
    # The last event type and single comment seen, decoded.
    _event_cache: tuple[bytes, str] = (b"message", "message")
    _comment_cache: tuple[bytes, tuple[str, ...]] = (b"", ("",))
    # Stream state.
    _last_id = ""
    _reconnect: int | None = None

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_BYTES, max_event_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_line_bytes < 1 or max_event_bytes < 1:
            raise ValueError("max_line_bytes and max_event_bytes must be positive")
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._parts: list[bytes] = []  # the unterminated last line
        self._comments: list[bytes] = []  # of the event being built

    def _complete(self, data: bytes | bytearray) -> int:
        """Whether the pending data is one complete JSON value (see :class:`JSONValueScan`)."""
        scan = self._scan
        if scan is None:
            scan = self._scan = JSONValueScan()
        return scan.status(data)

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
            if len(head) < 3 and BOM.startswith(head):
                self._head = head
                return []
            self._started = True
            self._head = b""
            data = head[3:] if head.startswith(BOM) else head
            if not data:
                return []
        if self._cr:
            self._cr = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        if 13 in data:  # CR (an int needle: a bytes one costs CPython a caught TypeError)
            # CR, LF and CRLF are each one line end: make them all LF. A CR that ends the
            # chunk is a line end now; remember it to drop the LF of a split CRLF.
            self._cr = data[-1] == 0x0D
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if 10 not in data:  # LF
            self._parts.append(data)
            self._plen += len(data)
            if self._plen > self._max_line:
                self._closed = True
                raise self._line_too_long()
            return []
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts = []
        out: list[SSEItem] = []
        try:
            if len(data) > self._max_line:  # rare: some line may be too long
                lines = data.split(b"\n")
                for i, line in enumerate(lines):  # the lines before the long one count
                    if len(line) > self._max_line:
                        self._interpret(lines[:i], out)
                        raise self._line_too_long()
            if not self._last_id:
                data = self._data_blocks(data, out)
            lines = data.split(b"\n")
            tail = lines.pop()
            if lines:
                self._lines(lines, out, len(data))
        except ProtocolError as exc:
            self._fail(exc, out)
            return out
        if tail:
            self._parts.append(tail)
        self._plen = len(tail)
        return out

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the body; return the events it completes, data as text."""
        return [_text(item) for item in self.close_raw()]

    def close_raw(self) -> list[SSEItem]:
        """Signal the end of the body (rule 3); return the events it completes, as ``feed_raw``.

        Raises an error found earlier; calling it again returns ``[]``.
        """
        if self._closed:
            self._raise_pending()
            return []
        self._closed = True
        out: list[SSEItem] = []
        if self._parts:
            self._interpret([b"".join(self._parts)], out)
        data, frozen = self._data, self._frozen
        if frozen is not None:
            out.append(self._make(data, *frozen[:4]))  # type: ignore[arg-type]
        elif data is not None and self._complete(data) == 1:
            out.append(self._make(data, self._event, self._retry, self._comments, self._last_id))
        self._parts, self._data, self._comments = [], None, []
        return out

    def _line_too_long(self) -> ProtocolError:
        return ProtocolError(
            f"server-sent event line longer than max_line_bytes={self._max_line}; pass a "
            "larger SSEDecoder(max_line_bytes=...) if the server legitimately sends such lines"
        )

    def _event_too_big(self, size: int) -> ProtocolError:
        return ProtocolError(
            f"server-sent event larger than max_event_bytes={self._max_event} "
            f"(at least {size} bytes of data and comments before its blank line); pass a "
            "larger SSEDecoder(max_event_bytes=...) if the server legitimately sends such events"
        )

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

    def _lines(self, lines: list[bytes], out: list[SSEItem], nbytes: int) -> None:
        """Interpret whole lines (without their line ends; ``nbytes`` in all) in order."""
        start = 0
        if len(lines) >= _MIN_LANE_LINES:
            if not self._boundary:  # first the end of the block in progress
                start = lines.index(b"") + 1 if b"" in lines else len(lines)
                self._interpret(lines[:start], out)
            end = len(lines)
            while end > start and lines[end - 1]:
                end -= 1  # lines[start:end] are whole blocks, each ended by a blank line
            if end - start >= _MIN_LANE_LINES:
                start += self._same_shape(lines[start:end], out, nbytes)
        if start < len(lines):
            self._interpret(lines[start:] if start else lines, out)

    def _data_blocks(self, data: bytes, out: list[SSEItem]) -> bytes:
        """The fast lane's simplest shape, blocks of one ``data`` line, split out of the bytes.

        Where a block starts (after the end of the block in progress), with no last event ID:
        if every block up to the last blank line is one ``data:`` line (all with a space after
        the colon, or all without), their values are the events. Returns the bytes left.
        """
        start = 0
        if not self._boundary:  # the end of the block in progress, if data blocks follow
            start = 1 if data[:1] == b"\n" else data.find(b"\n\n") + 2
            if start < 1 or not data.startswith(b"data:", start):
                return data
        elif not data.startswith(b"data:"):
            return data
        j = data.rfind(b"\n\n")
        if j < start or j - start > self._max_line or j - start > self._max_event:
            return data
        if data.startswith(b"data: ", start):  # (each copy of a chunk costs its size)
            values = data[start + 6 : j].split(b"\n\ndata: ")
        else:
            region = data[start + 5 : j]
            if region.find(b"\n\ndata: ") >= 0:  # (``in`` would raise and clear a TypeError)
                return data
            values = region.split(b"\n\ndata:")
        if 10 in b"".join(values):  # an LF in a value (a join and a memchr cost less than a count)
            return data  # a block of another shape, or blank lines in a row
        if start:
            self._interpret(data[: start - 1].split(b"\n"), out)
            if self._last_id:  # set by the block in progress: the events carry it
                return data[start:]
        out += values
        return data[j + 2 :]

    def _same_shape(self, lines: list[bytes], out: list[SSEItem], nbytes: int) -> int:
        """The fast lane: blocks of one shape, a column at a time; returns the lines it read.

        ``lines`` are whole blocks, each ended by a blank line, the first starting a block.
        Seen as a table with one row per block, the lane applies when the last column holds
        ``data:`` lines (all with a space after the colon, or all without), and every other
        column one repeated line, except at most one column of ``id:`` lines (so a block is
        header lines, then one ``data`` line). The header lines but the id line give the
        event type, retry and comments all the blocks share (:func:`_header_fields`, which
        reads them as :meth:`_interpret` does); each block then costs a slice (and its id).
        Returns 0 if it does not apply.
        """
        period = lines.index(b"") + 1
        n = len(lines)
        k = n // period
        if period < 2 or n % period or lines[period - 1 :: period].count(b"") != k:
            return 0
        col = lines[period - 2 :: period]
        if all(map(bytes.startswith, col, repeat(b"data:{"))):
            cut = 5  # JSON data: one check for the prefix and for no space
        elif all(map(bytes.startswith, col, repeat(b"data: "))):
            cut = 6
        elif all(map(bytes.startswith, col, repeat(b"data:"))) and not any(
            map(bytes.startswith, col, repeat(b" "), repeat(5))
        ):
            cut = 5
        else:
            return 0
        ids: list[str] | None = None
        header: list[bytes] = []  # the first block's header lines, but its id line
        size = 1 - cut  # an event's size, less its data line's length
        for c in range(period - 2):
            column = lines[c::period]
            line = column[0]
            if line[:1] == b":":
                size += len(line) + COMMENT_COST
            if line.partition(b":")[0] != b"id":
                header.append(line)
                if column.count(line) != k:
                    return 0
            else:
                joined = b"\n".join(column)
                if ids is not None or len(line) == 2 or 0 in joined:
                    return 0
                # One decode: the separators are ASCII, so this is what decoding each gives.
                text = joined.decode("utf-8", "replace")
                spaced = text[3:4] == " "
                ids = text[4:].split("\nid: ") if spaced else text[3:].split("\nid:")
                if len(ids) != k or (not spaced and "\nid: " in text):
                    return 0
        if nbytes + size > self._max_event and max(map(len, col)) + size > self._max_event:
            return 0  # some event is too big: the general path says which
        fields = _header_fields(tuple(header))
        if fields is None:
            return 0  # more data lines, or a bare JSON line: not this lane's shape
        event, retry, comments, event_cache, comment_cache = fields
        if retry is not None:
            self._reconnect = retry
        # Blocks read line by line (at the edges of a read) get the same objects.
        if event_cache is not None:
            self._event_cache = event_cache
        if comment_cache is not None:
            self._comment_cache = comment_cache
        values = list(map(itemgetter(slice(cut, None)), col))
        plain = event == "message" and retry is None and not comments
        if ids is None:
            if plain and not self._last_id:
                out += values
                return n
            ids = [self._last_id] * k
        elif plain and "" in ids:
            if any(ids):
                return 0  # some are plain events, which come as their bytes
            self._last_id = ""
            out += values
            return n
        else:
            self._last_id = ids[-1]
        out += map(
            ServerSentEvent, repeat(event), repeat(""), ids, repeat(retry), repeat(comments), values
        )
        return n

    def _interpret(self, lines: list[bytes], out: list[SSEItem]) -> None:
        """Interpret whole lines (without their line ends, none too long) one at a time."""
        max_event = self._max_event
        append = out.append
        make = self._make
        data, event, retry, comments = self._data, self._event, self._retry, self._comments
        size, jstat, frozen, last_id = self._size, self._jstat, self._frozen, self._last_id
        try:
            for line in lines:
                if not line:  # a blank line: dispatch
                    if data is not None:
                        if frozen is not None:  # the lines since apply to this event
                            if event is None:
                                event = frozen[0]
                            if retry is None:
                                retry = frozen[1]
                            comments = frozen[2] + comments
                            frozen = None
                        if event is None and retry is None and not comments and not last_id:
                            append(data if type(data) is bytes else bytes(data))
                        else:
                            append(make(data, event, retry, comments, last_id))
                        data = None
                        jstat = 0
                    if event is not None or comments or retry is not None:
                        event = retry = None
                        comments = []
                    size = 0
                    continue
                if data is not None and jstat != 2:
                    # Rule 1: after a complete JSON value, does this line start a new frame?
                    if jstat == 0:
                        jstat = self._complete(data)
                        if jstat == 1:
                            frozen = (event, retry, comments, last_id, size)
                            event = retry = None
                            comments = []
                    if jstat == 1 and (
                        line[0] == 0x7B
                        or (line.startswith(b"data:") and bool(line[5:].strip(b" \t")))
                    ):
                        assert frozen is not None
                        append(make(data, *frozen[:4]))
                        size -= frozen[4]
                        frozen = data = None
                        jstat = 0
                c = line[0]
                if c == 0x64 and line.startswith(b"data:"):
                    value = line[6:] if line[5:6] == b" " else line[5:]
                elif c == 0x3A:  # ":" a comment
                    size += len(line) + COMMENT_COST
                    if size > max_event:
                        raise self._event_too_big(size)
                    comments.append(line[1:])
                    continue
                elif c == 0x7B:  # "{" a bare JSON line: its own event (rule 2)
                    append(ServerSentEvent(raw=line, id=last_id) if last_id else line)
                    continue
                else:
                    name, _, value = line.partition(b":")
                    if value[:1] == b" ":
                        value = value[1:]
                    if name != b"data":
                        if name == b"event":
                            event = value
                        elif name == b"id":
                            if 0 not in value:
                                last_id = value.decode("utf-8", "replace")
                        elif name == b"retry" and value.isdigit():  # ASCII digits only
                            digits = value.lstrip(b"0")
                            if len(digits) <= 18:
                                retry = self._reconnect = int(digits or b"0")
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
            if lines:
                self._boundary = not lines[-1]
            self._data, self._event, self._retry, self._comments = data, event, retry, comments
            self._size, self._jstat, self._frozen, self._last_id = size, jstat, frozen, last_id


_Header = tuple[
    str,  # the event type
    int | None,  # retry
    tuple[str, ...],  # comments
    tuple[bytes, str] | None,  # the decoder's event type cache, if the type is not the default
    tuple[bytes, tuple[str, ...]] | None,  # its comment cache, for a single comment
]


def _header_fields(header: tuple[bytes, ...]) -> _Header | None:
    """What a block's header lines (none of them an ``id`` line) give its event: the event
    type, retry and comments, as :meth:`SSEDecoder._interpret` reads them (the fast lane
    reads a run of such blocks); None if the block would not be one event of its data line.

    A pure function of the lines: the answers for the last short headers seen are kept (a
    long one is read each time, so a server cannot make the cache hold much).
    """
    if sum(map(len, header)) > _MAX_KEPT_HEADER:
        return _read_header(header)
    return _kept_header(header)


def _read_header(header: tuple[bytes, ...]) -> _Header | None:
    out: list[SSEItem] = []
    decoder = SSEDecoder()
    try:
        decoder._interpret([*header, b"data:x", b""], out)
    except ProtocolError:  # a header over the default limits: the line path reads it
        return None
    if len(out) != 1:
        return None
    e = as_event(out[0])
    if e.raw != b"x" or e.id:
        return None
    return (
        e.event,
        e.retry,
        e.comments,
        decoder._event_cache if e.event is decoder._event_cache[1] else None,
        decoder._comment_cache if e.comments is decoder._comment_cache[1] else None,
    )


_MAX_KEPT_HEADER: Final = 512
_kept_header = functools.lru_cache(maxsize=64)(_read_header)
