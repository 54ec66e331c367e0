"""Any split of a body into chunks gives the same events as the whole body, for every decoder.

Bodies are built from random tokens and frame shapes (blank lines or none, CRLF, comments,
pretty-printed JSON, error frames, JSON bodies); the property is checked on the events and on
the error, if any, each provider's response decoder gives.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiollm.errors import AiollmError
from aiollm.events import Event
from aiollm.providers import Call, ResponseDecoder
from aiollm.providers.dashscope import DashScopeDecoder
from aiollm.providers.gateway import GatewayDecoder
from aiollm.providers.openai import OpenAIDecoder
from aiollm.providers.qianfan import QianfanDecoder

TOKEN = st.sampled_from(["ha", " ha", "哈", "a\nb", "“q”", "", "😀", "\\", '"', "</think>"])


def outcome(decoder: ResponseDecoder, chunks: list[bytes]) -> tuple[list[Event], str | None]:
    """Every event, and the error (type and message) the decoder ends with, if any."""
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
            if decoder.finished:
                break
        events += decoder.end()
        if decoder.error is not None:
            raise decoder.error
    except AiollmError as exc:
        return events, f"{type(exc).__name__}: {exc}"
    return events, None


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(body)) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(body)]:
        pieces.append(body[last:p])
        last = p
    return [p for p in pieces if p]


def sse(frames: list[Any], *, blank: bool, crlf: bool, comments: bool, pretty: bool) -> bytes:
    out = []
    for i, frame in enumerate(frames):
        if isinstance(frame, str):
            text = frame
        else:
            text = json.dumps(frame, ensure_ascii=False, indent=2 if pretty else None)
        lines = "".join(f"data: {line}\n" for line in text.split("\n"))
        if comments and i % 2:
            lines = ": ping\n" + lines
        out.append(lines + ("\n" if blank or pretty else ""))
    body = "".join(out)
    return (body.replace("\n", "\r\n") if crlf else body).encode()


SHAPE = {
    "blank": st.booleans(),
    "crlf": st.booleans(),
    "comments": st.booleans(),
    "pretty": st.booleans(),
}


def check(make: Any, body: bytes, cuts: list[int]) -> None:
    whole = outcome(make(), [body])
    assert outcome(make(), split(body, cuts)) == whole
    assert outcome(make(), [body[i : i + 1] for i in range(len(body))]) == whole


def chat(stream: bool = True, **params: Any) -> Call:
    return Call(op="chat", model="m", stream=stream, messages=[], params=params)


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(TOKEN, max_size=8),
    finish=st.sampled_from([None, "stop", "length"]),
    done=st.booleans(),
    error_at=st.integers(-1, 8),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    **SHAPE,
)
def test_openai_decoder(
    tokens: list[str],
    finish: str | None,
    done: bool,
    error_at: int,
    cuts: list[int],
    **shape: bool,
) -> None:
    frames: list[Any] = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
        for t in tokens
    ]
    if 0 <= error_at < len(frames):
        frames[error_at] = {"error": {"message": "overloaded", "type": "server_error"}}
    if finish:
        frames.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        frames.append({"choices": [], "usage": {"prompt_tokens": 1, "total_tokens": 2}})
    if done:
        frames.append("[DONE]")
    body = sse(frames, **shape)
    check(lambda: OpenAIDecoder(chat()), body, cuts)
    check(lambda: GatewayDecoder(chat()), body, cuts)


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(TOKEN, max_size=8),
    end=st.booleans(),
    gap=st.booleans(),
    error_line=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    **SHAPE,
)
def test_qianfan_decoder(
    tokens: list[str], end: bool, gap: bool, error_line: bool, cuts: list[int], **shape: bool
) -> None:
    frames: list[Any] = [
        {
            "id": "as-1",
            "sentence_id": i + (1 if gap and i > 1 else 0),
            "is_end": end and i == len(tokens) - 1,
            "result": t,
            "need_clear_history": i == 2,
            "usage": {"prompt_tokens": 1, "completion_tokens": i, "total_tokens": 1 + i},
        }
        for i, t in enumerate(tokens)
    ]
    body = sse(frames, **shape)
    if error_line:
        body += b'{"error_code":18,"error_msg":"Open api qps request limit reached"}\n'
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(lambda: QianfanDecoder(chat()), body, cuts)


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(TOKEN, max_size=8),
    cumulative=st.booleans(),
    mode=st.sampled_from([None, True, False]),
    last=st.booleans(),
    status=st.sampled_from([200, 200, 429, 500]),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    **SHAPE,
)
def test_dashscope_decoder(
    tokens: list[str],
    cumulative: bool,
    mode: bool | None,
    last: bool,
    status: int,
    cuts: list[int],
    **shape: bool,
) -> None:
    so_far, out = "", []
    for i, t in enumerate(tokens):
        so_far += t
        text = so_far if cumulative else t
        usage = {"input_tokens": 1, "output_tokens": i, "total_tokens": 1 + i}
        out.append(
            f"id:{i + 1}\nevent:result\n:HTTP_STATUS/200\ndata:"
            + json.dumps({"output": {"text": text, "finish_reason": "null"}, "usage": usage})
            + "\n\n"
        )
    if status != 200:
        out.append(
            f"id:x\nevent:error\n:HTTP_STATUS/{status}\ndata:"
            + json.dumps({"code": "Throttling", "message": "slow down", "request_id": "r"})
            + "\n\n"
        )
    if last:
        out.append(
            "id:z\nevent:result\n:HTTP_STATUS/200\ndata:"
            + json.dumps(
                {"output": {"text": so_far if cumulative else "", "finish_reason": "stop"}}
            )
            + "\n\n"
        )
    body = "".join(out)
    if shape["crlf"]:
        body = body.replace("\n", "\r\n")
    if not shape["blank"]:
        body = body.replace("\n\n", "\n").replace("\r\n\r\n", "\r\n")
    params = {} if mode is None else {"incremental_output": mode}
    check(lambda: DashScopeDecoder(chat(**params)), body.encode(), cuts)


@settings(max_examples=100, deadline=None)
@given(
    text=TOKEN,
    pretty=st.booleans(),
    provider=st.sampled_from(["openai", "qianfan", "dashscope"]),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    typed=st.booleans(),
)
def test_whole_json_bodies(
    text: str, pretty: bool, provider: str, cuts: list[int], typed: bool
) -> None:
    doc: Any = {
        "openai": {"id": "c", "choices": [{"index": 0, "message": {"content": text}}]},
        "qianfan": {"id": "as", "result": text, "usage": {"total_tokens": 3}},
        "dashscope": {"output": {"text": text, "finish_reason": "stop"}, "request_id": "r"},
    }[provider]
    body = json.dumps(doc, ensure_ascii=False, indent=2 if pretty else None).encode()
    headers = {"Content-Type": "application/json"} if typed else {}
    cls = {"openai": OpenAIDecoder, "qianfan": QianfanDecoder, "dashscope": DashScopeDecoder}
    check(lambda: cls[provider](chat(stream=False), 200, headers), body, cuts)
