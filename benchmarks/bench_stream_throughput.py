"""Stream throughput: aiollm's ``Stream`` vs a bare aiohttp + msgspec reader, same run.

Workloads (from a local server in its own process): a 200,000-frame OpenAI-format stream and
20,000-frame Qianfan and DashScope (incremental) streams. Each run streams the body once with
the bare reader and once through ``aiollm.Client.stream``, alternating which goes first; the
best of ``--runs`` is reported as text deltas per second, with the ratio aiollm / bare.
Targets: aiollm >= 0.6x the bare rate, and >= 300,000 deltas/s.

    python benchmarks/bench_stream_throughput.py [--runs 5] [--openai-frames N] [--frames N]
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

RATIO_TARGET = 0.6
RATE_TARGET = 300_000


async def measure(fmt: str, frames: int, runs: int, origin: str) -> tuple[float, float]:
    """Best bare and aiollm times for one workload."""
    async with (
        aiohttp.ClientSession() as session,
        Client(providers=aiollm_settings(origin), env={}) as client,
    ):
        # warm up: connections, caches, the server's body cache
        await bare_stream(session, origin, fmt, frames)
        await aiollm_stream(client, fmt, frames)
        bare: list[float] = []
        ours: list[float] = []
        for run in range(runs):
            order = ("bare", "aiollm") if run % 2 == 0 else ("aiollm", "bare")
            for who in order:
                if who == "bare":
                    t, n = await timed(lambda: bare_stream(session, origin, fmt, frames))
                    bare.append(t)
                else:
                    t, n = await timed(lambda: aiollm_stream(client, fmt, frames))
                    ours.append(t)
                assert n == frames, (who, fmt, n)
    return best(bare), best(ours)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--openai-frames", type=int, default=200_000)
    ap.add_argument("--frames", type=int, default=20_000, help="Qianfan and DashScope frames")
    args = ap.parse_args()
    print("stream throughput: aiollm Stream vs bare aiohttp iter_any + split + msgspec")
    print(machine_line())
    print(f"best of {args.runs} runs each; local server in a separate process\n")
    workloads = [
        ("openai", args.openai_frames),
        ("qianfan", args.frames),
        ("dashscope", args.frames),
    ]
    print(
        f"{'workload':<22}{'bare deltas/s':>15}{'aiollm deltas/s':>17}{'aiollm/bare':>13}  targets"
    )
    with local_server() as origin:
        for fmt, frames in workloads:
            t_bare, t_ours = await measure(fmt, frames, args.runs, origin)
            bare_rate, our_rate = frames / t_bare, frames / t_ours
            ratio = our_rate / bare_rate
            print(
                f"{fmt + ' ' + format(frames, ','):<22}{bare_rate:>15,.0f}{our_rate:>17,.0f}"
                f"{ratio:>12.2f}x  >= {RATIO_TARGET}x {verdict(ratio >= RATIO_TARGET)}, "
                f">= {RATE_TARGET:,}/s {verdict(our_rate >= RATE_TARGET)}"
            )


if __name__ == "__main__":
    asyncio.run(main())
