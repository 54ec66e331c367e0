"""Decoders and invalid UTF-8 in frames: replaced by U+FFFD in text, never a crash."""

from __future__ import annotations

import pytest
from decoding import decoded

from aiollm.errors import APIError, ProtocolError
from aiollm.events import Event, TextDelta, fold
from aiollm.providers import Call, ResponseDecoder
from aiollm.providers.dashscope import DashScopeDecoder
from aiollm.providers.openai import OpenAIDecoder
from aiollm.providers.qianfan import QianfanDecoder


def chat(model: str = "m") -> Call:
    return Call(op="chat", model=model, stream=True, messages=[])


def run(codec: ResponseDecoder, body: bytes, *, info: bool = False) -> list[Event]:
    return decoded(codec, [body], end=False, info=info)


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def test_openai_invalid_utf8_reads_as_replacement() -> None:
    body = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"caf\xc3!"}}]}\n\n'
    codec = OpenAIDecoder(chat())
    events = run(codec, body + b"data: [DONE]\n\n", info=True)
    assert texts(events) == ["caf\ufffd!"]
    assert codec.finished and fold(events).request_id == "c1"


def test_openai_raw_malformed_frames() -> None:
    assert run(OpenAIDecoder(chat()), b"data:\n\n") == []
    with pytest.raises(ProtocolError, match="malformed JSON frame"):
        run(OpenAIDecoder(chat()), b"data: {nope\xff\n\n")
    with pytest.raises(APIError, match="overloaded"):
        run(OpenAIDecoder(chat()), b"event: error\ndata: overloaded \xff\n\n")


def test_qianfan_invalid_utf8_reads_as_replacement() -> None:
    body = (
        b'data: {"id":"as-1","sentence_id":0,"is_end":false,"result":"'
        + "以下".encode()
        + b'\xff"}\n\n'
    )
    assert texts(run(QianfanDecoder(chat()), body)) == ["以下\ufffd"]
    with pytest.raises(ProtocolError, match="malformed JSON frame"):
        run(QianfanDecoder(chat()), b"data: {bad\xff\n\n")


def test_dashscope_invalid_utf8_reads_as_replacement() -> None:
    body = (
        b'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"finish_reason":"null",'
        b'"text":"\xe4\xbd\xa0\xe4\xbd"},"request_id":"r"}\n\n'
    )
    assert texts(run(DashScopeDecoder(chat("qwen-turbo")), body)) == ["你\ufffd"]
    with pytest.raises(ProtocolError, match="malformed JSON frame in event id '2'"):
        run(DashScopeDecoder(chat("qwen-turbo")), b"id:2\ndata:{bad\xff\n\n")
    with pytest.raises(APIError, match="not json"):
        run(
            DashScopeDecoder(chat("qwen-turbo")),
            b"id:3\nevent:error\n:HTTP_STATUS/500\ndata:not json \xff\n\n",
        )
