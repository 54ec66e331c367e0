"""Per-request overhead: 100 sequential short streams, aiollm vs bare aiohttp, same run.

Each request streams a short body (16 frames) over a kept-alive connection from a local server
in its own process. The two clients take turns request by request (alternating which goes
first), and each one's 100 requests are summed; best of ``--runs``. Target: aiollm <= 1.2x the
bare time.

    python benchmarks/bench_request_overhead.py [--runs 5] [--requests 100] [--frames 16]
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

TARGET = 1.2


async def measure(
    fmt: str, requests: int, frames: int, runs: int, origin: str
) -> tuple[float, float]:
    """Best total time of ``requests`` sequential streams, bare and aiollm.

    The two clients take turns request by request (each on its own kept-alive connection),
    so a change of load on the machine hits both alike.
    """
    async with (
        aiohttp.ClientSession() as session,
        Client(providers=aiollm_settings(origin), env={}) as client,
    ):
        for _ in range(10):  # warm up
            await bare_stream(session, origin, fmt, frames)
            await aiollm_stream(client, fmt, frames)
        t_bare: list[float] = []
        t_ours: list[float] = []
        for _ in range(runs):
            sum_bare = sum_ours = 0.0
            for i in range(requests):
                for who in ("bare", "aiollm") if i % 2 == 0 else ("aiollm", "bare"):
                    if who == "bare":
                        t, n = await timed(lambda: bare_stream(session, origin, fmt, frames))
                        sum_bare += t
                    else:
                        t, n = await timed(lambda: aiollm_stream(client, fmt, frames))
                        sum_ours += t
                    assert n == frames, (who, n)
            t_bare.append(sum_bare)
            t_ours.append(sum_ours)
    return best(t_bare), best(t_ours)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    print(f"per-request overhead: {args.requests} sequential {args.frames}-frame streams")
    print(machine_line())
    print(f"best of {args.runs} runs each; local server in a separate process\n")
    print(f"{'format':<12}{'bare ms/req':>13}{'aiollm ms/req':>15}{'aiollm/bare':>13}  target")
    with local_server() as origin:
        for fmt in ("openai", "qianfan", "dashscope"):
            t_bare, t_ours = await measure(fmt, args.requests, args.frames, args.runs, origin)
            ratio = t_ours / t_bare
            print(
                f"{fmt:<12}{t_bare / args.requests * 1e3:>13.3f}"
                f"{t_ours / args.requests * 1e3:>15.3f}{ratio:>12.2f}x  "
                f"<= {TARGET}x {verdict(ratio <= TARGET)}"
            )


if __name__ == "__main__":
    asyncio.run(main())
