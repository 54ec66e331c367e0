"""Throughput of the SSE decoder as the Stream runs it: ``SSEDecoder()``, ``feed_raw`` per chunk.

For each wire format (OpenAI, Qianfan, DashScope; the bodies of ``_local.py``) the body is cut
into 64 KiB chunks and fed to the decoder; the best of several alternating runs is reported in
ns per frame, next to a baseline that only splits the same chunks on blank lines
(``(rest + chunk).split(b"\\n\\n")``) and the ratio between the two. With ``--before DIR`` (a
checkout of an earlier commit, e.g. ``git worktree add /tmp/framing-before 93e952f``) the
earlier decoder runs in the same process, for a before/after column: an ``aiollm/framing.py`` (before
there was one mode) in the mode its Stream used, an ``aiollm/framing/`` package as ``SSEDecoder()``.

    python benchmarks/bench_framing.py [--frames N] [--runs R] [--chunk BYTES] [--before DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from _local import dashscope_body, machine_line, openai_body, qianfan_body

from aiollm.framing import SSEDecoder

BODIES: dict[str, Callable[[int], bytes]] = {
    "openai": openai_body,
    "qianfan": qianfan_body,
    "dashscope": dashscope_body,
}
# The mode the Stream ran before there was one mode (per provider, raw data bytes).
BEFORE_MODES: dict[str, dict[str, bool]] = {
    "openai": {"data_line_events": True, "raw_data": True},
    "qianfan": {"data_line_events": True, "json_line_events": True, "raw_data": True},
    "dashscope": {"data_line_events": True, "raw_data": True},
}


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def run_baseline(chunks: list[bytes]) -> int:
    rest = b""
    n = 0
    for chunk in chunks:
        frames = (rest + chunk).split(b"\n\n")
        rest = frames.pop()
        n += len(frames)
    return n


def run_decoder(make: Callable[[], Any], chunks: list[bytes]) -> int:
    decoder = make()
    feed = decoder.feed_raw
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n + len(decoder.close())


def load_before(checkout: str) -> ModuleType:
    """The framing of an earlier checkout (``aiollm/framing.py`` or the ``aiollm/framing/``
    package), as a module of its own."""
    package = Path(checkout) / "aiollm" / "framing"
    name = "aiollm._framing_before"
    if package.is_dir():
        spec = importlib.util.spec_from_file_location(
            name, package / "__init__.py", submodule_search_locations=[str(package)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, package.with_suffix(".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = name if package.is_dir() else "aiollm"
    sys.modules[name] = module  # its own submodules import it by this name
    spec.loader.exec_module(module)
    return module


def best_alternating(runs: int, fns: list[Callable[[], int]]) -> list[float]:
    """The best time of each function over ``runs`` rounds, each round running all in turn."""
    best = [float("inf")] * len(fns)
    for r in range(runs):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t0 = time.process_time()  # CPU time: steadier than wall time on a busy machine
            fns[i]()
            best[i] = min(best[i], time.process_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=64 * 1024, help="chunk size in bytes")
    ap.add_argument("--before", help="a checkout of an earlier commit to compare with")
    args = ap.parse_args()
    before = load_before(args.before) if args.before else None

    print(
        f"SSEDecoder().feed_raw, {args.frames:,}-frame bodies in {args.chunk}-byte chunks, "
        f"best of {args.runs} alternating runs, CPU ns per frame"
    )
    print(machine_line())
    head = f"\n{'format':<11}{'split':>9}{'decoder':>9}{'split/dec':>11}"
    if before is not None:
        head += f"{'before':>9}{'before/now':>12}"
    print(head)
    for fmt, build in BODIES.items():
        chunks = chunked(build(args.frames), args.chunk)
        frames = run_baseline(chunks)
        fns: list[Callable[[], int]] = [
            partial(run_baseline, chunks),
            partial(run_decoder, SSEDecoder, chunks),
        ]
        if before is not None:
            one_mode = "data_line_events" not in before.SSEDecoder.__init__.__code__.co_varnames
            modes = {} if one_mode else BEFORE_MODES[fmt]
            fns.append(partial(run_decoder, partial(before.SSEDecoder, **modes), chunks))
        assert all(fn() == frames for fn in fns)
        times = [t * 1e9 / frames for t in best_alternating(args.runs, fns)]
        row = f"{fmt:<11}{times[0]:>9.1f}{times[1]:>9.1f}{times[0] / times[1]:>10.2f}x"
        if before is not None:
            row += f"{times[2]:>9.1f}{times[2] / times[1]:>11.2f}x"
        print(row)
    print(
        "\n'split' is (rest + chunk).split(b'\\n\\n') alone; 'split/dec' above 1 would be a decoder"
        " faster than the split; 'before/now' above 1 is a speed-up."
    )


if __name__ == "__main__":
    main()
