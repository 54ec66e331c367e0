"""Chat, complete and embed through the token-protected OpenAI-compatible gateway.

    python examples/gateway_chat.py                           # against the embedded emulator
    AIOLLM_GATEWAY_URL=http://gw:8080 AIOLLM_GATEWAY_APPID=... AIOLLM_GATEWAY_SECRET=... \\
        AIOLLM_GATEWAY_ABILITY=app-... python examples/gateway_chat.py llama-2-7b-chat

With ``AIOLLM_GATEWAY_URL`` set it talks to that gateway; otherwise it starts the emulator,
with tokens that live two seconds, and shows the token being fetched once for many concurrent
calls, refreshed ahead of its expiry, a streamed reply made from one JSON answer, and a
gateway error code turning into a typed exception.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

import aiollm
from aiollm.testing import Cadence, Emulator, Fault

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who won the world series in 2020?"},
]


async def tour(client: aiollm.Client, model: str) -> None:
    name = f"gateway/{model}"
    # The gateway answers JSON only: the stream yields one TextDelta, then Usage and Finish.
    async with client.stream(name, MESSAGES) as stream:
        async for event in stream:
            if isinstance(event, aiollm.TextDelta):
                print(event.text, flush=True)
            else:
                print(f"  {event!r}")
    print(f"request id {stream.completion.request_id}\n")

    done = await client.complete(name, "Once upon a time", max_tokens=16, temperature=0.5)
    print(f"completion ({done.finish_reason}): {done.text!r}")

    vectors = await client.embed(name, ["Hello world!", "你好，世界"])
    print(
        f"embeddings: {len(vectors.embeddings)} x {len(vectors.embeddings[0])}, {vectors.usage}\n"
    )


async def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "llama-2-7b-chat"
    if os.environ.get("AIOLLM_GATEWAY_URL"):
        async with aiollm.Client() as client:
            await tour(client, model)
        return
    async with Emulator(cadence=Cadence(first_token=0.1, per_token=0.005)) as emu:
        emu.state.gateway.token_lifetime = 2
        async with emu.client() as client:
            await tour(client, model)

            async def ask() -> None:
                await client.chat(f"gateway/{model}", MESSAGES)

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(ask)
            print(f"after 23 calls: {emu.stats.requests['gateway.token']} token request(s)")
            await anyio.sleep(2)
            await ask()
            print(f"2 s later: {emu.stats.requests['gateway.token']} (refreshed before expiry)")

            emu.script("gateway", Fault("error", code=-98432, message="SENSITIVE_WORD_ERROR"))
            try:
                await ask()
            except aiollm.ContentFilterError as exc:
                print(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    anyio.run(main)
