"""Response body framing: bytes in, frames out (sans-IO).

This layer sits between the HTTP transport and the provider codecs. The transport hands
it raw body chunks exactly as they arrive, at arbitrary boundaries; the framers here
turn them into whole frames and keep nothing else:

* :class:`SSEDecoder` turns a ``text/event-stream`` body into :class:`ServerSentEvent`
  objects, following the WHATWG HTML "event stream interpretation" rules (with an
  opt-in relaxed mode for gateways that omit the blank line between frames).
* :class:`JSONFramer` splits a JSON body -- one document, possibly pretty-printed, or
  NDJSON, or documents back to back -- into the raw bytes of each document, for the
  codec to decode itself (with ``msgspec``).
* :func:`sniff_body` decides which of the two a response body is, from its
  ``Content-Type`` and, when that is unhelpful, its first bytes.

Everything here is pure computation on ``bytes``: no I/O, no event loop, no clock. The
only error any framer raises is :class:`~aiollm.errors.ProtocolError` (malformed or
truncated body, or a frame larger than the configured bound); after it is raised the
framer is unusable. Memory is bounded: a line, event or document larger than its limit
raises instead of being buffered.
"""

from __future__ import annotations

import enum
import re
from itertools import repeat
from typing import Final, cast

import msgspec

from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_BYTES",
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

_BOM: Final = b"\xef\xbb\xbf"
_NO_COMMENTS: Final[tuple[str, ...]] = ()


class ServerSentEvent(msgspec.Struct, gc=False):
    """One dispatched server-sent event.

    ``event`` is the event type (``"message"`` unless an ``event:`` field set it);
    ``data`` the ``data:`` lines joined by ``"\\n"``; ``id`` the *last event ID* of the
    stream when the event was dispatched (it persists across events until an ``id:``
    field changes it; ``""`` when never set); ``retry`` the reconnection time in
    milliseconds set by a ``retry:`` field in this event's block, else ``None``;
    ``comments`` the comment lines of this event's block (text after the leading
    ``:``, e.g. ``"HTTP_STATUS/429"``); ``raw`` the undecoded bytes of the data, set
    (with ``data`` left ``""``) only by an ``SSEDecoder(raw_data=True)``.
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

A plain event is of type ``message``, has no comments and no ``retry``, and the last event
ID is ``""`` when it is dispatched: the bytes ``b`` stand for ``ServerSentEvent(raw=b)``.
"""


def as_event(item: SSEItem) -> ServerSentEvent:
    """``item`` as a :class:`ServerSentEvent` (plain data bytes become ``ServerSentEvent(raw=...)``)."""
    return ServerSentEvent(raw=item) if type(item) is bytes else item  # type: ignore[return-value]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


# A run of same-shaped blocks is taken a column at a time only from this many blocks, in a
# region of at least this many lines: fewer do not pay for the set-up.
_MIN_RUN_BLOCKS: Final = 4
_MIN_RUN_LINES: Final = 16


