"""Await a completion and stream another, against the embedded emulator (no keys needed).

    python examples/quickstart.py

Against the real services, drop the emulator and use ``aiollm.Client()`` with the provider's
environment variables set (see the README).
"""

from __future__ import annotations

import anyio

import aiollm
from aiollm.testing import Cadence, Emulator


async def main() -> None:
    async with Emulator(cadence=Cadence(first_token=0.1, per_token=0.02)) as emu:
        async with emu.client() as client:
            reply = await client.chat(
                "openai/any-model", messages=[{"role": "user", "content": "hi"}]
            )
            print("chat:", reply.text, reply.usage)

            async with client.stream("openai/any-model", prompt="tell me more") as stream:
                async for event in stream:
                    if isinstance(event, aiollm.TextDelta):
                        print(event.text, end="", flush=True)
            print("\nfinish:", stream.completion.finish_reason)


if __name__ == "__main__":
    anyio.run(main)
