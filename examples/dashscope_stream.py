"""Stream a DashScope reply, and show the same text arriving from a server that sends cumulative frames.

    python examples/dashscope_stream.py                    # against the embedded emulator
    DASHSCOPE_API_KEY=sk-... python examples/dashscope_stream.py qwen-turbo

With ``DASHSCOPE_API_KEY`` set it talks to the real service (``DASHSCOPE_BASE_URL`` and
``DASHSCOPE_WORKSPACE`` are honoured); otherwise it starts the emulator, streams once normally,
once from a server that ignores ``incremental_output`` and without blank lines between frames,
and once with an error inside the stream.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import anyio

import aiollm
from aiollm.testing import Cadence, Emulator, Fault

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "介绍下故宫?"},
]


async def stream_once(client: aiollm.Client, model: str, **params: Any) -> None:
    start = time.perf_counter()
    first: float | None = None
    try:
        async with client.stream(f"dashscope/{model}", MESSAGES, **params) as stream:
            async for event in stream:
                if isinstance(event, aiollm.TextDelta):
                    first = first if first is not None else time.perf_counter() - start
                    print(event.text, end="", flush=True)
        completion = stream.completion
    except aiollm.StreamInterrupted as exc:
        print(f"\n[interrupted after {len(exc.partial.text)} characters: {exc.error!r}]")
        return
    except aiollm.APIError as exc:
        print(f"[{type(exc).__name__}] {exc}")
        return
    print()
    print(
        f"finish={completion.finish_reason} usage={completion.usage} "
        f"mode={completion.extra.get('stream_mode')} id={completion.request_id} "
        f"first token after {first or 0:.2f}s"
    )


async def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "qwen-turbo"
    if os.environ.get("DASHSCOPE_API_KEY"):
        async with aiollm.Client() as client:
            await stream_once(client, model, result_format="message")
        return
    async with Emulator(cadence=Cadence(first_token=0.2, per_token=0.03)) as emu:
        async with emu.client() as client:
            await stream_once(client, model, result_format="message")
            # A gateway that ignores incremental_output and omits blank lines between frames:
            emu.state.dashscope.ignore_incremental = emu.state.dashscope.no_blank_lines = True
            await stream_once(client, model)
            emu.state.dashscope.ignore_incremental = emu.state.dashscope.no_blank_lines = False
            # The service stops mid-answer with an event:error frame (status 500):
            emu.script("dashscope", Fault("error", code="InternalError.Algo", after_tokens=5))
            await stream_once(client, model)
        print(f"server saw {dict(emu.stats.requests)}")


if __name__ == "__main__":
    anyio.run(main)
