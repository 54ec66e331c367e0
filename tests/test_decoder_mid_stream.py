"""Decoders fed as the Stream feeds them, with uncommon frames in the middle of a stream.

A decoder maps every frame the same way whatever its position: these tests put usage, errors,
safety flags, other choices and wrong types after ordinary text frames. A bad frame's error
comes after the events of the frames before it in the same chunk (``decoder.error``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import aiollm
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
from aiollm.events import fold
from aiollm.providers import Call, ResponseDecoder
from aiollm.providers.dashscope import DashScopeDecoder
from aiollm.providers.openai import OpenAIDecoder
from aiollm.providers.qianfan import QianfanDecoder


def chat(model: str = "m") -> Call:
    return Call(op="chat", model=model, stream=True, messages=[])


def feed(codec: ResponseDecoder, *chunks: bytes, info: bool = False) -> list[Event]:
    """Every event the decoder yields, one ``feed`` per chunk, then the end."""
    out: list[Event] = []
    for chunk in chunks:
        out += codec.feed(chunk)
        if codec.error is not None:
            raise codec.error
    out += codec.end()
    if codec.error is not None:
        raise codec.error
    return out if info else [e for e in out if not isinstance(e, aiollm.ResponseInfo)]


def feed_partial(codec: ResponseDecoder, body: bytes) -> list[Event]:
    """The events of one chunk (ResponseInfo dropped); a bad frame's error stays on the codec."""
    return [e for e in codec.feed(body) if not isinstance(e, aiollm.ResponseInfo)]


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
    events = feed(OpenAIDecoder(chat()), body)
    assert events == [
        TextDelta("a"),
        TextDelta("b"),
        Usage(1, 2, 3),
        TextDelta("c"),
        Finish("stop"),
    ]


def test_openai_error_object_mid_stream_raises_after_the_text_before_it() -> None:
    codec = OpenAIDecoder(chat())
    body = oa("a") + oa("b") + oa("c", error={"message": "overloaded", "type": "server_error"})
    out = feed_partial(codec, body)
    assert out == [TextDelta("a"), TextDelta("b")]
    assert isinstance(codec.error, ServerError) and "overloaded" in str(codec.error)
    with pytest.raises(ServerError, match="overloaded"):
        codec.feed(oa("d"))


def test_openai_other_choice_index_and_empty_deltas() -> None:
    other = b'data: {"choices":[{"index":1,"delta":{"content":"x"}}]}\n\n'
    body = oa("a") + other + oa("") + oa(None) + oa("b") + oa(None, "length")
    assert feed(OpenAIDecoder(chat()), body, b"data: [DONE]\n\n") == [
        TextDelta("a"),
        TextDelta("b"),
        Finish("length"),
    ]


def test_openai_wrong_type_mid_stream_is_a_protocol_error() -> None:
    bad = b'data: {"choices":[{"index":0,"delta":{"content":5}}]}\n\n'
    with pytest.raises(ProtocolError, match="malformed JSON frame"):
        feed(OpenAIDecoder(chat()), oa("a") + oa("b") + bad)


def test_openai_completions_text_chunks() -> None:
    body = b"".join(
        b'data: {"id":"x","choices":[{"index":0,"text":"%s"}]}\n\n' % t for t in (b"a", b"b")
    )
    body += b'data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}]}\n\n'
    assert texts(feed(OpenAIDecoder(chat()), body, b"data: [DONE]\n\n")) == "ab"


# -- Qianfan ---------------------------------------------------------------------------------
def qf(sid: int, result: str, **extra: Any) -> bytes:
    obj = {"id": "as-1", "sentence_id": sid, "is_end": False, "result": result, **extra}
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def test_qianfan_error_code_mid_stream_is_typed() -> None:
    codec = QianfanDecoder(chat())
    body = (
        qf(0, "a")
        + qf(1, "b")
        + b'{"error_code":18,"error_msg":"Open api qps request limit reached"}\n'
    )
    out = feed_partial(codec, body)
    assert texts(out) == "ab"
    with pytest.raises(RateLimitError, match="qps"):
        codec.end()


def test_qianfan_safety_flag_and_sentence_gap_mid_stream() -> None:
    codec = QianfanDecoder(chat())
    end = qf(4, "e", need_clear_history=False).replace(b'"is_end": false', b'"is_end": true')
    body = qf(0, "a") + qf(1, "b", need_clear_history=True, ban_round=-1) + qf(3, "d") + end
    with pytest.warns(UserWarning, match="skipped: expected 2, got 3"):
        events = feed(codec, body, info=True)
    assert texts(events) == "abde"
    assert [type(e) for e in events].count(SafetyNotice) == 1
    extra = fold(events).extra
    assert extra["sentence_anomalies"] == [{"frame": 2, "expected": 2, "sentence_id": 3}]
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


