"""Qianfan (ERNIE) function calling: ``functions`` requests, ``function_call`` results as
tool-call events, and a tool round trip in the service's own message shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from decoding import decoded

import aiollm
from aiollm import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from aiollm.events import ToolCall, fold
from aiollm.providers._base import Call
from aiollm.providers.qianfan import QianfanDecoder, QianfanProvider

CALL = {
    "name": "get_weather",
    "arguments": '{"city":"北京"}',
    "thoughts": "用户想知道天气，调用查询工具",
}


def body_frame(**fields: Any) -> dict[str, Any]:
    return {"id": "as-1", "object": "chat.completion", "created": 1, **fields}


def test_streamed_function_call() -> None:
    frames = [
        body_frame(sentence_id=0, is_end=False, result=""),
        body_frame(
            sentence_id=1,
            is_end=True,
            result="",
            function_call=CALL,
            finish_reason="function_call",
            usage={"prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60},
        ),
    ]
    body = "".join(f"data: {json.dumps(f, ensure_ascii=False)}\n\n" for f in frames)
    call = Call("chat", "ernie-3.5", True, messages=[{"role": "user", "content": "天气"}])
    events = decoded(QianfanDecoder(call, 200, {}), [body])
    assert events == [
        ReasoningDelta(CALL["thoughts"]),
        ToolCallDelta(index=0, name="get_weather", arguments='{"city":"北京"}'),
        Usage(40, 20, 60),
        Finish("function_call"),
    ]
    completion = fold(events)
    assert completion.tool_calls == [ToolCall(name="get_weather", arguments='{"city":"北京"}')]
    assert completion.tool_calls[0].parsed() == {"city": "北京"}


def test_whole_function_call() -> None:
    doc = body_frame(
        result="", is_truncated=False, function_call=CALL, finish_reason="function_call"
    )
    call = Call("chat", "ernie-3.5", False, messages=[{"role": "user", "content": "天气"}])
    completion = fold(decoded(QianfanDecoder(call, 200, {}), [json.dumps(doc).encode()]))
    assert completion.tool_calls[0].name == "get_weather"
    assert completion.reasoning == CALL["thoughts"] and completion.finish_reason == "function_call"


def test_text_answers_are_unchanged() -> None:
    frames = [body_frame(sentence_id=0, is_end=True, result="你好")]
    body = "".join(f"data: {json.dumps(f, ensure_ascii=False)}\n\n" for f in frames)
    call = Call("chat", "ernie-3.5", True, messages=[{"role": "user", "content": "hi"}])
    assert decoded(QianfanDecoder(call, 200, {}), [body]) == [TextDelta("你好"), Finish("stop")]


# -- requests ---------------------------------------------------------------------------------
def sent(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    provider = QianfanProvider({"access_token": "t"}, {})
    return json.loads(
        provider.prepare(Call("chat", "ernie-3.5", True, messages, params=params)).body
    )


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def test_openai_style_tools_become_functions() -> None:
    body = sent([{"role": "user", "content": "天气"}], tools=TOOLS)
    assert body["functions"] == [TOOLS[0]["function"]] and "tools" not in body
    native = [{"name": "f", "description": "d", "parameters": {}}]
    assert sent([{"role": "user", "content": "x"}], functions=native)["functions"] == native


def test_a_tool_round_trip_is_sent_in_the_services_shape() -> None:
    completion = aiollm.Completion(
        text="",
        reasoning="想",
        tool_calls=[ToolCall(name="get_weather", arguments='{"city":"北京"}')],
    )
    messages = [
        {"role": "user", "content": "北京天气?"},
        completion.to_message(reasoning=True),
        {"role": "tool", "tool_call_id": None, "content": '{"weather":"晴"}'},
    ]
    assert sent(messages, tools=TOOLS)["messages"] == [
        {"role": "user", "content": "北京天气?"},
        {
            "role": "assistant",
            "content": "",
            "function_call": {"name": "get_weather", "arguments": '{"city":"北京"}'},
        },
        {"role": "function", "name": "get_weather", "content": '{"weather":"晴"}'},
    ]


def test_native_function_messages_are_accepted() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "42"},
    ]
    assert sent(messages)["messages"] == messages


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "function", "name": "f", "content": "1"},
            ],
            "must follow a function_call",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "function_call": {"name": "f"}},
                {"role": "function", "content": "1"},
            ],
            "must name the function",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "a", "function": {"name": "f", "arguments": "{}"}},
                        {"id": "b", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "a", "content": "1"},
            ],
            "one function call",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": ["nonsense"]},
                {"role": "tool", "content": "1"},
            ],
            "needs a function with a name",
        ),
    ],
)
def test_malformed_function_turns_are_refused_before_sending(
    messages: list[dict[str, Any]], match: str
) -> None:
    with pytest.raises(aiollm.InvalidRequestError, match=match):
        sent(messages)
