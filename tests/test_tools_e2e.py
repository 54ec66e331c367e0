"""Reasoning and tool calls end to end: the real client against the emulator, every provider
and stream mode; one event order everywhere (``Finish`` last, usage before it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import aiollm
from aiollm import Finish, ReasoningDelta, ToolCallDelta, Usage
from aiollm.events import ToolCall
from aiollm.testing import Emulator, Fault, Reply
from aiollm.testing import ToolCall as ScriptedCall

pytestmark = pytest.mark.anyio

WEATHER = ScriptedCall("get_weather", '{"city": "杭州", "unit": "celsius"}', id="call_w")
TIME = ScriptedCall("get_time", '{"tz": "Asia/Shanghai"}', id="call_t")
THINK = "The user wants the weather and the time, so call both tools."
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("get_weather", "get_time")
]
MSGS = [{"role": "user", "content": "杭州天气和时间?"}]
EXPECTED = [
    ToolCall(id="call_w", name="get_weather", arguments=WEATHER.arguments),
    ToolCall(id="call_t", name="get_time", arguments=TIME.arguments),
]

# (model, extra call parameters, how the emulator is set up)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("openai/m", {}),
    "openai-index-zero": ("openai/m", {}),
    "gateway": ("gateway/m", {}),
    "dashscope-incremental": ("dashscope/qwen-plus", {}),
    "dashscope-cumulative": ("dashscope/qwen-plus", {"incremental_output": False}),
    "dashscope-ignored": ("dashscope/qwen-plus", {}),
}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        emulator.state.gateway.allow_stream = True
        yield emulator


def script(emu: Emulator, case: str, reply: Reply) -> tuple[str, dict[str, Any]]:
    model, params = CASES[case]
    if case == "openai-index-zero":
        reply.tool_index = "zero"
    if case == "dashscope-ignored":
        emu.state.dashscope.ignore_incremental = True
    emu.queue_reply(model.split("/")[0], reply)
    return model, params


@pytest.mark.parametrize("case", list(CASES))
async def test_parallel_tool_calls_after_reasoning(emu: Emulator, case: str) -> None:
    model, params = script(emu, case, Reply(reasoning=THINK, tool_calls=[WEATHER, TIME]))
    async with emu.client() as client:
        async with client.stream(model, MSGS, tools=TOOLS, **params) as stream:
            events = [event async for event in stream]
        completion = stream.completion
    assert completion.tool_calls == EXPECTED
    assert [c.parsed() for c in completion.tool_calls] == [
        {"city": "杭州", "unit": "celsius"},
        {"tz": "Asia/Shanghai"},
    ]
    assert completion.reasoning == THINK and completion.text == ""
    assert completion.finish_reason == "tool_calls"
    content = [e for e in events if type(e) in (ReasoningDelta, ToolCallDelta)]
    first_tool = next(i for i, e in enumerate(content) if isinstance(e, ToolCallDelta))
    assert all(isinstance(e, ReasoningDelta) for e in content[:first_tool])
    assert isinstance(events[-1], Finish)
    usage = [i for i, e in enumerate(events) if isinstance(e, Usage)]
    assert usage and usage[-1] < len(events) - 1  # usage comes before Finish


@pytest.mark.parametrize("provider", ["openai", "gateway", "dashscope"])
async def test_reasoning_then_text(emu: Emulator, provider: str) -> None:
    # (Qianfan's chat API reasons only about function calls: its ``thoughts``, tested below.)
    model = {"openai": "openai/m", "gateway": "gateway/m", "dashscope": "dashscope/qwen-plus"}
    emu.queue_reply(provider, Reply(text="晴，25度。", reasoning=THINK))
    params = {"enable_thinking": True} if provider == "dashscope" else {}
    async with emu.client() as client:
        completion = await client.chat(model[provider], MSGS, **params)
    assert completion.text == "晴，25度。" and completion.reasoning == THINK


async def test_qianfan_function_call(emu: Emulator) -> None:
    emu.queue_reply("qianfan", Reply(reasoning=THINK, tool_calls=[WEATHER]))
    async with emu.client() as client:
        async with client.stream("qianfan/ernie", MSGS, tools=TOOLS) as stream:
            events = [event async for event in stream]
    completion = stream.completion
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("get_weather", WEATHER.arguments)
    ]
    assert completion.reasoning == THINK and isinstance(events[-1], Finish)


async def test_legacy_function_call(emu: Emulator) -> None:
    emu.queue_reply("openai", Reply(tool_calls=[WEATHER], legacy_function_call=True))
    async with emu.client() as client:
        completion = await client.chat("openai/m", MSGS)
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("get_weather", WEATHER.arguments)
    ]


async def test_usage_comes_before_finish_on_every_provider(emu: Emulator) -> None:
    async with emu.client() as client:
        for model in ("openai/m", "gateway/m", "dashscope/qwen-plus", "qianfan/ernie"):
            events = [e async for e in client.stream(model, MSGS)]
            kinds = [type(e) for e in events]
            assert kinds[-1] is Finish and Usage in kinds, model
            assert kinds.index(Usage) < kinds.index(Finish), model


async def test_an_interrupted_stream_keeps_the_tool_calls_and_reasoning_so_far(
    emu: Emulator,
) -> None:
    reasoning_pieces = len(THINK.split())
    emu.queue_reply("openai", Reply(reasoning=THINK, tool_calls=[WEATHER, TIME]))
    emu.script("openai", Fault("reset", after_tokens=reasoning_pieces + 4))
    async with emu.client() as client:
        with pytest.raises(aiollm.StreamInterrupted) as info:
            async for _ in client.stream("openai/m", MSGS, tools=TOOLS):
                pass
    partial = info.value.partial
    assert partial.reasoning == THINK
    assert partial.tool_calls and partial.tool_calls[0].name == "get_weather"
    assert WEATHER.arguments.startswith(partial.tool_calls[0].arguments)


@pytest.mark.parametrize("model", ["openai/m", "dashscope/qwen-plus", "qianfan/ernie"])
async def test_a_tool_calling_loop(emu: Emulator, model: str) -> None:
    provider = model.split("/")[0]
    emu.queue_reply(provider, Reply(tool_calls=[WEATHER]), Reply(text="杭州今天晴。"))
    messages: list[dict[str, Any]] = list(MSGS)
    async with emu.client() as client:
        first = await client.chat(model, messages, tools=TOOLS)
        messages.append(first.to_message())
        for call in first.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"sky": "晴"}'})
        second = await client.chat(model, messages, tools=TOOLS)
    assert second.text == "杭州今天晴。" and not second.tool_calls


async def test_a_server_that_rejects_stream_options_is_asked_again_without_it() -> None:
    bodies: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        if "stream_options" in body:
            error = {"error": {"message": "Unrecognized request argument: stream_options"}}
            return web.json_response(error, status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delta, finish in (({"content": "hi"}, None), ({}, "stop")):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            await resp.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        settings = {"openai": {"base_url": url, "api_key": "k"}}
        async with aiollm.Client(providers=settings, env={}) as client:
            first = await client.stream("openai/m", MSGS).final()
            second = await client.stream("openai/m", MSGS).final()
    finally:
        await runner.cleanup()
    assert first.text == second.text == "hi" and first.usage is None
    # asked once with the option, then without it: this call's retry and every later call
    assert ["stream_options" in b for b in bodies] == [True, False, False]