def incremental() -> DashScopeDecoder:
    return DashScopeDecoder(
        Call(op="chat", model="qwen", stream=True, params={"incremental_output": True})
    )


def test_dashscope_running_usage_is_given_at_the_end_or_when_cut() -> None:
    codec = incremental()
    out = feed_partial(codec, ds(1, "a", usage=tokens(1)) + ds(2, "b", usage=tokens(2)))
    assert out == [TextDelta("a"), TextDelta("b")]
    assert codec.abort() == [Usage(5, 2, 7)]  # a stream cut here still has the counts
    events = feed(
        incremental(), ds(1, "a", usage=tokens(1)) + ds(2, "b", usage=tokens(2)) + ds(3, "", "stop")
    )
    assert events[-2:] == [Usage(5, 2, 7), Finish("stop")]


def test_dashscope_malformed_usage() -> None:
    # Usage is a running total read from the last frame: a bad one there is an error, wherever
    # the stream ends; one in a frame that is not the last is never read.
    body = ds(1, "a", usage=tokens(1)) + ds(2, "b", usage="many")
    codec = incremental()
    assert texts(feed_partial(codec, body)) == "ab" and codec.error is None
    assert codec.abort() == []  # a stream cut here has no readable usage
    with pytest.raises(ProtocolError, match="usage"):
        feed(incremental(), body + ds(3, "", "stop", usage="many"))
    with pytest.raises(ProtocolError, match="usage"):
        feed(
            incremental(),
            ds(1, "a", usage=tokens(1)) + ds(2, "", "stop", usage={"output_tokens": "x"}),
        )
    events = feed(incremental(), body + ds(3, "", "stop", usage=tokens(2)))
    assert events[-2:] == [Usage(5, 2, 7), Finish("stop")]


def test_dashscope_error_status_mid_stream_raises() -> None:
    bad = (
        b'id:3\nevent:result\n:HTTP_STATUS/500\ndata:{"code":"InternalError","message":"boom"}\n\n'
    )
    codec = incremental()
    out = feed_partial(codec, ds(1, "a") + ds(2, "b") + bad)
    assert texts(out) == "ab"
    with pytest.raises(APIError, match="boom"):
        codec.end()


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
    codec = DashScopeDecoder(chat("qwen"))
    events = feed(codec, body, info=True)
    assert texts(events) == "Hello, world" and events[-1] == Finish("stop")
    assert fold(events).extra["stream_mode"] == "cumulative"


# -- one rule for every frame: fields read are checked, fields not read are tolerated ---------
def until_error(codec: ResponseDecoder, body: bytes) -> tuple[str, BaseException | None]:
    """The text before the first bad frame, and its error."""
    try:
        out = feed_partial(codec, body)
    except ProtocolError as exc:
        return "", exc
    return texts(out), codec.error


@pytest.mark.parametrize(
    "bad",
    [
        b'data: {"object": {}, "choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n',
        b'data: {"choices": [], "usage": {"total_tokens": "x"}}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n',
    ],
)
@pytest.mark.parametrize("position", [0, 1, 3])
def test_openai_a_frames_position_does_not_decide_its_fate(bad: bytes, position: int) -> None:
    frames = [oa("a"), oa("b"), oa("c")]
    frames.insert(position, bad)
    text, error = until_error(OpenAIDecoder(chat()), b"".join(frames))
    assert isinstance(error, ProtocolError) and text == "abc"[:position]


@pytest.mark.parametrize("position", [0, 2])
def test_openai_unread_fields_are_tolerated_anywhere(position: int) -> None:
    odd = b'data: {"model": {}, "created": "x", "system_fingerprint": [], "choices": [{"index": 0, "delta": {"content": "z", "role": 7}, "logprobs": "?"}]}\n\n'
    frames = [oa("a"), oa("b")]
    frames.insert(position, odd)
    events = feed(OpenAIDecoder(chat()), b"".join(frames), oa(None, "stop"))
    assert sorted(texts(events)) == sorted("abz") and events[-1] == Finish("stop")


@pytest.mark.parametrize("position", [0, 2])
def test_qianfan_and_dashscope_check_every_frame_alike(position: int) -> None:
    frames = [qf(0, "a"), qf(1, "b")]
    frames.insert(position, b'data: {"sentence_id": 9, "result": 5}\n\n')
    text, error = until_error(QianfanDecoder(chat()), b"".join(frames))
    assert isinstance(error, ProtocolError) and text == "ab"[:position]
    frames = [ds(1, "a"), ds(2, "b")]
    frames.insert(position, ds(5, "x").replace(b'"text": "x"', b'"text": 5'))
    text, error = until_error(incremental(), b"".join(frames))
    assert isinstance(error, ProtocolError) and text == "ab"[:position]
