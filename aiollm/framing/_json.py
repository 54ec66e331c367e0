"""Counting JSON brackets, and :class:`JSONFramer`: a JSON body split into its documents."""

from __future__ import annotations

import re
from typing import Final

import msgspec

from ..errors import ProtocolError
from ._deferred import DeferredError

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
"""Default bound (16 MiB) on one SSE line, one SSE event and one JSON document."""

BOM: Final = b"\xef\xbb\xbf"
WS: Final = re.compile(rb"[ \t\r\n]*")
# Inside a container: skip everything up to the next bracket, whole strings included; stops
# at a bracket, at the end, or at the quote of a string that does not end in the window.
_SKIP: Final = re.compile(rb'(?:[^"{}\[\]]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.DOTALL)
# A string's body after its opening quote: stops at the closing quote, at the end, or at a
# backslash that is the last byte (its escape not yet here).
_STR_BODY: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# ``re`` costs more than linear time on long runs of nested repeats: match in windows.
_WINDOW: Final = 32 * 1024


def scan_json(buf: bytes | bytearray, p: int, depth: int, in_str: bool) -> tuple[int, int, bool]:
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


class JSONValueScan:
    """Whether a growing buffer is one complete JSON object or array, each byte scanned once."""

    def __init__(self) -> None:
        self._data: bytes | bytearray | None = None
        self._scan = (0, -1, False)  # position, depth (-1 before the value), in a string

    def status(self, data: bytes | bytearray) -> int:
        """1: ``data`` is one complete JSON object or array (valid for msgspec, whitespace
        around it allowed); 2: it never will be, whatever follows; 0: not yet.

        Incremental over calls with the same ``data`` object growing; a value that closes is
        then checked once with msgspec.
        """
        if data is self._data:
            p, depth, in_str = self._scan
        else:
            if data.lstrip(b" \t")[:1] in (b"{", b"["):  # most often one line: try it whole
                try:
                    msgspec.json.decode(data, type=msgspec.Raw)
                    return 1
                except (msgspec.DecodeError, RecursionError):
                    pass
            self._data = data
            p, depth, in_str = 0, -1, False
        n = len(data)
        if depth < 0:
            p = WS.match(data, p).end()  # type: ignore[union-attr]
            if p >= n:
                self._scan = (p, -1, False)
                return 0
            if data[p] != 0x7B and data[p] != 0x5B:
                return 2
            depth = 1
            p += 1
        p, depth, in_str = scan_json(data, p, depth, in_str)
        if depth > 0 or in_str:
            self._scan = (p, depth, in_str)
            return 0
        if WS.match(data, p).end() < n:  # type: ignore[union-attr]
            return 2
        try:
            msgspec.json.decode(data, type=msgspec.Raw)
        except (msgspec.DecodeError, RecursionError):
            return 2
        return 1


_SCALAR: Final = re.compile(rb'[^ \t\r\n{}\[\]",:]*')
_SCALAR_OK: Final = re.compile(
    rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null"
)


class JSONFramer(DeferredError):
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
            if len(self._buf) < 3 and BOM.startswith(self._buf):
                return []
            self._skip_bom()
        out: list[bytes] = []
        try:
            self._scan(out)
        except ProtocolError as exc:
            self._fail(exc, out)
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
        elif self._buf.startswith(BOM[:1]):
            raise ProtocolError("truncated JSON body: it is an incomplete byte order mark")
        self._buf = bytearray()
        return out

    def _skip_bom(self) -> None:
        self._started = True
        if self._buf.startswith(BOM):
            del self._buf[:3]

    def _too_big(self) -> ProtocolError:
        return ProtocolError(
            f"JSON document larger than max_document_bytes={self._max}; pass a larger "
            "JSONFramer(max_document_bytes=...) if the server legitimately sends such documents"
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
            raise self._too_big()
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
                    p = WS.match(buf, p).end()  # type: ignore[union-attr]
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
                p, self._depth, self._in_str = scan_json(buf, p, self._depth, self._in_str)
                if self._depth > 0 or self._in_str:
                    break  # the end of the buffer inside a document
                if p - start > self._max:
                    raise self._too_big()
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
            raise self._too_big()
