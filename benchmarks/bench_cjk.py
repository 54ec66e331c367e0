"""Chinese text through the decoder and a codec: the event data as ``str`` vs as raw bytes.

    python benchmarks/bench_cjk.py [--frames N] [--runs N]

Qianfan frames whose ``result`` is a Chinese sentence, fed in 64 KiB chunks to
``SSEDecoder`` + ``QianfanCodec`` (sans-IO, no network), once with the decoder's ``str`` data
(``raw_data=False``) and once with raw bytes (``raw_data=True``, what the ``Stream`` uses);
and msgspec decoding one such frame from a fresh ``str`` vs from ``bytes``. Prints µs per frame
and the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import msgspec
from _local import machine_line

from aiollm.framing import SSEDecoder
from aiollm.providers import Call
from aiollm.providers.qianfan import QianfanCodec, WireChat

SENTENCE = "以下是一些适合自驾游的路线推荐"


def body(frames: int) -> bytes:
    """A Qianfan event stream of ``frames`` Chinese sentences, the last one ending it."""
    out = []
    for i in range(frames):
        frame = {
            "id": "as-cjk",
            "object": "chat.completion",
            "created": 1680166793,
            "sentence_id": i,
            "is_end": i == frames - 1,
            "is_truncated": False,
            "result": SENTENCE,
            "need_clear_history": False,
            "usage": {"prompt_tokens": 11, "completion_tokens": i + 1, "total_tokens": i + 12},
        }
        out.append(b"data: " + json.dumps(frame, ensure_ascii=False).encode() + b"\n\n")
    return b"".join(out)


def decode_and_codec(chunks: list[bytes], raw_data: bool) -> int:
    codec = QianfanCodec(Call(op="chat", model="m", stream=True, messages=[]))
    decoder = SSEDecoder(data_line_events=True, json_line_events=True, raw_data=raw_data)
    n = 0
    for chunk in chunks:
        for event in decoder.feed(chunk):
            n += len(codec.on_sse(event))
    return n


def best_us_per_item(fn: object, items: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best / items * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("Chinese text: decoder + Qianfan codec, str data vs raw bytes")
    print(machine_line())
    data = body(args.frames)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    as_str = best_us_per_item(lambda: decode_and_codec(chunks, False), args.frames, args.runs)
    as_raw = best_us_per_item(lambda: decode_and_codec(chunks, True), args.frames, args.runs)

    decode = msgspec.json.Decoder(WireChat).decode
    frame = body(1)[len(b"data: ") : -2]
    n = 100_000
    from_str = from_bytes = float("inf")
    for _ in range(args.runs):
        # Fresh str objects every run, as a decoder makes them: msgspec caches the UTF-8
        # form inside a str, so a str decoded once before would hide the cost.
        texts = [frame.decode() for _ in range(n)]
        start = time.perf_counter()
        for text in texts:
            decode(text)
        from_str = min(from_str, (time.perf_counter() - start) / n * 1e6)
        start = time.perf_counter()
        for _ in range(n):
            decode(frame)
        from_bytes = min(from_bytes, (time.perf_counter() - start) / n * 1e6)

    print(f"best of {args.runs} runs; {args.frames:,} frames in 64 KiB chunks\n")
    print(f"{'':38} {'us/frame':>9}")
    print(f"{'decoder + codec, str data':38} {as_str:9.2f}")
    print(
        f"{'decoder + codec, raw bytes (Stream)':38} {as_raw:9.2f}   {as_str / as_raw:.2f}x faster"
    )
    print(f"{'msgspec decode of one frame, from str':38} {from_str:9.2f}")
    print(
        f"{'msgspec decode of one frame, from bytes':38} {from_bytes:9.2f}   {from_str / from_bytes:.2f}x faster"
    )


if __name__ == "__main__":
    main()
