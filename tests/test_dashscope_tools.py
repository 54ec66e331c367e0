"""DashScope message format: reasoning and (parallel) tool calls in incremental and cumulative
streams, sans-IO; requests with tools ask for the message format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from decoding import decoded

import aiollm
from aiollm import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from aiollm.events import ToolCall, fold
from aiollm.providers._base import Call
from aiollm.providers.dashscope import DashScopeDecoder, DashScopeProvider

CALLS = [("call_1", "get_weather", '{"city": "杭州"}'), ("call_2", "get_time", '{"tz": "CST"}')]
REASONING = ["先查", "天气", "再查时间"]


def decoder(**params: Any) -> DashScopeDecoder:
    return DashScopeDecoder(Call(op="chat", model="qwen-plus", stream=True, params=params), 200, {})


def frame(n: int, message: dict[str, Any], finish: str = "null", usage: bool = False) -> bytes:
    obj: dict[str, Any] = {
        "output": {
            "choices": [{"message": {"role": "assistant", **message}, "finish_reason": finish}]
        },
        "request_id": "rid",
    }
    if usage:
        obj["usage"] = {
            "input_tokens": 20,
            "output_tokens": 30,
            "total_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 9},
            "prompt_tokens_details": {"cached_tokens": 4},
        }
    data = json.dumps(obj, ensure_ascii=False).encode()
    return f"id:{n}\nevent:result\n:HTTP_STATUS/200\n".encode() + b"data:" + data + b"\n\n"


def pieces(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def incremental_stream() -> bytes:
    """Reasoning pieces, then each call: a first fragment with id and name, then argument
    pieces with an empty id (the documented incremental shape)."""
    frames = [{"content": "", "reasoning_content": r} for r in REASONING]
    for index, (id_, name, args) in enumerate(CALLS):
        head = {
            "index": index,
            "id": id_,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        frames.append({"content": "", "tool_calls": [head]})
        for piece in pieces(args):
            frag = {"index": index, "id": "", "type": "function", "function": {"arguments": piece}}
            frames.append({"content": "", "tool_calls": [frag]})
    out = [frame(i + 1, m) for i, m in enumerate(frames)]
    out.append(frame(len(frames) + 1, {"content": ""}, "tool_calls", usage=True))
    return b"".join(out)


def cumulative_stream() -> bytes:
    """Every frame repeats everything so far: reasoning, then every call with its arguments."""
    frames: list[dict[str, Any]] = []
    reasoning = ""
    for r in REASONING:
        reasoning += r
        frames.append({"content": "", "reasoning_content": reasoning})
    done: list[dict[str, Any]] = []
    for index, (id_, name, args) in enumerate(CALLS):
        so_far = ""
        for piece in ["", *pieces(args)]:
            so_far += piece
            call = {
                "index": index,
                "id": id_,
                "type": "function",
                "function": {"name": name, "arguments": so_far},
            }
            frames.append(
                {"content": "", "reasoning_content": reasoning, "tool_calls": [*done, call]}
            )
        done.append(call)
    out = [frame(i + 1, m) for i, m in enumerate(frames)]
    out.append(frame(len(frames) + 1, frames[-1], "tool_calls", usage=True))
    return b"".join(out)


EXPECTED = [ToolCall(id=i, name=n, arguments=a) for i, n, a in CALLS]


@pytest.mark.parametrize(
    ("body", "params", "mode"),
    [
        (incremental_stream, {"incremental_output": True}, "incremental"),
        (incremental_stream, {}, "incremental"),
        (cumulative_stream, {"incremental_output": False}, "cumulative"),
        (cumulative_stream, {}, "cumulative"),  # asked for incremental, the server ignored it
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_parallel_tool_calls_and_reasoning_in_every_mode(
    body: Any, params: dict[str, Any], mode: str, chunk: int | None
) -> None:
    raw = body()
    parts = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    events = decoded(decoder(**params), parts, info=True)
    completion = fold(events)
    assert completion.tool_calls == EXPECTED
    assert completion.reasoning == "".join(REASONING) and completion.text == ""
    assert completion.extra["stream_mode"] == mode
    assert completion.usage == Usage(20, 30, 50, 9, 4)
    assert events[-2:] == [completion.usage, Finish("tool_calls")]
    # reasoning first, each piece once; no name or id is repeated into another call
    kinds = [type(e) for e in events if type(e) in (ReasoningDelta, ToolCallDelta)]
    assert kinds.index(ToolCallDelta) == sum(k is ReasoningDelta for k in kinds)
    named = [e for e in events if isinstance(e, ToolCallDelta) and e.name]
    assert len({(e.index, e.name) for e in named}) == len(CALLS)


def test_cumulative_deltas_are_exactly_the_new_pieces() -> None:
    events = decoded(decoder(incremental_output=False), [cumulative_stream()])
    arguments = [e.arguments for e in events if isinstance(e, ToolCallDelta) and e.arguments]
    assert arguments == pieces(CALLS[0][2]) + pieces(CALLS[1][2])
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == REASONING


def test_a_cumulative_frame_that_changes_a_call_is_a_protocol_error() -> None:
    call = {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}
    changed = {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"y": 1}'}}
    body = frame(1, {"tool_calls": [call]}) + frame(2, {"tool_calls": [changed]})
    with pytest.raises(aiollm.ProtocolError, match="tool call 0"):
        decoded(decoder(incremental_output=False), [body])


def test_reasoning_then_text_incremental() -> None:
    body = (
        frame(1, {"content": "", "reasoning_content": "想"})
        + frame(2, {"content": "", "reasoning_content": "一想"})
        + frame(3, {"content": "答"})
        + frame(4, {"content": "案"}, "stop")
    )
    events = decoded(decoder(), [body])
    assert events == [
        ReasoningDelta("想"),
        ReasoningDelta("一想"),
        TextDelta("答"),
        TextDelta("案"),
        Finish("stop"),
    ]


# -- requests ---------------------------------------------------------------------------------
def body_of(**params: Any) -> dict[str, Any]:
    provider = DashScopeProvider({"api_key": "k"}, {})
    call = Call(
        "chat", "qwen-plus", True, messages=[{"role": "user", "content": "hi"}], params=params
    )
    return json.loads(provider.prepare(call).body)


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def test_tools_ask_for_the_message_format() -> None:
    parameters = body_of(tools=TOOLS, tool_choice="auto", parallel_tool_calls=True)["parameters"]
    assert parameters["result_format"] == "message" and parameters["tools"] == TOOLS
    assert parameters["parallel_tool_calls"] is True and parameters["tool_choice"] == "auto"
    thinking = body_of(enable_thinking=True, thinking_budget=100)["parameters"]
    assert thinking["result_format"] == "message" and thinking["thinking_budget"] == 100
    assert "result_format" not in body_of()["parameters"]


def test_tools_with_the_text_format_are_refused_before_sending() -> None:
    with pytest.raises(aiollm.InvalidRequestError, match="result_format='message'"):
        body_of(tools=TOOLS, result_format="text")


def test_a_tool_round_trip_is_sent_as_given() -> None:
    completion = aiollm.Completion(text="", tool_calls=EXPECTED[:1])
    messages = [
        {"role": "user", "content": "天气?"},
        completion.to_message(),
        {"role": "tool", "tool_call_id": "call_1", "content": "晴"},
    ]
    provider = DashScopeProvider({"api_key": "k"}, {})
    call = Call("chat", "qwen-plus", True, messages=messages, params={"tools": TOOLS})
    sent = json.loads(provider.prepare(call).body)["input"]["messages"]
    assert sent == messages
