"""OpenAI-format reasoning, refusals and tool calls, sans-IO: frames in, typed events out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from decoding import decoded, http_failure

import aiollm
from aiollm import Finish, ReasoningDelta, RefusalDelta, TextDelta, ToolCallDelta, Usage
from aiollm.events import ToolCall, fold
from aiollm.providers._base import Call
from aiollm.providers.openai import OpenAIDecoder, OpenAIProvider


def decoder(**params: Any) -> OpenAIDecoder:
    call = Call(op="chat", model="m", stream=True, params=params)
    return OpenAIDecoder(call, 200, {})


def frame(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    obj = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice], **extra}
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


def tool(
    index: int | None, id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    entry: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        entry["index"] = index
    if id is not None:
        entry["id"] = id
        entry["type"] = "function"
    if name is not None:
        entry["function"]["name"] = name
    return entry


USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 12,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 16},
    "completion_tokens_details": {"reasoning_tokens": 7},
}

PARALLEL = (
    frame({"role": "assistant", "content": None})
    + frame({"tool_calls": [tool(0, "call_a", "get_weather")]})
    + frame({"tool_calls": [tool(0, args='{"city": ')]})
    + frame({"tool_calls": [tool(1, "call_b", "get_time")]})
    + frame({"tool_calls": [tool(0, args='"杭州"}')]})
    + frame({"tool_calls": [tool(1, args='{"tz": "CST"}')]})
    + frame({}, "tool_calls")
    + "data: "
    + json.dumps({"id": "c1", "choices": [], "usage": USAGE})
    + "\n\n"
    + "data: [DONE]\n\n"
)


def test_parallel_tool_calls_then_usage_then_finish_last() -> None:
    events = decoded(decoder(), [PARALLEL])
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(index=0, id="call_a", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city": '),
        ToolCallDelta(index=1, id="call_b", name="get_time"),
        ToolCallDelta(index=0, arguments='"杭州"}'),
        ToolCallDelta(index=1, arguments='{"tz": "CST"}'),
    ]
    assert events[-2:] == [Usage(30, 12, 42, 7, 16), Finish("tool_calls")]
    completion = fold(events)
    assert completion.tool_calls == [
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "杭州"}'),
        ToolCall(id="call_b", name="get_time", arguments='{"tz": "CST"}'),
    ]
    assert [c.parsed() for c in completion.tool_calls] == [{"city": "杭州"}, {"tz": "CST"}]
    assert completion.finish_reason == "tool_calls" and completion.text == ""


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_tool_call_fragments_split_at_every_byte(size: int) -> None:
    body = PARALLEL.encode()
    whole = decoded(decoder(), [body])
    assert decoded(decoder(), [body[i : i + size] for i in range(0, len(body), size)]) == whole


def test_every_call_at_index_zero_is_repaired_by_id() -> None:
    body = (
        frame({"tool_calls": [tool(0, "call_1", "f", '{"a": 1}')]})
        + frame({"tool_calls": [tool(0, "call_2", "g", '{"b":')]})
        + frame({"tool_calls": [tool(0, args=" 2}")]})
        + frame({}, "tool_calls")
        + "data: [DONE]\n\n"
    )
    calls = fold(decoded(decoder(), [body])).tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_1", "f", '{"a": 1}'),
        ("call_2", "g", '{"b": 2}'),
    ]


def test_legacy_function_call() -> None:
    body = (
        frame({"function_call": {"name": "lookup", "arguments": ""}})
        + frame({"function_call": {"arguments": '{"q": "x"}'}})
        + frame({}, "function_call")
        + "data: [DONE]\n\n"
    )
    completion = fold(decoded(decoder(), [body]))
    assert completion.tool_calls == [ToolCall(name="lookup", arguments='{"q": "x"}')]
    assert completion.finish_reason == "function_call"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_then_text(field: str) -> None:
    body = (
        frame({field: "先想"})
        + frame({field: "一想"})
        + frame({"content": "答案"})
        + frame({}, "stop")
        + "data: [DONE]\n\n"
    )
    events = decoded(decoder(), [body])
    assert events == [
        ReasoningDelta("先想"),
        ReasoningDelta("一想"),
        TextDelta("答案"),
        Finish("stop"),
    ]
    completion = fold(events)
    assert completion.reasoning == "先想一想" and completion.text == "答案"


def test_refusal_is_typed_not_dropped() -> None:
    body = frame({"refusal": "I can't "}) + frame({"refusal": "help."}, "stop") + "data: [DONE]\n\n"
    events = decoded(decoder(), [body])
    assert events[:2] == [RefusalDelta("I can't "), RefusalDelta("help.")]
    assert fold(events).refusal == "I can't help." and fold(events).text == ""


def test_whole_response_with_tool_calls_and_reasoning() -> None:
    whole = {
        "id": "r1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "need data",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": USAGE,
    }
    call = Call(op="chat", model="m", stream=False)
    completion = fold(decoded(OpenAIDecoder(call, 200, {}), [json.dumps(whole).encode()]))
    assert completion.reasoning == "need data"
    assert completion.tool_calls == [ToolCall(id="t1", name="f", arguments="{}")]
    assert completion.usage == Usage(30, 12, 42, 7, 16)


# -- <think> inlined in the content (opt-in) ----------------------------------------------------
def test_think_tags_split_across_chunks_when_asked() -> None:
    pieces = ["<thi", "nk>想", "一想</th", "ink>\n\n答", "案"]
    body = "".join(frame({"content": p}) for p in pieces) + frame({}, "stop") + "data: [DONE]\n\n"
    completion = fold(decoded(decoder(think_tags=True), [body]))
    assert completion.reasoning == "想一想" and completion.text == "\n\n答案"
    plain = fold(decoded(decoder(), [body]))
    assert plain.text == "".join(pieces) and plain.reasoning == ""


def test_think_tags_are_not_sent_to_the_server() -> None:
    provider = OpenAIProvider({"base_url": "http://x/v1"}, {})
    call = Call(op="chat", model="m", stream=True, messages=[], params={"think_tags": True})
    body = json.loads(provider.prepare(call).body)
    assert "think_tags" not in body and body["stream_options"] == {"include_usage": True}


# -- stream_options rejected -------------------------------------------------------------------
def test_a_rejected_stream_options_is_a_retryable_typed_error() -> None:
    body = json.dumps(
        {"error": {"message": "Unrecognized request argument: stream_options", "type": "invalid"}}
    ).encode()
    error = http_failure(OpenAIDecoder(Call("chat", "m", True), 400, {}), body)
    assert isinstance(error, aiollm.StreamOptionsRejectedError) and error.retryable
    # A caller who set stream_options gets the server's error as it is.
    mine = Call("chat", "m", True, params={"stream_options": {"include_usage": True}})
    error = http_failure(OpenAIDecoder(mine, 400, {}), body)
    assert not isinstance(error, aiollm.StreamOptionsRejectedError) and not error.retryable
