"""Stream a Qianfan (wenxinworkshop) reply, with a multi-turn history and a system prompt.

    python examples/qianfan_stream.py                 # against the embedded emulator
    QIANFAN_AK=... QIANFAN_SK=... python examples/qianfan_stream.py llama_2_7b

With ``QIANFAN_AK`` / ``QIANFAN_SK`` (or ``QIANFAN_ACCESS_TOKEN``) set it talks to the real
service; otherwise it starts the emulator and also shows a token that expires mid-session
being refreshed without the caller noticing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import anyio

import aiollm
from aiollm.testing import Cadence, Emulator
from aiollm.testing.qianfan import expire_tokens

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "你是一位简洁的旅行顾问。"},
    {"role": "user", "content": "我在上海,周末可以去哪里玩?"},
    {"role": "assistant", "content": "可以去外滩、上海博物馆或者迪士尼乐园。"},
    {"role": "user", "content": "给我推荐一些自驾游路线"},
]


async def stream_once(client: aiollm.Client, endpoint: str) -> None:
    start = time.perf_counter()
    first: float | None = None
    try:
        # trim_history=True drops the oldest turns if all contents exceed 2000 characters.
        async with client.stream(f"qianfan/{endpoint}", HISTORY, trim_history=True) as stream:
            async for event in stream:
                if isinstance(event, aiollm.TextDelta):
                    first = first if first is not None else time.perf_counter() - start
                    print(event.text, end="", flush=True)
                elif isinstance(event, aiollm.SafetyNotice):
                    print(f"\n[safety] {event.message}; start a new conversation")
        completion = stream.completion
    except aiollm.StreamInterrupted as exc:
        print(f"\n[interrupted after {len(exc.partial.text)} characters: {exc.error}]")
        return
    except aiollm.InvalidRequestError as exc:  # the messages rules are checked before sending
        print(f"invalid request: {exc}")
        return
    print()
    print(
        f"finish={completion.finish_reason} usage={completion.usage} "
        f"id={completion.request_id} first token after {first or 0:.2f}s"
    )


async def main() -> None:
    endpoint = sys.argv[1] if len(sys.argv) > 1 else "llama_2_7b"
    if os.environ.get("QIANFAN_AK") or os.environ.get("QIANFAN_ACCESS_TOKEN"):
        async with aiollm.Client() as client:
            await stream_once(client, endpoint)
        return
    async with Emulator(cadence=Cadence(first_token=0.2, per_token=0.03)) as emu:
        async with emu.client() as client:
            await stream_once(client, endpoint)
            expire_tokens(emu)  # the service now answers 111 to the cached token
            await stream_once(client, endpoint)
        print(f"server saw {dict(emu.stats.requests)} (one token refresh, one retried call)")


if __name__ == "__main__":
    anyio.run(main)
