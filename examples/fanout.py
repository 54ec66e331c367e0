"""Fire 200 calls at a provider limited to 50 requests/s and 16 concurrent streams.

    python examples/fanout.py

Runs against the embedded emulator; with real keys, use ``aiollm.Client(limits=...)`` instead.
"""

from __future__ import annotations

import time

import anyio

import aiollm
from aiollm import fanout
from aiollm.testing import Cadence, Emulator, Fault


async def main() -> None:
    async with Emulator(cadence=Cadence(first_token=0.05, per_token=0.005)) as emu:
        # The provider throttles a burst: the client cools down and retries, nobody fails.
        emu.script("openai", *[Fault("http", status=429, retry_after=0.5)] * 5)
        limits = {"openai": aiollm.Limits(requests_per_second=50, max_concurrency=16)}
        async with emu.client(limits=limits, max_retries=5) as client:
            start = time.perf_counter()
            replies = await fanout.map(
                lambda i: client.chat("openai/m", messages=[{"role": "user", "content": f"q{i}"}]),
                range(200),
                concurrency=64,
            )
            elapsed = time.perf_counter() - start
        print(f"{len(replies)} replies in {elapsed:.2f}s; server saw {emu.stats.requests}")
        print(f"most requests in flight at the server: {emu.stats.max_in_flight}")

        # Several streams at once, interleaved as they arrive.
        async with emu.client() as client:
            streams = {m: client.stream("openai/m", prompt=m) for m in ("a", "b", "c")}
            async for key, event in fanout.merge(streams):
                if isinstance(event, aiollm.TextDelta):
                    print(f"[{key}]{event.text}", end="")
            print()


if __name__ == "__main__":
    anyio.run(main)
