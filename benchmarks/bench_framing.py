"""Throughput of the SSE decoder on an OpenAI-style stream.

Builds N ``chat.completion.chunk`` frames (varied token text), feeds them in 64 KiB
chunks to :class:`aiollm.framing.SSEDecoder` and reports the best of several runs in
events/s and MB/s, next to a baseline that only splits the same chunks on blank lines
(``buf.split(b"\\n\\n")``, carrying the remainder) and the ratio between the two.

    python benchmarks/bench_framing.py [--frames N] [--runs R] [--chunk BYTES]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiollm.framing import SSEDecoder

TOKENS = [
    "tok",
    " the",
    " quick",
    " brown",
    " fox",
    "ing",
    ",",
    " 你好",
    " jumps",
    "\\n",
    " über",
    " 42",
    '\\"',
    " lazy",
    " dog",
    ".",
]


def build_body(frames: int) -> bytes:
    """``frames`` OpenAI-style SSE frames, then ``data: [DONE]``."""
    parts = []
    for i in range(frames):
        tok = TOKENS[i % len(TOKENS)]
        parts.append(
            'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
            '"model":"m","choices":[{"index":0,"delta":{"content":"' + tok + '"},'
            '"finish_reason":null}]}\n\n'
        )
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def run_decoder(chunks: list[bytes], data_line_events: bool) -> int:
    dec = SSEDecoder(data_line_events=data_line_events)
    feed = dec.feed
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n + len(dec.close())


def run_baseline(chunks: list[bytes]) -> int:
    rest = b""
    n = 0
    for chunk in chunks:
        frames = (rest + chunk).split(b"\n\n")
        rest = frames.pop()
        n += len(frames)
    return n


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=64 * 1024, help="chunk size in bytes")
    args = ap.parse_args()

    body = build_body(args.frames)
    chunks = chunked(body, args.chunk)
    events = args.frames + 1
    mb = len(body) / 1e6
    print(
        f"{events} events, {mb:.1f} MB in {len(chunks)} chunks of {args.chunk} bytes, "
        f"best of {args.runs} (Python {sys.version.split()[0]})"
    )

    base_t, base_n = best_of(args.runs, lambda: run_baseline(chunks))
    assert base_n == events, base_n
    rows = [("baseline split(b'\\n\\n')", base_t)]
    for dle in (False, True):
        t, n = best_of(args.runs, lambda dle=dle: run_decoder(chunks, dle))  # type: ignore[misc]
        assert n == events, (dle, n)
        rows.append((f"SSEDecoder(data_line_events={dle})", t))

    print(f"{'':36} {'time ms':>9} {'events/s':>12} {'MB/s':>8} {'vs baseline':>12}")
    for name, t in rows:
        print(f"{name:36} {t * 1e3:9.1f} {events / t:12,.0f} {mb / t:8.1f} {base_t / t:11.2f}x")


if __name__ == "__main__":
    main()
