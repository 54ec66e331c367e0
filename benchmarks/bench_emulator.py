"""The emulator's own cost per streamed frame, against a bare aiohttp server writing the same frames.

Both servers run in this process with a raw aiohttp client reading ``--streams`` concurrent
OpenAI-format streams of ``--tokens`` frames each (no cadence: as fast as they go). Printed: CPU
microseconds per frame (client and server together, ``time.process_time``), frames per second,
and the emulator's ratio to the bare server. The emulator does more per frame on purpose (it paces,
applies faults and logs each frame with its send time); this keeps that cost visible.

    python benchmarks/bench_emulator.py [--streams 64] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
from aiohttp import web

from aiollm.testing import Emulator


def bare_frames(tokens: int) -> list[bytes]:
    frames = []
    for i in range(tokens):
        obj = {
            "id": "chatcmpl-bare",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}],
        }
        frames.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    return [*frames, b"data: [DONE]\n\n"]


async def bare_server(tokens: int) -> tuple[web.AppRunner, str]:
    frames = bare_frames(tokens)

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for frame in frames:  # one write per frame, as the emulator does
            await resp.write(frame)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def drive(url: str, key: str, streams: int, tokens: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, frames) for ``streams`` concurrent streams."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["max_tokens"] = tokens
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(
                f"{url}/v1/chat/completions", json=body, headers=headers
            ) as resp:
                raw = await resp.read()
            return raw.count(b"data: ")

        await asyncio.gather(*(one() for _ in range(min(streams, 4))))  # warm up
        cpu, wall = time.process_time(), time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        return time.process_time() - cpu, time.perf_counter() - wall, sum(counts)


async def main(streams: int, tokens: int, runs: int) -> None:
    rows: dict[str, list[tuple[float, float]]] = {"bare aiohttp": [], "emulator": []}
    for _ in range(runs):
        runner, url = await bare_server(tokens)
        try:
            cpu, wall, frames = await drive(url, "x", streams, tokens)
        finally:
            await runner.cleanup()
        rows["bare aiohttp"].append((cpu / frames * 1e6, frames / wall))
        async with Emulator(reply_tokens=tokens) as emu:
            cpu, wall, frames = await drive(emu.url, emu.openai_key, streams, tokens)
        rows["emulator"].append((cpu / frames * 1e6, frames / wall))
    print(f"{streams} concurrent streams x {tokens} frames, {runs} runs (median)")
    print(f"{'server':<14} {'CPU us/frame':>13} {'frames/s':>10}")
    medians = {}
    for name, values in rows.items():
        us = statistics.median(v[0] for v in values)
        rate = statistics.median(v[1] for v in values)
        medians[name] = us
        print(f"{name:<14} {us:>13.1f} {rate:>10.0f}")
    print(f"emulator / bare CPU per frame: {medians['emulator'] / medians['bare aiohttp']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    ns = parser.parse_args()
    asyncio.run(main(ns.streams, ns.tokens, ns.runs))
