"""Hostile bodies at the framing layer: bounded memory, linear work.

Each memory test feeds a body that never ends the way it should, in 64 KiB chunks, and checks
that the framer stops with a ProtocolError at its documented bound (or, for keepalives, yields
nothing and keeps nothing), with the peak of traced memory within a stated bound. Each work test
times inputs 10x and 100x a base size and compares the ratio, with generous room: linear work
grows 10x, quadratic 100x. No wall-clock bound: CPU time of the best of three runs.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from aiollm.errors import ProtocolError
from aiollm.framing import DEFAULT_MAX_BYTES, JSONFramer, SSEDecoder

MiB = 1024 * 1024
CHUNK = 64 * 1024


def chunks_of(head: bytes, unit: bytes) -> Iterator[bytes]:
    """``head``, then 64 KiB chunks of ``unit`` repeated, for ever; each chunk a new object."""
    yield head
    repeats = CHUNK // len(unit)
    while True:
        yield unit * repeats


def feed_until_error(feed: Callable[[bytes], object], chunks: Iterator[bytes]) -> tuple[int, int]:
    """Feed until ProtocolError (at most 100 MiB): bytes fed then, and peak traced memory."""
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            for chunk in chunks:
                fed += len(chunk)
                feed(chunk)
                assert fed < 100 * MiB, "no error after 100 MiB"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "pass a larger" in str(info.value)  # the message names the bound to raise
    return fed, peak


def test_endless_line_stops_at_max_line_bytes() -> None:
    dec = SSEDecoder()
    fed, peak = feed_until_error(dec.feed_raw, chunks_of(b"data: ", b"x"))
    assert DEFAULT_MAX_BYTES < fed <= DEFAULT_MAX_BYTES + CHUNK + 6
    assert peak < DEFAULT_MAX_BYTES + 4 * MiB  # the line so far, and little else


def test_endless_event_stops_at_max_event_bytes() -> None:
    limit = 256 * 1024  # line by line under tracemalloc: a small bound keeps it quick
    for unit in (b"data: x\n", b"data: [\n", b":\n", b": keep-alive\n"):
        dec = SSEDecoder(max_event_bytes=limit)
        fed, peak = feed_until_error(dec.feed_raw, chunks_of(b"event: e\n", unit))
        # An event counts its data and LFs (not the "data:" prefixes), comments with a charge.
        assert fed <= 4 * limit + CHUNK + 64, unit
        assert peak < 3 * limit + 2 * CHUNK, unit  # the event so far (its comments as a list)


def test_endless_event_after_complete_json_stops() -> None:
    # Lines after a complete JSON value wait for a blank line or the next frame: still bounded.
    limit = 512 * 1024
    dec = SSEDecoder(max_event_bytes=limit)
    fed, peak = feed_until_error(dec.feed_raw, chunks_of(b'data: {"a":1}\n', b": ka\n"))
    assert fed <= limit + CHUNK
    assert peak < 3 * limit + 2 * CHUNK


def test_endless_json_body_stops_at_max_document_bytes() -> None:
    for head, unit, limit in (
        (b'{"a":"', b"x", 2 * MiB),
        (b"[", b"1,", 2 * MiB),
        (b"[" * 100, b"[]", MiB),  # a bracket at a time: a smaller bound keeps it quick
    ):
        framer = JSONFramer(max_document_bytes=limit)
        fed, peak = feed_until_error(framer.feed, chunks_of(head, unit))
        assert limit < fed <= limit + 2 * CHUNK, head
        assert peak < limit * 5 // 4 + 4 * MiB, head  # the document and its growth


def test_endless_keepalives_yield_nothing_and_keep_nothing() -> None:
    for dec, unit in (
        (SSEDecoder(), b": keep-alive\n\n"),
        (SSEDecoder(), b"\n"),
        (SSEDecoder(), b"\r\n"),
        (SSEDecoder(), b"event: ping\n\n"),
    ):
        chunk = unit * (CHUNK // len(unit))
        tracemalloc.start()
        try:
            for _ in range(32):  # 2 MiB
                assert dec.feed_raw(chunk) == []
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 * CHUNK + MiB, unit
        assert dec.close_raw() == []
    framer = JSONFramer()  # whitespace between JSON documents
    tracemalloc.start()
    try:
        for _ in range(32):
            assert framer.feed(b" \r\n\t" * (CHUNK // 4)) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * CHUNK + MiB


# -- linear work --------------------------------------------------------------------------


def cpu_seconds(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best


def sse(body: bytes) -> Callable[[], object]:
    def run() -> object:
        dec = SSEDecoder(max_event_bytes=1 << 30, max_line_bytes=1 << 30)
        out = [dec.feed_raw(body[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]
        return out, dec.close_raw()

    return run


def json_framer(body: bytes) -> Callable[[], object]:
    def run() -> object:
        framer = JSONFramer(max_document_bytes=1 << 30)
        out = [framer.feed(body[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]
        try:
            return out, framer.close()
        except ProtocolError:
            return out

    return run


# Each case: the body for a size n, and the base size (the test times 10x and 100x it).
CASES: dict[str, tuple[Callable[[int], Callable[[], object]], int]] = {
    # k comment lines in one event: O(k^2) when each line copies the comments so far
    "comment lines in one event": (lambda n: sse(b":\n" * n + b"data: x\n\n"), 2000),
    "comment lines after complete JSON": (
        lambda n: sse(b"data: {}\n" + b": c\n" * n + b"\n"),
        1000,
    ),
    "data lines in one event": (lambda n: sse(b"data: x\n" * n + b"\n"), 1000),
    "JSON open over data lines": (
        lambda n: sse(b"data: [\n" + b"data: [],\n" * n + b"data: []]\n"),
        300,
    ),
    "JSON frames without blank lines": (lambda n: sse(b"data: {}\n" * n), 300),
    "id and event lines": (lambda n: sse(b"id: 1\nevent: e\n" * n + b"data: x\n\n"), 500),
    "blank lines": (lambda n: sse(b"\r\n" * n), 2000),
    "one long line": (lambda n: sse(b"data: " + b"x" * (8 * n) + b"\n\n"), 8000),
    "JSON nested deep": (lambda n: json_framer(b"[" * n + b"]" * n), 500),
    "JSON long string with escapes": (lambda n: json_framer(b'["' + b'a\\"' * n + b'"]'), 8000),
    "JSON many documents": (lambda n: json_framer(b"{}\n" * n), 300),
}


@pytest.mark.parametrize("case", CASES)
def test_linear_work(case: str) -> None:
    make, base = CASES[case]
    t10, t100 = cpu_seconds(make(10 * base)), cpu_seconds(make(100 * base))
    # Linear: about 10x. Quadratic: about 100x. Room for a busy machine, and a floor.
    assert t100 <= 35 * max(t10, 0.005), (case, t10, t100)
