"""One worker process of the shared-limits tests (run by tests/test_shared_workers.py).

``python tests/shared_worker.py '<json>'`` with ``port``, ``redis``, ``limits`` (keyword
arguments of :class:`aiollm.Limits`), ``mode`` and ``tasks``. It prints ``READY`` once its
client is built and waits for one line on stdin: ``{"end_at": <time.monotonic()>}``.

- ``calls``: ``tasks`` loops of chats (``stream`` false) or streams until ``end_at``, then
  prints ``{"calls": n}``;
- ``hold``: opens ``tasks`` streams, prints ``HELD`` once each has its first event, and
  waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiollm import Client, Limits, TextDelta

MSGS = [{"role": "user", "content": "hello"}]


async def run(cfg: dict[str, Any], end_at: float, client: Client) -> None:
    if cfg["mode"] == "hold":
        held = 0
        all_held = asyncio.Event()

        async def hold() -> None:
            nonlocal held
            async with client.stream("openai/m", MSGS) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        held += 1
                        if held == cfg["tasks"]:
                            all_held.set()
                        await asyncio.Event().wait()

        tasks = [asyncio.create_task(hold()) for _ in range(cfg["tasks"])]
        await all_held.wait()
        print("HELD", flush=True)
        await asyncio.gather(*tasks)
        return
    calls = 0

    async def loop() -> None:
        nonlocal calls
        while time.monotonic() < end_at:
            await client.chat("openai/m", MSGS)
            calls += 1

    await asyncio.gather(*(loop() for _ in range(cfg["tasks"])))
    # Let the last bodies end before the client closes their connections (closing them
    # gives their slots back at once, while the server may not have noticed yet).
    deadline = time.monotonic() + 2.0
    while client._transport._lingering and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    print(json.dumps({"calls": calls}), flush=True)


async def main(cfg: dict[str, Any]) -> None:
    settings = {"openai": {"base_url": f"http://127.0.0.1:{cfg['port']}/v1", "api_key": "k"}}
    limits = Limits(shared=cfg["redis"], **cfg["limits"])
    async with Client(providers=settings, limits={"openai": limits}) as client:
        # Warm up before the clock starts: the first call imports and builds what it needs,
        # and the first Redis call connects.
        if cfg.get("warm_up"):
            await client.chat("openai/m", MSGS)
        shared = client.limiter("openai").shared
        assert shared is not None
        await shared._client().ping()
        print("READY", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await run(cfg, json.loads(line)["end_at"], client)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
