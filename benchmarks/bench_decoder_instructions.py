"""Instructions per plain-text frame in each provider's response decoder, counted by callgrind.

Instruction counts do not depend on what else the machine is doing, so two trees can be compared
exactly on a busy machine: ``--before PATH`` counts a second checkout (e.g. ``git worktree add
/tmp/before <commit>``) in the same run and prints the ratio; a tree from before the response
decoders is run as its Stream ran it (its codec behind its SSE framer). Each count is the difference between
a run over ``--frames`` and one over ``--frames / 6`` frames, minus the same difference with
decoding switched off (building the body), divided by the frames in between. Needs valgrind
(``apt-get install valgrind``); ``PYTHONHASHSEED`` is fixed.

    python benchmarks/bench_decoder_instructions.py [--before PATH] [--frames 6000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _local import instructions

HERE = Path(__file__).resolve().parent
FORMATS = ("openai", "dashscope", "qianfan")

WORKER = r"""
import sys
from aiollm.providers._base import Call
try:
    from aiollm.providers.openai import OpenAIDecoder
    from aiollm.providers.dashscope import DashScopeDecoder
    from aiollm.providers.qianfan import QianfanDecoder
    CODECS = False
except ImportError:  # a tree from before the response decoders: a codec behind the SSE framer
    from aiollm.framing import SSEDecoder
    from aiollm.providers.openai import OpenAICodec as OpenAIDecoder
    from aiollm.providers.dashscope import DashScopeCodec as DashScopeDecoder
    from aiollm.providers.qianfan import QianfanCodec as QianfanDecoder
    CODECS = True

fmt, n, decode = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if fmt == "openai":
    cls, model = OpenAIDecoder, "m"
    body = b"".join(
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"t%d"},"finish_reason":null}]}\n\n' % i
        for i in range(n)
    ) + b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
elif fmt == "dashscope":
    cls, model = DashScopeDecoder, "qwen"
    body = b"".join(
        b'id:%d\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"choices":[{"message":'
        b'{"content":"t%d","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":3,'
        b'"input_tokens":1,"output_tokens":2},"request_id":"r"}\n\n' % (i, i)
        for i in range(n)
    ) + (b'id:x\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"choices":[{"message":'
         b'{"content":"","role":"assistant"},"finish_reason":"stop"}]},"request_id":"r"}\n\n')
else:
    cls, model = QianfanDecoder, "ernie"
    body = b"".join(
        b'data: {"id":"as","object":"chat.completion","created":1,"sentence_id":%d,'
        b'"is_end":false,"result":"t%d","need_clear_history":false}\n\n' % (i, i)
        for i in range(n)
    ) + b'data: {"id":"as","sentence_id":%d,"is_end":true,"result":""}\n\n' % n
chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
if decode:
    call = Call("chat", model, True, messages=[{"role": "user", "content": "x"}])
    headers = {"Content-Type": "text/event-stream"}
    if CODECS:  # as that tree's Stream ran them
        codec = cls(call)
        codec.on_response(200, headers)
        framer = SSEDecoder(data_line_events=True, raw_data=True, json_line_events=fmt == "qianfan")
        for c in chunks:
            out = []
            codec.on_sse_batch(framer.feed_raw(c), out)
    else:
        decoder = cls(call, 200, headers)
        events = sum(len(decoder.feed(c)) for c in chunks)
        decoder.end()
"""


def count(tree: Path, fmt: str, frames: int, decode: bool) -> int:
    return instructions(WORKER, [fmt, str(frames), "1" if decode else "0"], tree)


def per_frame(tree: Path, fmt: str, frames: int) -> float:
    small = frames // 6
    decoded = count(tree, fmt, frames, True) - count(tree, fmt, small, True)
    built = count(tree, fmt, frames, False) - count(tree, fmt, small, False)
    return (decoded - built) / (frames - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to count in the same run")
    parser.add_argument("--frames", type=int, default=6000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    now = HERE.parent
    print(
        f"{'format':10} {'instructions/frame':>19}"
        + (f" {'before':>9} {'ratio':>7}" if args.before else "")
    )
    for fmt in FORMATS:
        after = per_frame(now, fmt, args.frames)
        line = f"{fmt:10} {after:19,.0f}"
        if args.before:
            before = per_frame(args.before.resolve(), fmt, args.frames)
            line += f" {before:9,.0f} {after / before:6.3f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
