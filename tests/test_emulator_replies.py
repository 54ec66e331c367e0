"""Scripted replies (reasoning, tool calls) in every provider's frame shapes, read as raw HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emu_wire import Wire

from aiollm.testing import Emulator, Reply, ToolCall

pytestmark = pytest.mark.anyio

WEATHER = ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}', id="call_w")
TIME = ToolCall("get_time", '{"tz": "Europe/Paris"}')
THINK = "The user wants the weather and the time."


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        emulator.state.gateway.allow_stream = True
        yield emulator


@pytest.fixture
async def wire(emu: Emulator) -> AsyncIterator[Wire]:
    async with aiohttp.ClientSession() as session:
        yield Wire(emu, session)


def deltas(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["delta"] for f in frames for c in f.get("choices", [])]


# -- OpenAI-compatible ---------------------------------------------------------------------------
async def test_openai_reasoning_then_text_and_usage_details(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(text="It is sunny.", reasoning=THINK, cached_tokens=7))
    raw = await wire.request("openai", params={"stream_options": {"include_usage": True}})
    frames = raw.datas()
    ds = deltas(frames)
    kinds = [
        "reasoning" if "reasoning_content" in d else "text" if "content" in d else "-" for d in ds
    ]
    assert kinds == sorted(kinds, key=["reasoning", "text", "-"].index)  # reasoning first
    assert "".join(d.get("reasoning_content", "") for d in ds) == THINK
    assert "".join(d.get("content", "") for d in ds) == "It is sunny."
    usage = frames[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == kinds.count("reasoning")
    assert usage["prompt_tokens_details"] == {"cached_tokens": 7}
    assert frames[-2]["choices"][0]["finish_reason"] == "stop"
    record = emu.stats.log[-1]
    assert record.reasoning == THINK and record.text == "It is sunny."


async def test_openai_reasoning_field_variant(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(text="ok", reasoning=THINK, reasoning_field="reasoning"))
    ds = deltas((await wire.request("openai")).datas())
    assert "".join(d.get("reasoning", "") for d in ds) == THINK
    assert not any("reasoning_content" in d for d in ds)


def merge_by_index(ds: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for d in ds:
        for tc in d.get("tool_calls", []):
            call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.get("id", "")
            call["name"] += tc.get("function", {}).get("name", "")
            call["arguments"] += tc["function"]["arguments"]
    return calls


async def test_openai_parallel_tool_calls(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(reasoning=THINK, tool_calls=[WEATHER, TIME]))
    frames = (await wire.request("openai")).datas()
    ds = deltas(frames)
    entries = [tc for d in ds for tc in d.get("tool_calls", [])]
    firsts = [tc for tc in entries if "id" in tc]
    assert [(tc["index"], tc["type"], tc["function"]) for tc in firsts] == [
        (0, "function", {"name": "get_weather", "arguments": ""}),
        (1, "function", {"name": "get_time", "arguments": ""}),
    ]
    assert firsts[0]["id"] == "call_w" and firsts[1]["id"].startswith("call_")
    rest = [tc for tc in entries if "id" not in tc]
    assert rest and all(set(tc) == {"index", "function"} for tc in rest)
    assert all(set(tc["function"]) == {"arguments"} for tc in rest)
    calls = merge_by_index(ds)
    assert calls[0]["arguments"] == WEATHER.arguments and calls[1]["arguments"] == TIME.arguments
    assert json.loads(calls[1]["arguments"]) == {"tz": "Europe/Paris"}
    assert frames[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(d.get("content") for d in ds)


async def test_openai_index_zero_for_every_call(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(tool_calls=[WEATHER, TIME], tool_index="zero"))
    ds = deltas((await wire.request("openai")).datas())
    entries = [tc for d in ds for tc in d.get("tool_calls", [])]
    assert {tc["index"] for tc in entries} == {0}
    # only the ids tell the calls apart: a new id starts a new call
    calls: list[dict[str, str]] = []
    for tc in entries:
        if "id" in tc:
            calls.append({"id": tc["id"], "name": tc["function"]["name"], "arguments": ""})
        calls[-1]["arguments"] += tc["function"]["arguments"]
    assert [(c["name"], c["arguments"]) for c in calls] == [
        ("get_weather", WEATHER.arguments),
        ("get_time", TIME.arguments),
    ]


async def test_openai_legacy_function_call(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(tool_calls=[WEATHER], legacy_function_call=True))
    frames = (await wire.request("openai")).datas()
    ds = deltas(frames)
    fcs = [d["function_call"] for d in ds if "function_call" in d]
    assert fcs[0] == {"name": "get_weather", "arguments": ""}
    assert "".join(fc["arguments"] for fc in fcs) == WEATHER.arguments
    assert all("name" not in fc for fc in fcs[1:])
    assert frames[-1]["choices"][0]["finish_reason"] == "function_call"


async def test_openai_whole_answer(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(reasoning=THINK, tool_calls=[WEATHER]))
    body = (await wire.request("openai", stream=False)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["reasoning_content"] == THINK
    assert message["tool_calls"] == [
        {
            "id": "call_w",
            "type": "function",
            "function": {"name": "get_weather", "arguments": WEATHER.arguments},
        }
    ]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


async def test_gateway_speaks_the_same_shapes(emu: Emulator, wire: Wire) -> None:
    emu.set_reply("tools-model", Reply(tool_calls=[WEATHER, TIME]))
    calls = merge_by_index(deltas((await wire.request("gateway", model="tools-model")).datas()))
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    whole = (await wire.request("gateway", stream=False, model="tools-model")).json()
    assert len(whole["choices"][0]["message"]["tool_calls"]) == 2


async def test_replies_per_model_and_per_request(emu: Emulator, wire: Wire) -> None:
    emu.set_reply("scripted", Reply(text="by model"))
    emu.queue_reply("openai", Reply(text="first"), Reply(text="second"))
    texts = []
    for model in ("scripted", "other", "other", "scripted"):
        body = (await wire.request("openai", stream=False, model=model)).json()
        texts.append(body["choices"][0]["message"]["content"])
    assert texts[:2] == ["first", "second"] and texts[3] == "by model"
    assert texts[2] not in ("first", "second", "by model")  # the default reply again
    emu.set_reply("scripted", None)
    assert emu.replies == {}


# -- DashScope -----------------------------------------------------------------------------------
def ds_messages(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["output"]["choices"][0]["message"] for f in frames]


async def test_dashscope_incremental_reasoning_and_parallel_tool_calls(
    emu: Emulator, wire: Wire
) -> None:
    emu.queue_reply("dashscope", Reply(reasoning=THINK, tool_calls=[WEATHER, TIME]))
    params = {"result_format": "message", "incremental_output": True}
    frames = (await wire.request("dashscope", params=params)).datas()
    messages = ds_messages(frames)
    assert "".join(m.get("reasoning_content", "") for m in messages) == THINK
    entries = [tc for m in messages for tc in m.get("tool_calls", [])]
    firsts = [tc for tc in entries if tc["id"]]
    assert [(tc["index"], tc["function"]["name"]) for tc in firsts] == [
        (0, "get_weather"),
        (1, "get_time"),
    ]
    for index, call in ((0, WEATHER), (1, TIME)):
        args = "".join(tc["function"]["arguments"] for tc in entries if tc["index"] == index)
        assert args == call.arguments
    choices = [f["output"]["choices"][0] for f in frames]
    assert {c["finish_reason"] for c in choices[:-1]} == {"null"}
    assert choices[-1]["finish_reason"] == "tool_calls"
    assert frames[-1]["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


async def test_dashscope_cumulative_frames_extend_each_other(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply(
        "dashscope", Reply(text="Checking.", reasoning=THINK, tool_calls=[WEATHER, TIME])
    )
    frames = (await wire.request("dashscope", params={"result_format": "message"})).datas()
    messages = ds_messages(frames)
    previous: dict[str, Any] = {"content": "", "reasoning_content": "", "tool_calls": []}
    for m in messages:
        assert m["content"].startswith(previous["content"])
        assert m["reasoning_content"].startswith(previous["reasoning_content"])
        calls = m.get("tool_calls", [])
        assert len(calls) >= len(previous["tool_calls"])
        for old, new in zip(previous["tool_calls"], calls, strict=False):
            assert new["id"] == old["id"] and new["function"]["name"] == old["function"]["name"]
            assert new["function"]["arguments"].startswith(old["function"]["arguments"])
        previous = {**m, "tool_calls": calls}
    last = messages[-1]
    assert last["content"] == "Checking." and last["reasoning_content"] == THINK
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in last["tool_calls"]] == [
        ("get_weather", WEATHER.arguments),
        ("get_time", TIME.arguments),
    ]
    assert frames[-1]["output"]["choices"][0]["finish_reason"] == "tool_calls"
    record = emu.stats.log[-1]  # the log holds what is new in each frame
    assert record.text == "Checking." and record.reasoning == THINK


async def test_dashscope_whole_answer_and_text_format(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("dashscope", Reply(text="Hi", reasoning=THINK, tool_calls=[WEATHER]))
    emu.queue_reply("dashscope", Reply(text="Hi", reasoning=THINK, tool_calls=[WEATHER]))
    body = (
        await wire.request("dashscope", stream=False, params={"result_format": "message"})
    ).json()
    choice = body["output"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == THINK
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    text = (await wire.request("dashscope", params={"incremental_output": True})).datas()
    assert "".join(f["output"]["text"] for f in text) == "Hi"  # the text format has text only


# -- Qianfan -------------------------------------------------------------------------------------
async def test_qianfan_function_call(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("qianfan", Reply(text="Let me check.", reasoning=THINK, tool_calls=[WEATHER]))
    frames = (await wire.request("qianfan")).datas()
    assert "".join(f["result"] for f in frames) == "Let me check."
    *before, last = frames
    assert not any("function_call" in f or f["is_end"] for f in before)
    assert last["is_end"] and last["finish_reason"] == "function_call"
    assert last["function_call"] == {
        "name": "get_weather",
        "arguments": WEATHER.arguments,
        "thoughts": THINK,
    }
    assert [f["sentence_id"] for f in frames] == list(range(len(frames)))
    emu.set_reply("ernie-bot", Reply(tool_calls=[WEATHER]))
    whole = (await wire.request("qianfan", stream=False, model="ernie-bot")).json()
    assert whole["function_call"]["name"] == "get_weather" and whole["result"] == ""
    assert whole["finish_reason"] == "function_call" and "thoughts" not in whole["function_call"]


async def test_openai_refusal(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("openai", Reply(refusal="I can't help with that."))
    emu.queue_reply("openai", Reply(refusal="No."))
    ds = deltas((await wire.request("openai")).datas())
    assert "".join(d.get("refusal", "") for d in ds) == "I can't help with that."
    assert not any(d.get("content") for d in ds)
    whole = (await wire.request("openai", stream=False)).json()
    assert whole["choices"][0]["message"]["refusal"] == "No."
    assert emu.stats.log[0].frames[0].refusal == "I"


async def test_refusal_is_openai_only(emu: Emulator, wire: Wire) -> None:
    emu.queue_reply("dashscope", Reply(text="ok", refusal="No."))
    params = {"result_format": "message", "incremental_output": True}
    frames = (await wire.request("dashscope", params=params)).datas()
    assert b"No." not in json.dumps(frames).encode()
    assert "".join(m["content"] for m in ds_messages(frames)) == "ok"


async def test_qianfan_accepts_a_function_turn(emu: Emulator, wire: Wire) -> None:
    call = {"name": "get_weather", "arguments": WEATHER.arguments}
    turns = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "function_call": call},
        {"role": "function", "name": "get_weather", "content": '{"temp": 21}'},
    ]
    ok = await wire.request("qianfan", stream=False, body={"messages": turns})
    assert ok.json()["result"]
    orphan = [turns[0], {"role": "assistant", "content": "hi"}, turns[2]]
    bad = await wire.request("qianfan", stream=False, body={"messages": orphan})
    assert bad.json()["error_code"] == 336003
