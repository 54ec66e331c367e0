"""How accurate is ``aiollm bench``? Its report against the server's own send times.

A cadence server runs in its own process (this file with ``--serve``): an OpenAI-compatible
``/v1/chat/completions`` that sends the first token 200 ms after a request arrived, then one
every 20 ms, 64 tokens, and records when each frame was handed to the socket (``time.
perf_counter``: CLOCK_MONOTONIC, the same clock in both processes on Linux). ``aiollm bench``
runs against it at 1, 16, 64 and 256 concurrent streams; each request's TTFT, inter-token gaps
and end-to-end latency are compared with the truth: the server's send times measured from the
moment the client sent the request. Printed per level: medians and p99s (client vs truth) and
the client's CPU seconds per 1,000 tokens.

Then the figure an old test asserted: the embedded emulator (same process) with a 50 ms first
token, 10 ms per token, 12 tokens, concurrency 1 — the median TTFT and its offset.

    python benchmarks/bench_accuracy.py [--levels 1,16,64,256] [--requests 64] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FIRST = 0.200
STEP = 0.020
TOKENS = 64


# -- the cadence server (its own process) --------------------------------------------------------
def serve(port_file: str) -> None:
    from aiohttp import web

    log: dict[str, dict[str, Any]] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        body = await request.json()
        key = str(body["messages"][-1]["content"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent: list[float] = []
        for i in range(TOKENS):
            target = received + FIRST + STEP * i
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
            }
            await resp.write(b"data: " + json.dumps(frame).encode() + b"\n\n")
            sent.append(time.perf_counter())
        last = {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": TOKENS, "total_tokens": 72},
        }
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        log[key] = {"received": received, "sent": sent, "end": time.perf_counter()}
        return resp

    async def dump(request: web.Request) -> web.Response:
        data = dict(log)
        log.clear()
        return web.json_response(data)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/log", dump)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        Path(port_file).write_text(str(port))
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the client side ---------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    from aiollm.bench import percentile

    return percentile(sorted(values), q)


async def measure(port: int, concurrency: int, requests: int, read_clock: bool) -> dict[str, Any]:
    import aiohttp

    import aiollm._response as response

    saved = response._read_clock
    if not read_clock:  # the baseline: stamped when the reading task resumed
        response._read_clock = lambda resp: None

    from aiollm import Client
    from aiollm.bench import run

    settings = {"openai": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k"}}
    async with Client(providers=settings, env={}, connection_limit=concurrency + 8) as client:
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        result = await run(
            models=["openai/cadence"],
            client=client,
            concurrency=concurrency,
            requests=requests,
            warmup=concurrency,  # every connection open before measuring
            max_tokens=TOKENS,
        )
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        response._read_clock = saved
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/log") as resp:
                truth: dict[str, Any] = await resp.json()
    (summary,) = result.runs
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    # the client's send time of each request, on the shared clock
    from aiollm.bench._workload import synthetic_prompt

    got: dict[str, list[float]] = {"ttft": [], "itl": [], "e2el": []}
    real: dict[str, list[float]] = {"ttft": [], "itl": [], "e2el": []}
    err: dict[str, list[float]] = {"ttft": [], "itl": [], "e2el": []}
    base = summary.started_at
    for rec in summary.records:
        if not rec.ok or rec.ttft is None or rec.e2el is None:
            continue
        key = synthetic_prompt(rec.index, 32)[-1]["content"]
        server = truth.get(key)
        if server is None:
            continue
        sent_at = base + rec.start
        s_times = [t - sent_at for t in server["sent"]]
        got["ttft"].append(rec.ttft)
        real["ttft"].append(s_times[0])
        err["ttft"].append(rec.ttft - s_times[0])
        gaps_c = rec.itl
        gaps_s = [b - a for a, b in itertools.pairwise(s_times)]
        if len(gaps_c) == len(gaps_s):
            got["itl"].extend(gaps_c)
            real["itl"].extend(gaps_s)
            err["itl"].extend(c - s for c, s in zip(gaps_c, gaps_s, strict=True))
        got["e2el"].append(rec.e2el)
        real["e2el"].append(server["end"] - sent_at)
        err["e2el"].append(rec.e2el - (server["end"] - sent_at))
    tokens = summary.figures["total_output_tokens"]
    return {
        "stamp": "socket read" if read_clock else "task resumed",
        "concurrency": concurrency,
        "lag_p99": summary.figures.get("client_loop_lag_p99_ms"),
        "matched": len(err["ttft"]),
        "got": got,
        "real": real,
        "err": err,
        "cpu_per_1k": cpu / max(tokens, 1) * 1000.0,
    }


def fmt(values: list[float]) -> str:
    if not values:
        return "        -         -"
    return f"{statistics.median(values) * 1000:9.2f} {pct(values, 99) * 1000:9.2f}"


def client_main(args: argparse.Namespace) -> None:
    import anyio

    port_file = Path(f"/tmp/aiollm-accuracy-{os.getpid()}.port")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port_file)], stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise SystemExit("the cadence server did not start")
            time.sleep(0.05)
        port = int(port_file.read_text())
        print(
            f"cadence server: first token {FIRST * 1000:.0f} ms, then {STEP * 1000:.0f} ms per "
            f"token, {TOKENS} tokens; client errors against the server's send times (ms)"
        )
        print(
            f"{'stamped at':>12} {'streams':>7} {'n':>5} | {'TTFT med':>9} {'p99':>9} | {'truth med':>9} {'p99':>9} "
            f"| {'ITL med':>9} {'p99':>9} | {'truth med':>9} {'p99':>9} | {'E2E med':>9} "
            f"{'p99':>9} | {'truth med':>9} {'p99':>9} | {'err TTFT p50/p99':>17} "
            f"{'err ITL p50/p99':>16} | CPU s/1k tok | loop lag p99"
        )
        for level in args.levels:
            for _ in range(args.runs):
                for read_clock in (True, False):
                    requests = max(args.requests, level * 2)
                    r = anyio.run(measure, port, level, requests, read_clock)
                    e = r["err"]
                    print(
                        f"{r['stamp']:>12} {level:>7} {r['matched']:>5} | {fmt(r['got']['ttft'])} | "
                        f"{fmt(r['real']['ttft'])} | {fmt(r['got']['itl'])} | "
                        f"{fmt(r['real']['itl'])} | {fmt(r['got']['e2el'])} | "
                        f"{fmt(r['real']['e2el'])} | "
                        f"{statistics.median(e['ttft']) * 1000:+8.2f}/{pct(e['ttft'], 99) * 1000:+7.2f} "
                        f"{statistics.median(e['itl']) * 1000:+8.2f}/{pct(e['itl'], 99) * 1000:+7.2f}"
                        f" | {r['cpu_per_1k']:12.3f} | {r['lag_p99'] or 0:9.1f} ms"
                    )
    finally:
        server.terminate()
        server.wait(10)
        port_file.unlink(missing_ok=True)
    emulator_figure()


def emulator_figure() -> None:
    import anyio

    from aiollm.bench import run

    async def one() -> Any:
        return await run(
            models=["openai/m"],
            emulator=True,
            first_token=0.05,
            per_token=0.01,
            max_tokens=12,
            concurrency=1,
            requests=10,
            warmup=1,
        )

    result = anyio.run(one)
    f = result.runs[0].figures
    print(
        f"\nembedded emulator, 50 ms first token, 10 ms per token, concurrency 1: median TTFT "
        f"{f['median_ttft_ms']:.2f} ms ({f['median_ttft_ms'] - 50:+.2f} ms), median ITL "
        f"{f['median_itl_ms']:.2f} ms ({f['median_itl_ms'] - 10:+.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument(
        "--levels",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[1, 16, 64, 256],
        help="concurrent streams (default 1,16,64,256)",
    )
    parser.add_argument("--requests", type=int, default=32, help="requests per level (min 2x)")
    parser.add_argument("--runs", type=int, default=1, help="runs per level")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    client_main(args)


if __name__ == "__main__":
    main()
