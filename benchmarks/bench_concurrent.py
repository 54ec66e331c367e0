"""Concurrent streams: 100 streams x 2,000 frames at once, aiollm vs bare aiohttp + msgspec.

Both clients open all streams at once against a local server in its own process and read them
to the end; the wall time of the whole batch is compared, best of ``--runs``, alternating
which client goes first. Target: aiollm <= 1.25x the bare time.

    python benchmarks/bench_concurrent.py [--runs 3] [--streams 100] [--frames 2000] [--format openai]
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from _local import (
    aiollm_settings,
    aiollm_stream,
    bare_stream,
    best,
    local_server,
    machine_line,
    timed,
    verdict,
)

from aiollm import Client

TARGET = 1.25


async def batch(make, streams: int) -> int:  # type: ignore[no-untyped-def]
    counts = await asyncio.gather(*(make() for _ in range(streams)))
    return sum(counts)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--format", default="openai", choices=("openai", "qianfan", "dashscope"))
    args = ap.parse_args()
    fmt, frames, streams = args.format, args.frames, args.streams
    print(f"concurrent streams: {streams} x {frames:,} {fmt} frames at once")
    print(machine_line())
    print(f"best of {args.runs} runs each; local server in a separate process\n")
    with local_server() as origin:
        connector = aiohttp.TCPConnector(limit=0)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            Client(providers=aiollm_settings(origin), env={}) as client,
        ):

            def bare() -> object:
                return bare_stream(session, origin, fmt, frames)

            def ours() -> object:
                return aiollm_stream(client, fmt, frames)

            await batch(bare, streams)  # warm up: open the connections
            await batch(ours, streams)
            t_bare: list[float] = []
            t_ours: list[float] = []
            for run in range(args.runs):
                pairs = [(bare, t_bare), (ours, t_ours)]
                if run % 2:
                    pairs.reverse()
                for make, times in pairs:
                    t, n = await timed(lambda make=make: batch(make, streams))  # type: ignore[misc]
                    assert n == streams * frames, n
                    times.append(t)
    tb, to = best(t_bare), best(t_ours)
    total = streams * frames
    ratio = to / tb
    print(f"{'client':<10}{'wall s':>9}{'deltas/s':>13}")
    print(f"{'bare':<10}{tb:>9.3f}{total / tb:>13,.0f}")
    print(f"{'aiollm':<10}{to:>9.3f}{total / to:>13,.0f}")
    print(f"aiollm/bare time: {ratio:.2f}x  (target <= {TARGET}x: {verdict(ratio <= TARGET)})")


if __name__ == "__main__":
    asyncio.run(main())