class SSEDecoder:
    """Incremental ``text/event-stream`` parser.

    Feed body chunks with :meth:`feed` as they arrive and call :meth:`close` at the end
    of the body; both return the events completed by that call. The default mode follows
    the WHATWG HTML event stream interpretation exactly: LF, CR and CRLF line ends (a
    CRLF may be split across chunks), one leading BOM stripped, ``:`` comment lines, a
    line without a colon being a field name with an empty value, one space after the
    colon stripped, ``data`` lines joined by ``"\\n"``, dispatch at a blank line only
    (and only when some ``data`` line was seen), ``id`` values containing NUL ignored,
    ``retry`` only when all ASCII digits, unknown fields ignored, invalid UTF-8 replaced
    by U+FFFD. An event not ended by a blank line when the body ends is discarded.

    Comment lines are collected into the next dispatched event's ``comments``; a blank
    line clears them (and the event type and ``retry``) whether or not it dispatched an
    event, so a block of keep-alive comments does not leak into the next event.

    With ``data_line_events=True`` (for gateways that omit the blank line between
    frames) every ``data`` line dispatches one event at once, carrying the event type,
    retry and comments seen since the previous dispatch; blank lines then dispatch
    nothing, and :meth:`close` also dispatches a final ``data`` line that lacks its line
    end.

    With ``json_line_events=True`` (for servers that write a bare JSON error object into
    an event stream, e.g. Qianfan's ``{"error_code":110,...}``) a line that starts with
    ``{`` is dispatched at once as its own ``message`` event whose data is the whole line,
    instead of being read as an unknown field and ignored; :meth:`close` dispatches such a
    line also when it lacks its line end.

    With ``raw_data=True`` (for consumers that parse the data themselves, e.g. as JSON)
    every event's ``data`` is ``""`` and its ``raw`` holds the undecoded bytes that
    would otherwise have been decoded into ``data`` (``data`` lines joined by ``b"\\n"``,
    one leading space stripped); use ``event.text()`` for the text. Everything else is
    the same.

    ``max_line_bytes`` bounds one line (bytes since the last line end) and
    ``max_event_bytes`` one event (its data, plus the text of its comments); exceeding
    either raises :class:`~aiollm.errors.ProtocolError`. After a ``ProtocolError``, or
    after :meth:`close`, :meth:`feed` raises ``ProtocolError``.
    """

    __slots__ = (
        "_closed",
        "_comment_cache",
        "_comments",
        "_cr",
        "_data",
        "_data_line_events",
        "_event",
        "_event_cache",
        "_event_retry",
        "_fast_limit",
        "_head",
        "_json_lines",
        "_last_id",
        "_max_event",
        "_max_line",
        "_parts",
        "_plen",
        "_raw",
        "_reconnect",
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
        self._data_line_events = data_line_events
        self._json_lines = json_line_events
        self._raw = raw_data
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        # A region no longer than this cannot hold an over-limit line or event.
        self._fast_limit = min(max_line_bytes, max_event_bytes)
        self._closed = False
        self._started = False  # BOM check done
        self._head = b""  # first bytes while they may still be a split BOM
        self._cr = False  # last chunk ended with CR: drop a leading LF of the next one
        self._parts: list[bytes] = []  # the unterminated last line, LF-normalized
        self._plen = 0
        # Event block state (reset at every blank line).
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self._comments: tuple[str, ...] = _NO_COMMENTS
        self._event_retry: int | None = None
        # The last ``event`` line and comment line seen, with their decoded meaning (see
        # _run): b"" never matches a line that reaches them.
        self._event_cache: tuple[bytes, str] = (b"", "")
        self._comment_cache: tuple[bytes, tuple[str, ...]] = (b"", _NO_COMMENTS)
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

    # -- public API -------------------------------------------------------------------

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the body; return the events it completed."""
        items = self.feed_raw(data)
        if self._raw:
            return [as_event(item) for item in items]
        return cast("list[ServerSentEvent]", items)  # only raw_data mode yields bytes

    def feed_raw(self, data: bytes) -> list[SSEItem]:
        """Like :meth:`feed`, but with ``raw_data=True`` a plain event comes as its data bytes.

        See :data:`SSEItem`: the common frame of an event stream (one ``data`` line, no
        ``id``) then costs no event object; :func:`as_event` turns an item into an event.
        """
        if self._closed:
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
            # Every CR, LF and CRLF is one line end: normalize them all to LF. A CR that
            # ends the chunk is a line end now; remember it to drop the LF of a split CRLF.
            self._cr = data[-1] == 0x0D
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        try:
            return self._feed_lf(data)
        except ProtocolError:
            self._closed = True
            raise

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the body; return the events it completes.

        An unterminated event is discarded (WHATWG rule), so in the default mode this
        returns ``[]``; with ``data_line_events=True`` a final ``data`` line without a
        line end is dispatched, and with ``json_line_events=True`` a final ``{`` line.
        Calling it again returns ``[]``.
        """
        if self._closed:
            return []
        self._closed = True
        out: list[SSEItem] = []
        if self._parts and (self._data_line_events or self._json_lines):
            line = b"".join(self._parts)
            colon = line.find(b":")
            if (self._data_line_events and (line if colon < 0 else line[:colon]) == b"data") or (
                self._json_lines and line.startswith(b"{")
            ):
                self._run([line], out)
        self._parts = []
        self._plen = 0
        self._data = []
        self._comments = _NO_COMMENTS
        return [as_event(item) for item in out]

    # -- internals ----------------------------------------------------------------------

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
            "larger SSEDecoder(max_event_bytes=...) if the server legitimately sends "
            "such events"
        )

    def _dirty(self) -> bool:
        return bool(self._data or self._comments or self._event or self._event_retry is not None)

    def _feed_lf(self, data: bytes) -> list[SSEItem]:
        """Process LF-only ``data``: whole lines now, the partial last line later."""
        k = data.rfind(b"\n")
        if k < 0:
            self._parts.append(data)
            self._plen += len(data)
            if self._plen > self._max_line:
                raise self._line_too_long(self._plen)
            return []
        if self._parts:
            k += self._plen
            self._parts.append(data)
            buf = b"".join(self._parts)
            self._parts = []
        else:
            buf = data
        end = k + 1  # buf[:end] is whole lines, each ending with LF
        tail_len = len(buf) - end
        if tail_len > self._max_line:
            raise self._line_too_long(tail_len)
        out: list[SSEItem] = []
        if self._data_line_events:
            self._lines_mode(buf, end, out)
        else:
            j = buf.rfind(b"\n\n", 0, end)
            if j >= 0:
                # buf[:j] is whole event blocks, each ended by a blank line.
                self._blocks(buf[:j], out)
                start = j + 2
            else:
                start = 0
            if start < end:
                # Whole lines of an event block still open: move them into the state.
                self._run(buf[start : end - 1].split(b"\n"), out)
        if tail_len:
            self._parts.append(buf[end:])
        self._plen = tail_len
        return out

    def _blocks(self, region: bytes, out: list[SSEItem]) -> None:
        """Dispatch ``region``: event blocks joined by blank lines, the last one ended."""
        dirty = self._dirty()
        n = len(region)
        if not dirty and n <= self._fast_limit:
            # Fast path: every block is one ``data:`` line (the OpenAI shape). One decode
            # of the whole region; every newline must belong to a block separator.
            if self._raw:
                if self._raw_data_blocks(region, out):
                    return
            elif region.startswith(b"data: "):
                text = _decode(region)
                pieces = text.split("\n\ndata: ")
                if text.count("\n") == 2 * len(pieces) - 2:
                    pieces[0] = pieces[0][6:]
                    lid = self._last_id
                    out += [ServerSentEvent("message", p, lid) for p in pieces]
                    return
            elif region.startswith(b"data:"):
                text = _decode(region)
                pieces = text.split("\n\ndata:")
                if text.count("\n") == 2 * len(pieces) - 2 and "\n\ndata: " not in text:
                    pieces[0] = pieces[0][5:]
                    lid = self._last_id
                    out += [ServerSentEvent("message", p, lid) for p in pieces]
                    return
        if n <= self._max_line and self._size + n <= self._max_event:
            # No line or event here can exceed its limit. Many lines: runs of same-shaped
            # blocks a column at a time (the DashScope shape); a few: the general path,
            # unless they start like the Anthropic shape, which the block-by-block path
            # below takes directly.
            lines = region.split(b"\n")
            lines.append(b"")
            if len(lines) >= _MIN_RUN_LINES:
                self._block_runs(lines, out)
                return
            if dirty or not region.startswith(b"event: "):
                self._run(lines, out)
                return
        if dirty:
            # The first block continues lines fed before; it takes the general path.
            e = region.find(b"\n\n")
            if e < 0:
                self._run([*region.split(b"\n"), b""], out)
                return
            self._run([*region[:e].split(b"\n"), b""], out)
            region = region[e + 2 :]
        limit = self._fast_limit
        # Block by block: one-line data blocks and "event: NAME\ndata: VALUE" blocks (the
        # Anthropic shape) directly, runs of other blocks through the general path.
        append = out.append
        raw = self._raw
        pending: list[bytes] = []
        for block in region.split(b"\n\n"):
            if len(block) <= limit:
                if block.startswith(b"data: "):
                    if b"\n" not in block:
                        if pending:
                            self._run(pending, out)
                            pending = []
                        if raw:
                            lid = self._last_id
                            append(
                                ServerSentEvent("message", "", lid, None, _NO_COMMENTS, block[6:])
                                if lid
                                else block[6:]
                            )
                        else:
                            append(ServerSentEvent("message", _decode(block[6:]), self._last_id))
                        continue
                elif block.startswith(b"event: "):
                    nl = block.find(b"\n")
                    if (
                        nl > 7
                        and block.startswith(b"data: ", nl + 1)
                        and block.find(b"\n", nl + 1) < 0
                    ):
                        if pending:
                            self._run(pending, out)
                            pending = []
                        if raw:
                            append(
                                ServerSentEvent(
                                    _decode(block[7:nl]),
                                    "",
                                    self._last_id,
                                    None,
                                    _NO_COMMENTS,
                                    block[nl + 7 :],
                                )
                            )
                        else:
                            append(
                                ServerSentEvent(
                                    _decode(block[7:nl]), _decode(block[nl + 7 :]), self._last_id
                                )
                            )
                        continue
            pending += block.split(b"\n")
            pending.append(b"")
        if pending:
            self._run(pending, out)

    def _raw_data_blocks(self, region: bytes, out: list[SSEItem]) -> bool:
        """The fast path of :meth:`_blocks` in ``raw_data`` mode; False if it does not apply."""
        for prefix in (b"data: ", b"data:"):
            if region.startswith(prefix):
                pieces = region.split(b"\n\n" + prefix)
                if region.count(b"\n") != 2 * len(pieces) - 2 or (
                    prefix == b"data:" and b"\n\ndata: " in region
                ):
                    return False
                pieces[0] = pieces[0][len(prefix) :]
                self._raw_events(pieces, out)
                return True
        return False

    def _raw_events(self, pieces: list[bytes], out: list[SSEItem]) -> None:
        """Plain ``message`` events with data ``pieces``: the bytes alone when the id is empty."""
        lid = self._last_id
        if lid:
            out += [ServerSentEvent("message", "", lid, None, _NO_COMMENTS, p) for p in pieces]
        else:
            out += pieces

    def _lines_mode(self, buf: bytes, end: int, out: list[SSEItem]) -> None:
        """``data_line_events`` mode: process the whole lines ``buf[:end]``."""
        if end <= self._fast_limit and not self._dirty():
            c = buf[0]
            if c == 0x64 or c == 0x0A:  # "d" or LF
                # Fast path: only ``data:`` lines and blank lines. With a clean state a
                # blank line does nothing, so the leading and trailing ones can go; then
                # either every line is a data line, or data lines and single blank lines
                # alternate.
                if self._raw:
                    if self._raw_data_lines(buf[:end].strip(b"\n"), out):
                        return
                    text = ""  # not the fast path's shape: the general path below
                else:
                    text = _decode(buf[:end].strip(b"\n"))
                    if not text:
                        return
                for prefix in ("data: ", "data:") if text else ():
                    if text.startswith(prefix):
                        if prefix == "data:" and "\ndata: " in text:
                            break
                        nls = text.count("\n")
                        pieces = text.split("\n\n" + prefix)
                        if nls != 2 * len(pieces) - 2:
                            pieces = text.split("\n" + prefix)
                            if nls != len(pieces) - 1:
                                break
                        pieces[0] = pieces[0][len(prefix) :]
                        lid = self._last_id
                        out += [ServerSentEvent("message", p, lid) for p in pieces]
                        return
        if end > self._max_line or self._size + end > self._max_event:
            # Some line or event may be too large: the general path checks each one.
            self._run(buf[: end - 1].split(b"\n"), out)
            return
        lines = buf.split(b"\n")
        lines.pop()  # the unterminated tail, buf[end:]
        if len(lines) >= _MIN_RUN_LINES:
            self._block_runs(lines, out)
        else:
            self._run(lines, out)

    def _raw_data_lines(self, region: bytes, out: list[SSEItem]) -> bool:
        """The fast path of :meth:`_lines_mode` in ``raw_data`` mode (True: it applied)."""
        if not region:
            return True
        for prefix in (b"data: ", b"data:"):
            if region.startswith(prefix):
                if prefix == b"data:" and b"\ndata: " in region:
                    return False
                nls = region.count(b"\n")
                pieces = region.split(b"\n\n" + prefix)
                if nls != 2 * len(pieces) - 2:
                    pieces = region.split(b"\n" + prefix)
                    if nls != len(pieces) - 1:
                        return False
                pieces[0] = pieces[0][len(prefix) :]
                self._raw_events(pieces, out)
                return True
        return False

    def _block_runs(self, lines: list[bytes], out: list[SSEItem]) -> None:
        """Interpret ``lines``, taking runs of same-shaped blocks a column at a time.

        ``lines`` are as for :meth:`_run`; the caller guarantees that none of them, and
        no event made of them, exceeds its limit. Streams such as DashScope's repeat one
        block shape (``id:N``, ``event:result``, ``:HTTP_STATUS/200``, ``data:...``, blank)
        where only the id and data values change. Seen as a table with one row per
        block, every other column holds one repeated line (``list.count`` checks it) and
        the id and data columns start every line with the same field prefix. The first
        block of a run goes through :meth:`_run`, which gives the event type, retry and
        comments that all the others share; the rest cost a slice and a decode each.
        """
        n = len(lines)
        done = 0  # lines[done:s] wait for the general path
        s = 0
        if not lines[0] or self._dirty():
            # The block in progress (or a blank line) first: a run starts after a blank line.
            try:
                s = lines.index(b"") + 1
            except ValueError:
                self._run(lines, out)
                return
        window = n  # most blocks to try at once: grows after a run, shrinks after a miss
        while s < n:
            try:
                b = lines.index(b"", s)
            except ValueError:
                break
            period = b - s + 1
            count = min((n - s) // period, window)
            columns = None
            while period > 1 and count >= _MIN_RUN_BLOCKS:
                columns = self._columns(lines, s, period, count)
                if columns is not None:
                    break
                count //= 2
            if columns is None:
                # Not the start of a run: this block joins the general path.
                if period > 1:
                    window = max(_MIN_RUN_BLOCKS, window // 2)
                s = b + 1
                continue
            window = 2 * count
            # The general path up to the run's first block included: one event last.
            self._run(lines[done : s + period], out)
            first = cast("ServerSentEvent", out[-1])  # the general path makes events only
            values, ids = columns
            if ids is None:
                ids = [self._last_id] * (count - 1)
            else:
                self._last_id = ids[-1]
            if self._raw:
                out += map(
                    ServerSentEvent,
                    repeat(first.event),
                    repeat(""),
                    ids,
                    repeat(first.retry),
                    repeat(first.comments),
                    values,
                )
            else:
                out += map(
                    ServerSentEvent,
                    repeat(first.event),
                    cast("list[str]", values),
                    ids,
                    repeat(first.retry),
                    repeat(first.comments),
                )
            s += count * period
            done = s
        if done < n:
            self._run(lines[done:] if done else lines, out)

    def _columns(
        self, lines: list[bytes], s: int, period: int, count: int
    ) -> tuple[list[str] | list[bytes], list[str] | None] | None:
        """The data values and ids of blocks 2..``count`` of a run, or ``None``.

        The ``count`` blocks of ``period`` lines from ``s`` make a run when they have
        the first block's shape: header lines (no ``data`` field, no bare JSON line, at
        most one ``id`` field, on an ``id:`` line), then one ``data:`` line, then the
        blank line; every header line but the ``id:`` one repeats verbatim; the ``id:``
        and ``data:`` lines of every block start as the first block's do (with one
        space after the colon, or without), and no id holds a NUL. The ids are ``None``
        when the blocks have no ``id:`` line; the values are bytes in ``raw_data`` mode.
        """
        end = s + count * period
        if lines[s + period - 1 : end : period].count(b"") != count:
            return None
        json_lines = self._json_lines
        ids: list[str] | None = None
        for k in range(s, s + period - 2):
            line = lines[k]
            name = line.partition(b":")[0]
            if name == b"id":
                joined = b"\n".join(lines[k:end:period])
                if ids is not None or len(line) == 2 or b"\x00" in joined:
                    return None
                if joined.startswith(b"id: "):
                    prefix = "\nid: "
                    if joined.count(b"\nid: ") != count - 1:
                        return None
                elif joined.count(b"\nid:") != count - 1 or b"\nid: " in joined:
                    return None
                else:
                    prefix = "\nid:"
                # One decode for the column: its separators are ASCII, so this is what
                # decoding each id alone gives, invalid UTF-8 included.
                ids = _decode(joined).split(prefix)
                del ids[0]
            elif (
                name == b"data"
                or (json_lines and line[0] == 0x7B)
                or lines[k:end:period].count(line) != count
            ):
                return None
        col = lines[s + period - 2 : end : period]
        # JSON data (every provider's) starts with "{": one check covers the prefix and
        # the absence of a space after the colon.
        if all(map(bytes.startswith, col, repeat(b"data:{"))):
            skip = 5
        elif col[0].startswith(b"data: "):
            if not all(map(bytes.startswith, col, repeat(b"data: "))):
                return None
            skip = 6
        elif all(map(bytes.startswith, col, repeat(b"data:"))) and not any(
            map(bytes.startswith, col, repeat(b" "), repeat(5))
        ):
            skip = 5
        else:
            return None
        if self._raw:
            raw_values = [line[skip:] for line in col]
            del raw_values[0]
            return raw_values, ids
        try:
            values = [line[skip:].decode() for line in col]
        except UnicodeDecodeError:
            values = [line[skip:].decode("utf-8", "replace") for line in col]
        del values[0]
        return values, ids

    def _run(self, lines: list[bytes], out: list[SSEItem]) -> None:
        """General path: interpret ``lines`` (without line ends; ``b""`` is a blank line).

        The block state lives in locals for speed and is stored back at the end. The
        last ``event`` line and the last comment line seen are remembered with their
        meaning, so a stream that repeats them reuses one string and one tuple.
        """
        data = self._data
        event = self._event
        comments = self._comments
        retry = self._event_retry
        size = self._size
        last_id = self._last_id
        max_line = self._max_line
        max_event = self._max_event + 1  # ``size`` counts one newline per line
        data_line_events = self._data_line_events
        json_lines = self._json_lines
        event_line, event_name = self._event_cache
        comment_line, comment_tuple = self._comment_cache
        raw_data = self._raw
        append = out.append
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    value = data[0] if len(data) == 1 else b"\n".join(data)
                    if raw_data:
                        append(
                            ServerSentEvent(event or "message", "", last_id, retry, comments, value)
                        )
                    else:
                        append(
                            ServerSentEvent(
                                event or "message", _decode(value), last_id, retry, comments
                            )
                        )
                    data = []
                event = ""
                retry = None
                size = 0
                comments = _NO_COMMENTS
                continue
            if len(line) > max_line:
                raise self._line_too_long(len(line))
            first = line[0]
            if first == 0x3A:  # ":" comment
                size += len(line)
                if size > max_event:
                    raise self._event_too_big(size - 1)
                if comments:
                    comments += (line[1:].decode("utf-8", "replace"),)
                elif line == comment_line:
                    comments = comment_tuple
                else:
                    comment_line = line
                    comments = comment_tuple = (line[1:].decode("utf-8", "replace"),)
                continue
            if first == 0x65 and line == event_line:  # the same "event" line as before
                event = event_name
                continue
            if first == 0x64 and line.startswith(b"data:"):
                value = line[5:]
                if value[:1] == b" ":
                    value = value[1:]
            else:
                if first == 0x7B and json_lines:  # "{": a bare JSON line, its own event
                    if raw_data:
                        append(ServerSentEvent("message", "", last_id, None, _NO_COMMENTS, line))
                    else:
                        append(ServerSentEvent("message", _decode(line), last_id))
                    continue
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name != b"data":
                    if name == b"id":
                        if b"\x00" not in value:
                            last_id = value.decode("utf-8", "replace")
                    elif name == b"event":
                        event_line = line
                        event = event_name = value.decode("utf-8", "replace")
                    elif name == b"retry" and value.isdigit():  # ASCII digits, non-empty
                        try:
                            retry = int(value.lstrip(b"0") or b"0")
                        except ValueError:  # more digits than int() converts: ignore it
                            continue
                        self._reconnect = retry
                    continue
            # A data field.
            size += len(value) + 1
            if size > max_event:
                raise self._event_too_big(size - 1)
            if data_line_events:
                if raw_data:
                    append(ServerSentEvent(event or "message", "", last_id, retry, comments, value))
                else:
                    append(
                        ServerSentEvent(
                            event or "message",
                            value.decode("utf-8", "replace"),
                            last_id,
                            retry,
                            comments,
                        )
                    )
                event = ""
                retry = None
                size = 0
                comments = _NO_COMMENTS
            else:
                data.append(value)
        self._data = data
        self._event = event
        self._comments = comments
        self._event_retry = retry
        self._size = size
        self._last_id = last_id
        self._event_cache = (event_line, event_name)
        self._comment_cache = (comment_line, comment_tuple)


# -- JSON ---------------------------------------------------------------------------------

_J_SKIP_WS: Final = re.compile(rb"[ \t\r\n]*")
# Inside a container: skip everything up to the next bracket, whole strings included;
# stops at a bracket, at the end of the buffer, or at the quote of an unfinished string.
_J_SKIP: Final = re.compile(rb'(?:[^"{}\[\]]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.DOTALL)
# A string body from just after its opening quote: stops at the closing quote, or at the
# end of the buffer, or at a backslash that is the last byte (its escape not yet here).
_J_STR_BODY: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# Nested repeats cost more than linear time on long runs in ``re``: match in windows.
_J_WINDOW: Final = 32 * 1024
_J_SCALAR: Final = re.compile(rb'[^ \t\r\n{}\[\]",:]*')
_J_SCALAR_OK: Final = re.compile(
    rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null"
)


class JSONFramer:
    """Incremental splitter of a body made of JSON documents.

    :meth:`feed` takes body chunks and returns the raw bytes of every document completed
    so far (without surrounding whitespace), for the caller to decode; :meth:`close`
    ends the body and returns a final top-level scalar, if any. It handles one document
    (possibly pretty-printed over many lines), NDJSON (each line returned as soon as it
    is complete) and documents back to back with or without whitespace between them. A
    leading UTF-8 BOM is skipped.

    It finds document boundaries by tracking bracket depth outside strings; it does not
    validate the documents (the caller's decoder does), except that a top-level scalar
    must be a JSON number, ``true``, ``false``, ``null`` or a string, and a stray
    closing bracket, ``,`` or ``:`` at the top level is an error. Two top-level numbers
    or literals need whitespace between them.

    Raises :class:`~aiollm.errors.ProtocolError` for a document larger than
    ``max_document_bytes``, for invalid top-level bytes, and at :meth:`close` for a
    truncated document. After it, or after :meth:`close`, :meth:`feed` raises
    ``ProtocolError``.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_depth",
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

    def feed(self, data: bytes) -> list[bytes]:
        """Scan the next chunk of the body; return the documents it completed."""
        if self._closed:
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
        except ProtocolError:
            self._closed = True
            raise
        return out

    def close(self) -> list[bytes]:
        """Signal the end of the body; return a final top-level scalar document, if any.

        Raises :class:`~aiollm.errors.ProtocolError` when the body ends inside a
        document. Calling it again returns ``[]``.
        """
        if self._closed:
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
        if _J_SCALAR_OK.fullmatch(tok) is None:
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
        depth = self._depth
        in_str = self._in_str
        scalar = self._scalar
        limit = self._max
        skip = _J_SKIP.match
        str_body = _J_STR_BODY.match
        while True:
            if start < 0:
                # Between documents: skip whitespace, look at the first byte.
                p = _J_SKIP_WS.match(buf, p).end()  # type: ignore[union-attr]
                if p >= n:
                    break
                c = buf[p]
                start = p
                if c == 0x7B or c == 0x5B:  # { [
                    depth = 1
                    p += 1
                elif c == 0x22:  # "
                    in_str = True
                    p += 1
                elif c in b"}],:":
                    raise ProtocolError(
                        f"invalid JSON body: unexpected {chr(c)!r} between documents"
                    )
                else:
                    scalar = True
            if scalar:
                e = _J_SCALAR.match(buf, p).end()  # type: ignore[union-attr]
                if e >= n:
                    p = n
                    break  # may continue in the next chunk
                self._emit_scalar(bytes(buf[start:e]), out, final=False)
                scalar = False
                start = -1
                p = e
                continue
            if in_str:
                w = p + _J_WINDOW
                e = str_body(buf, p, w).end()  # type: ignore[union-attr]
                if e >= n or buf[e] != 0x22:
                    p = e
                    if e >= n - 1:
                        break  # end of buffer, or a final backslash: wait for more
                    continue  # stopped at the window's end
                in_str = False
                p = e + 1
                if depth == 0:
                    if p - start > limit:
                        raise self._too_big(p - start)
                    out.append(bytes(buf[start:p]))
                    start = -1
                continue
            w = p + _J_WINDOW
            i = skip(buf, p, w).end()  # type: ignore[union-attr]
            if i >= n:
                p = n
                break
            if i >= w:
                p = i  # stopped at the window's end
                continue
            c = buf[i]
            p = i + 1
            if c == 0x22:
                in_str = True
            elif c == 0x7B or c == 0x5B:
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    if p - start > limit:
                        raise self._too_big(p - start)
                    out.append(bytes(buf[start:p]))
                    start = -1
        # Drop what is consumed; keep the open document only.
        keep = start if start >= 0 else p
        if keep:
            del buf[:keep]
            p -= keep
            if start >= 0:
                start = 0
        if start >= 0 and len(buf) > limit:
            raise self._too_big(len(buf))
        self._pos = p
        self._start = start
        self._depth = depth
        self._in_str = in_str
        self._scalar = scalar


# -- sniffing -----------------------------------------------------------------------------


class BodyKind(enum.Enum):
    """What framing a response body needs: SSE, JSON, or neither (e.g. an HTML page)."""

    SSE = "sse"
    JSON = "json"
    OTHER = "other"


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


def sniff_body(content_type: str | None, head: bytes) -> BodyKind:
    """Decide how to frame a response body.

    Rules, in order:

    1. The media type of ``content_type`` (case-insensitive, parameters such as
       ``;charset=UTF-8`` ignored) decides when it is specific: ``text/event-stream``
       is SSE; ``application/json``, ``application/x-ndjson``, ``application/ndjson``,
       ``application/jsonl``, ``application/x-jsonl``, ``application/jsonlines``,
       ``application/x-jsonlines``, ``text/json`` and any ``*/*+json`` are JSON.
    2. Otherwise (no header, ``text/plain``, ``application/octet-stream``,
       ``text/html`` or anything else) ``head``, the first bytes of the body, decides,
       after skipping a UTF-8 BOM and whitespace: ``{`` or ``[`` is JSON (servers do
       mislabel JSON error bodies); ``data:``, ``event:``, ``id:``, ``retry:`` or ``:``
       is SSE; anything else, including an empty head, is OTHER.
    """
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "text/event-stream":
            return BodyKind.SSE
        if media in _JSON_MEDIA_TYPES or (media.endswith("+json") and "/" in media):
            return BodyKind.JSON
    if head.startswith(_BOM):
        head = head[3:]
    head = head.lstrip(b" \t\r\n")
    if head.startswith((b"{", b"[")):
        return BodyKind.JSON
    if head.startswith(_SSE_HEADS):
        return BodyKind.SSE
    return BodyKind.OTHER
