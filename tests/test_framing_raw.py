"""``SSEDecoder.feed_raw``: the same events as ``feed``, with the data left as undecoded bytes."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_framing_sse import (
    Run,
    block_strategy,
    interesting_bytes,
    render,
    render_runs,
    run_strategy,
    split_at,
)

from aiollm.errors import ProtocolError
from aiollm.framing import ServerSentEvent, SSEDecoder, SSEItem, as_event

Fields = tuple[str, str, str, int | None, tuple[str, ...]]


def decode(chunks: list[bytes], **kw: Any) -> list[ServerSentEvent]:
    dec = SSEDecoder(**kw)
    out: list[ServerSentEvent] = []
    for chunk in chunks:
        out += dec.feed(chunk)
    return out + dec.close()


def decode_raw(chunks: list[bytes], **kw: Any) -> list[SSEItem]:
    dec = SSEDecoder(**kw)
    out: list[SSEItem] = []
    for chunk in chunks:
        out += dec.feed_raw(chunk)
    return out + dec.close_raw()


def fields(events: list[ServerSentEvent]) -> list[Fields]:
    return [(e.event, e.text(), e.id, e.retry, e.comments) for e in events]


def check_same(chunks: list[bytes]) -> list[ServerSentEvent]:
    """``feed_raw`` gives ``feed``'s events, with ``raw`` for ``data``; returns them."""
    plain = decode(chunks)
    items = decode_raw(chunks)
    for item in items:  # plain events come as their bytes alone
        if type(item) is not bytes:
            assert isinstance(item, ServerSentEvent)
            assert item.event != "message" or item.id or item.retry is not None or item.comments
    raw = [as_event(item) for item in items]
    assert all(e.raw is None for e in plain)
    assert all(e.data == "" and type(e.raw) is bytes for e in raw)
    assert [e.data for e in plain] == [e.text() for e in raw]
    assert fields(raw) == fields(plain)
    return raw


def random_chunks(body: bytes, rng: random.Random) -> list[bytes]:
    return split_at(body, [rng.randrange(len(body) + 1) for _ in range(rng.randrange(1, 9))])


def openai_frame(text: str) -> str:
    return '{"id":"c1","choices":[{"index":0,"delta":{"content":' + _json(text) + "}}]}"


def qianfan_frame(i: int, text: str, end: bool = False) -> str:
    return (
        f'{{"id":"as-1","sentence_id":{i},"is_end":{"true" if end else "false"},'
        f'"result":{_json(text)}}}'
    )


def dashscope_block(i: int, text: str) -> str:
    return (
        f"id:{i}\nevent:result\n:HTTP_STATUS/200\n"
        f'data:{{"output":{{"finish_reason":"null","text":{_json(text)}}},"request_id":"r"}}\n\n'
    )


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


CJK = "以下是一些适合自驾游的路线推荐"
BODIES: list[bytes] = [
    # OpenAI: one data line per block, a space after the colon, [DONE] last.
    "".join(f"data: {openai_frame(t)}\n\n" for t in ["Hel", "lo", CJK, ""]).encode()
    + b"data: [DONE]\n\n",
    # Without the space, and data lines packed without blank lines.
    "".join(f"data:{openai_frame(t)}\n" for t in ["a", CJK, "b"]).encode(),
    # Qianfan, including a bare JSON error line.
    "".join(f"data: {qianfan_frame(i, CJK)}\n\n" for i in range(6)).encode()
    + b'{"error_code":110,"error_msg":"Access token invalid"}\n',
    b'{"error_code":18,"error_msg":"Open api qps request limit reached"}',
    # DashScope blocks: enough of them for the column path, then odd ones.
    "".join(dashscope_block(i, f"{CJK}{i}") for i in range(1, 9)).encode()
    + b": keepalive\n\nid:9\nevent:error\n:HTTP_STATUS/400\n"
    + b'data:{"code":"InvalidParameter","message":"bad"}\n\n',
    # Multi-line data, event names, ids, retry, comments.
    b"event: delta\nid: 7\nretry: 1500\n: hi\ndata: line one\ndata:\ndata:  two\n\n"
    b"data\n\nevent: add\ndata: x\n\n",
    # The Anthropic shape.
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b'event: content_block_delta\ndata: {"text":"\xe4\xbd\xa0"}\n\n' * 3,
    # Block by block: an event block first, then one-line data blocks.
    b'event: a\ndata: 1\n\ndata: {"t":"\xe4\xbd\xa0"}\n\ndata: \xff\n\n',
    # Invalid UTF-8 in data, ids and comments; CRLF and CR line ends.
    b'data: {"t":"caf\xc3"}\r\n\r\nid: \xff1\r\n:\xfe\r\ndata: \xe4\xbd\r\n\r\n'
    b"data: ok\r\rdata: \xff\n\n",
    "".join(dashscope_block(i, CJK) for i in range(1, 7)).replace("\n", "\r\n").encode(),
    # A final JSON data line without its line end (dispatched at close), and one not JSON.
    b'data: first\n\ndata: {"last":1}',
    b"data: first\n\ndata: last",
    # Pretty-printed JSON frames without blank lines.
    b'data: {\ndata:  "a": 1\ndata: }\ndata: [\ndata: 2]\n',
    b"",
    b"\xef\xbb\xbfdata: bom\n\n",
]


@pytest.mark.parametrize("body", BODIES)
def test_raw_data_same_events(body: bytes) -> None:
    whole = check_same([body])
    rng = random.Random(body)
    for _ in range(20):
        assert fields(check_same(random_chunks(body, rng))) == fields(whole)
    if len(body) < 400:
        check_same([body[i : i + 1] for i in range(len(body))])


def test_raw_bytes_are_the_data_field_bytes() -> None:
    body = b'data: {"a":"\xe4\xbd\xa0"}\n\ndata:  two\ndata:x\n\n{"error_code":110}\n'
    assert decode_raw([body]) == [b'{"a":"\xe4\xbd\xa0"}', b" two\nx", b'{"error_code":110}']


def test_text_of_a_default_event_is_its_data() -> None:
    assert ServerSentEvent(data="x").text() == "x"
    assert ServerSentEvent(raw=b"caf\xc3").text() == "caf\ufffd"


def test_raw_data_limits_still_apply() -> None:
    with pytest.raises(ProtocolError, match="max_event_bytes"):
        decode_raw([b"data: " + b"x" * 50 + b"\n\n"], max_event_bytes=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(block_strategy, max_size=8),
    ends=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=1, max_size=4),
    bom=st.booleans(),
    tail=st.sampled_from(["", "data: t", "data", ":c", '{"a":1}']),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_raw_data_property_blocks(
    blocks: list[list[str]],
    ends: list[str],
    bom: bool,
    tail: str,
    points: list[int],
) -> None:
    body = render(blocks, ends, bom, tail)
    check_same([body])
    check_same(split_at(body, points))


@settings(max_examples=200, deadline=None)
@given(
    body=interesting_bytes,
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_raw_data_property_bytes(body: bytes, points: list[int]) -> None:
    check_same(split_at(body, points))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(run_strategy, min_size=1, max_size=5),
    crlf=st.booleans(),
    points=st.lists(st.integers(min_value=0, max_value=100_000), max_size=8),
)
def test_raw_data_property_runs(runs: list[Run], crlf: bool, points: list[int]) -> None:
    body = render_runs(runs)
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    check_same([body])
    check_same(split_at(body, points))
