"""Codecs fed as the Stream feeds them: raw data, one batch of events per body chunk.

Each codec takes its common frame inline (decoded with only the fields that tell it apart)
and hands every other frame to its general path; these tests put the uncommon frames in the
middle of a stream, after the inline path has started.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aiollm import (
    APIError,
    Event,
    Finish,
    ProtocolError,
    RateLimitError,
    SafetyNotice,
    ServerError,
    TextDelta,
    Usage,
)
from aiollm.framing import SSEDecoder
from aiollm.providers import Call
from aiollm.providers._base import Codec
from aiollm.providers.dashscope import DashScopeCodec
from aiollm.providers.openai import OpenAICodec
from aiollm.providers.qianfan import QianfanCodec


def chat(model: str = "m") -> Call:
    return Call(op="chat", model=model, stream=True, messages=[])


def feed(codec: Codec, *chunks: bytes, **modes: bool) -> list[Event]:
    """Every event the codec yields, one ``on_sse_batch`` per chunk, then the end."""
    decoder = SSEDecoder(raw_data=True, data_line_events=True, **modes)
    out: list[Event] = []
    for chunk in chunks:
        codec.on_sse_batch(decoder.feed_raw(chunk), out)
    codec.on_sse_batch(decoder.close(), out)
    out += codec.on_end()
    return out


def texts(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- OpenAI ----------------------------------------------------------------------------------
def oa(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    obj = {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_openai_text_with_usage_in_the_same_chunk_yields_both() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    body = oa("a") + oa("b", usage=usage) + oa("c") + oa(None, "stop") + b"data: [DONE]\n\n"
    events = feed(OpenAICodec(chat()), body)
    assert events == [
        TextDelta("a"),
        TextDelta("b"),
        Usage(1, 2, 3),
        TextDelta("c"),
        Finish("stop"),
    ]


def test_openai_error_object_mid_stream_raises_after_the_text_before_it() -> None:
    codec = OpenAICodec(chat())
    out: list[Event] = []
    decoder = SSEDecoder(raw_data=True, data_line_events=True)
    body = oa("a") + oa("b") + oa("c", error={"message": "overloaded", "type": "server_error"})
    with pytest.raises(ServerError, match="overloaded"):
        codec.on_sse_batch(decoder.feed_raw(body), out)
    assert out == [TextDelta("a"), TextDelta("b")]


def test_openai_other_choice_index_and_empty_deltas() -> None:
    other = b'data: {"choices":[{"index":1,"delta":{"content":"x"}}]}\n\n'
    body = oa("a") + other + oa("") + oa(None) + oa("b") + oa(None, "length")
    assert feed(OpenAICodec(chat()), body, b"data: [DONE]\n\n") == [
        TextDelta("a"),
        TextDelta("b"),
        Finish("length"),
    ]


def test_openai_wrong_type_mid_stream_is_a_protocol_error() -> None:
    bad = b'data: {"choices":[{"index":0,"delta":{"content":5}}]}\n\n'
    with pytest.raises(ProtocolError, match="malformed JSON frame"):
        feed(OpenAICodec(chat()), oa("a") + oa("b") + bad)


def test_openai_completions_text_chunks() -> None:
    body = b"".join(
        b'data: {"id":"x","choices":[{"index":0,"text":"%s"}]}\n\n' % t for t in (b"a", b"b")
    )
    body += b'data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}]}\n\n'
    assert texts(feed(OpenAICodec(chat()), body, b"data: [DONE]\n\n")) == "ab"


# -- Qianfan ---------------------------------------------------------------------------------
def qf(sid: int, result: str, **extra: Any) -> bytes:
    obj = {"id": "as-1", "sentence_id": sid, "is_end": False, "result": result, **extra}
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def test_qianfan_error_code_mid_stream_is_typed() -> None:
    codec = QianfanCodec(chat())
    out: list[Event] = []
    decoder = SSEDecoder(raw_data=True, data_line_events=True, json_line_events=True)
    body = (
        qf(0, "a")
        + qf(1, "b")
        + b'{"error_code":18,"error_msg":"Open api qps request limit reached"}\n'
    )
    with pytest.raises(RateLimitError, match="qps"):
        codec.on_sse_batch(decoder.feed_raw(body), out)
    assert texts(out) == "ab"


def test_qianfan_safety_flag_and_sentence_gap_mid_stream() -> None:
    codec = QianfanCodec(chat())
    end = qf(4, "e", need_clear_history=False).replace(b'"is_end": false', b'"is_end": true')
    body = qf(0, "a") + qf(1, "b", need_clear_history=True, ban_round=-1) + qf(3, "d") + end
    with pytest.warns(UserWarning, match="skipped: expected 2, got 3"):
        events = feed(codec, body)
    assert texts(events) == "abde"
    assert [type(e) for e in events].count(SafetyNotice) == 1
    assert codec.extra["sentence_anomalies"] == [{"frame": 2, "expected": 2, "sentence_id": 3}]
    assert events[-1] == Finish("stop")


# -- DashScope -------------------------------------------------------------------------------
def ds(
    frame_id: int, text: str, finish: str = "null", usage: Any = None, status: int = 200
) -> bytes:
    obj: dict[str, Any] = {"output": {"finish_reason": finish, "text": text}, "request_id": "r1"}
    if usage is not None:
        obj["usage"] = usage
    head = f"id:{frame_id}\nevent:result\n:HTTP_STATUS/{status}\ndata:".encode()
    return head + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def tokens(n: int) -> dict[str, int]:
    return {"input_tokens": 5, "output_tokens": n, "total_tokens": 5 + n}


def incremental() -> DashScopeCodec:
    return DashScopeCodec(
        Call(op="chat", model="qwen", stream=True, params={"incremental_output": True})
    )


def test_dashscope_usage_is_read_from_the_latest_inline_frame_only_when_needed() -> None:
    codec = incremental()
    out = feed_partial(codec, ds(1, "a", usage=tokens(1)) + ds(2, "b", usage=tokens(2)))
    assert out == [TextDelta("a"), TextDelta("b")]
    assert codec.partial_usage() == Usage(5, 2, 7)  # a stream cut here still has the counts
    events = feed(
        incremental(), ds(1, "a", usage=tokens(1)) + ds(2, "b", usage=tokens(2)) + ds(3, "", "stop")
    )
    assert events[-2:] == [Usage(5, 2, 7), Finish("stop")]


def feed_partial(codec: Codec, body: bytes) -> list[Event]:
    out: list[Event] = []
    codec.on_sse_batch(SSEDecoder(raw_data=True, data_line_events=True).feed_raw(body), out)
    return out


def test_dashscope_malformed_usage_in_an_inline_frame() -> None:
    body = ds(1, "a", usage=tokens(1)) + ds(2, "b", usage="many")
    codec = incremental()
    assert texts(feed_partial(codec, body)) == "ab"
    assert codec.partial_usage() == Usage(5, 1, 6)  # the last usage it could read
    with pytest.raises(ProtocolError, match="malformed usage"):
        feed(incremental(), body + ds(3, "", "stop"))


def test_dashscope_error_status_mid_stream_raises() -> None:
    bad = (
        b'id:3\nevent:result\n:HTTP_STATUS/500\ndata:{"code":"InternalError","message":"boom"}\n\n'
    )
    codec = incremental()
    out: list[Event] = []
    decoder = SSEDecoder(raw_data=True, data_line_events=True)
    with pytest.raises(APIError, match="boom"):
        codec.on_sse_batch(decoder.feed_raw(ds(1, "a") + ds(2, "b") + bad), out)
    assert texts(out) == "ab"


def test_dashscope_detection_and_message_format_inline() -> None:
    # Cumulative frames of a server that ignored incremental_output, message result format.
    def msg(frame_id: int, text: str, finish: str = "null") -> bytes:
        choice = {"message": {"role": "assistant", "content": text}, "finish_reason": finish}
        obj = {"output": {"choices": [choice]}, "request_id": "r1"}
        head = f"id:{frame_id}\nevent:result\n:HTTP_STATUS/200\ndata:".encode()
        return head + json.dumps(obj).encode() + b"\n\n"

    body = (
        msg(1, "He")
        + msg(2, "Hell")
        + msg(3, "Hello")
        + msg(4, "Hello, w")
        + msg(5, "Hello, world", "stop")
    )
    codec = DashScopeCodec(chat("qwen"))
    events = feed(codec, body)
    assert texts(events) == "Hello, world" and events[-1] == Finish("stop")
    assert codec.extra["stream_mode"] == "cumulative"
