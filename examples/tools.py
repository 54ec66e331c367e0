"""A tool-calling loop (call → tool result → call) and a reasoning model, against the emulator.

    python examples/tools.py                      # every provider of the embedded emulator
    python examples/tools.py dashscope/qwen-plus  # a real provider (its keys in the environment)

The same loop works on every provider: aiollm sends tools, tool calls and tool results in each
provider's own wire shape (DashScope needs ``result_format='message'``, which aiollm sets when
tools are given; Qianfan takes them as ``functions`` and ``function_call``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

import aiollm
from aiollm.testing import Emulator, Reply, ToolCall

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city today",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def get_weather(city: str) -> dict[str, Any]:
    """The tool itself (here a stand-in)."""
    return {"city": city, "sky": "sunny", "celsius": 25}


async def ask(client: aiollm.Client, model: str, question: str) -> str:
    """Ask, run the tools the model calls, send their results back, until it answers."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    while True:
        async with client.stream(model, messages, tools=TOOLS) as stream:
            async for event in stream:
                if isinstance(event, aiollm.ReasoningDelta):
                    print(f"\033[2m{event.text}\033[0m", end="", flush=True)
                elif isinstance(event, aiollm.TextDelta):
                    print(event.text, end="", flush=True)
        reply = stream.completion
        if not reply.tool_calls:
            print()
            return reply.text
        messages.append(reply.to_message())
        for call in reply.tool_calls:
            result = get_weather(**call.parsed())  # ToolArgumentsError if not valid JSON
            print(f"\n[{call.name}({call.arguments}) -> {result}]")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "name": call.name,
                    "content": json.dumps(result),
                }
            )


async def main() -> None:
    if len(sys.argv) > 1:
        async with aiollm.Client() as client:
            await ask(client, sys.argv[1], "What is the weather in Hangzhou?")
        return
    async with Emulator() as emu, emu.client() as client:
        for model in ("openai/any-model", "dashscope/qwen-plus", "qianfan/ernie-3.5"):
            provider = model.split("/")[0]
            emu.queue_reply(
                provider,
                Reply(
                    reasoning="The user asks about the weather: call the tool.",
                    tool_calls=[ToolCall("get_weather", '{"city": "Hangzhou"}')],
                ),
                Reply(text="It is sunny in Hangzhou, 25 °C."),
            )
            print(f"== {model}")
            await ask(client, model, "What is the weather in Hangzhou?")


if __name__ == "__main__":
    anyio.run(main)
