"""aiollm vs the official SDKs on the same local workloads (``nox -s bench_sdks`` installs them).

Against the local server (its own process), each workload is streamed by aiollm and by the
provider's official async client, each pointed at the server by its own base-URL setting:

- OpenAI format, 200,000 frames: openai-python ``AsyncOpenAI(base_url=...)``,
  ``chat.completions.create(stream=True)``;
- DashScope, 20,000 incremental frames: dashscope ``AioGeneration.call(stream=True,
  incremental_output=True, base_address=...)``;
- Qianfan, 20,000 frames: qianfan ``ChatCompletion().ado(stream=True)`` with
  ``QIANFAN_BASE_URL`` (it fetches its access token from the local server too).

Reported: text deltas per second (best of ``--runs``) and aiollm / SDK. Target: >= 5x each.
Also 100 sequential short (16-frame) streams per client, as ms per request.

    python benchmarks/bench_sdks.py [--runs 2] [--openai-frames N] [--frames N] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from _local import (
    API_KEY,
    MESSAGES,
    aiollm_settings,
    aiollm_stream,
    best,
    local_server,
    machine_line,
    verdict,
)

from aiollm import Client

TARGET = 5.0
SHORT = 16
SEQUENTIAL = 100


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# -- the official clients -------------------------------------------------------------------
class OpenAISDK:
    name = "openai"
    dist = "openai"

    def __init__(self, origin: str) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=f"{origin}/v1", api_key=API_KEY, max_retries=0)

    async def stream(self, frames: int) -> int:
        n = 0
        stream = await self.client.chat.completions.create(
            model=f"frames-{frames}",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                n += 1
        return n

    async def aclose(self) -> None:
        await self.client.close()


class DashScopeSDK:
    name = "dashscope"
    dist = "dashscope"

    def __init__(self, origin: str) -> None:
        self.base = f"{origin}/api/v1"

    async def stream(self, frames: int) -> int:
        from dashscope import AioGeneration

        n = 0
        responses = await AioGeneration.call(
            model=f"frames-{frames}",
            messages=MESSAGES,
            stream=True,
            incremental_output=True,
            api_key=API_KEY,
            base_address=self.base,
        )
        async for r in responses:  # type: ignore[union-attr]
            output = r.output
            if output is not None and output.text:
                n += 1
        return n

    async def aclose(self) -> None:
        try:
            from dashscope.api_entities.aio_session import close_shared_aio_session
        except ImportError:
            return
        await close_shared_aio_session()


class QianfanSDK:
    name = "qianfan"
    dist = "qianfan"

    def __init__(self, origin: str) -> None:
        os.environ["QIANFAN_BASE_URL"] = origin
        os.environ["QIANFAN_AK"] = "bench-ak"
        os.environ["QIANFAN_SK"] = "bench-sk"
        os.environ.setdefault("QIANFAN_LOG_LEVEL", "WARN")
        import qianfan

        qianfan.disable_log() if hasattr(qianfan, "disable_log") else None
        self.chat = qianfan.ChatCompletion()

    async def stream(self, frames: int) -> int:
        n = 0
        responses = await self.chat.ado(messages=MESSAGES, endpoint=f"frames-{frames}", stream=True)
        async for r in responses:  # type: ignore[union-attr]
            if r["result"]:
                n += 1
        return n

    async def aclose(self) -> None:
        return None


SDKS = {"openai": OpenAISDK, "dashscope": DashScopeSDK, "qianfan": QianfanSDK}


async def best_time(fn: Callable[[], Awaitable[int]], runs: int, expect: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        n = await fn()
        times.append(time.perf_counter() - t0)
        assert n == expect, (n, expect)
    return best(times)


async def sequential(fn: Callable[[], Awaitable[int]]) -> int:
    total = 0
    for _ in range(SEQUENTIAL):
        total += await fn()
    return total


async def compare(name: str, frames: int, runs: int, origin: str, client: Client) -> None:
    sdk: Any = SDKS[name](origin)
    try:
        await sdk.stream(SHORT)  # warm up: connections, token
        await aiollm_stream(client, name, SHORT)
        t_sdk = await best_time(lambda: sdk.stream(frames), runs, frames)
        t_ours = await best_time(lambda: aiollm_stream(client, name, frames), runs, frames)
        s_sdk = await best_time(
            lambda: sequential(lambda: sdk.stream(SHORT)), 1, SHORT * SEQUENTIAL
        )
        s_ours = await best_time(
            lambda: sequential(lambda: aiollm_stream(client, name, SHORT)), runs, SHORT * SEQUENTIAL
        )
    finally:
        await sdk.aclose()
    ratio = t_sdk / t_ours
    print(
        f"{name + ' ' + version(sdk.dist):<22}{format(frames, ','):>9}{frames / t_sdk:>13,.0f}"
        f"{frames / t_ours:>14,.0f}{ratio:>10.1f}x  >= {TARGET:g}x {verdict(ratio >= TARGET)}"
        f"{s_sdk / SEQUENTIAL * 1e3:>12.2f}{s_ours / SEQUENTIAL * 1e3:>10.2f}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--openai-frames", type=int, default=200_000)
    ap.add_argument("--frames", type=int, default=20_000, help="Qianfan and DashScope frames")
    ap.add_argument("--only", choices=sorted(SDKS), action="append")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    print("aiollm vs the official SDKs, same local workloads")
    print(machine_line())
    print(
        f"best of {args.runs} runs each (sequential SDK short streams: one run); local server in a separate process\n"
    )
    print(
        f"{'SDK':<22}{'frames':>9}{'SDK deltas/s':>13}{'aiollm d/s':>14}{'aiollm/SDK':>11}  target    "
        f"{'SDK ms/req':>10}{'aiollm':>10}"
    )
    with local_server() as origin:
        async with Client(providers=aiollm_settings(origin), env={}) as client:
            for name in args.only or ("openai", "dashscope", "qianfan"):
                frames = args.openai_frames if name == "openai" else args.frames
                try:
                    await compare(name, frames, args.runs, origin, client)
                except ImportError as exc:
                    print(f"{name:<22}skipped: {exc} (run it with: nox -s bench_sdks)")


if __name__ == "__main__":
    asyncio.run(main())
