"""SSEDecoder: the WHATWG event stream interpretation, chunking invariance, limits."""

from __future__ import annotations

import itertools
import json
import re

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiollm.errors import AiollmError, ProtocolError
from aiollm.framing import COMMENT_COST, ServerSentEvent, SSEDecoder

SSE = ServerSentEvent


# -- helpers ------------------------------------------------------------------------------


def feed_chunks(chunks: list[bytes], **kw: object) -> list[SSE]:
    dec = SSEDecoder(**kw)  # type: ignore[arg-type]
    out: list[SSE] = []
    for chunk in chunks:
        out += dec.feed(chunk)
    out += dec.close()
    return out


def parse(body: bytes, **kw: object) -> list[SSE]:
    """Parse ``body`` whole, split in two at every offset, and byte by byte.

    All must agree; returns the events.
    """
    whole = feed_chunks([body], **kw)
    for i in range(1, len(body)):
        assert feed_chunks([body[:i], body[i:]], **kw) == whole, f"split at {i}"
    assert feed_chunks([body[i : i + 1] for i in range(len(body))], **kw) == whole
    return whole


def is_json(data: bytes) -> bool:
    """Whether ``data`` is one complete JSON object or array (rule 1)."""
    if data.lstrip(b" \t\r\n")[:1] not in (b"{", b"["):
        return False
    try:
        msgspec.json.decode(data, type=msgspec.Raw)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def reference(body: bytes) -> list[SSE]:
    """A direct, line-at-a-time transcription of the rules (SSEDecoder's docstring)."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    lines = re.split(b"\r\n|\r|\n", body)
    last = lines.pop()  # unterminated (possibly empty)
    out: list[SSE] = []
    data: list[bytes] | None = None
    event: bytes | None = None
    comments: list[bytes] = []
    retry: int | None = None
    last_id = ""
    frozen: tuple[bytes | None, int | None, list[bytes], str] | None = None

    def text(b: bytes) -> str:
        return b.decode("utf-8", "replace")

    def emit(ev: bytes | None, rt: int | None, cm: list[bytes], lid: str) -> None:
        assert data is not None
        name = text(ev) if ev else "message"
        out.append(SSE(name, text(b"\n".join(data)), lid, rt, tuple(text(c) for c in cm)))

    def process(line: bytes) -> None:
        nonlocal data, event, comments, retry, last_id, frozen
        if line == b"":
            if data is not None:
                if frozen is not None:
                    event = event if event is not None else frozen[0]
                    retry = retry if retry is not None else frozen[1]
                    comments = frozen[2] + comments
                emit(event, retry, comments, last_id)
            data, event, comments, retry, frozen = None, None, [], None, None
            return
        if data is not None and frozen is None and is_json(b"\n".join(data)):
            frozen = (event, retry, comments, last_id)
            event, retry, comments = None, None, []
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if frozen is not None and (
            line.startswith(b"{") or (name == b"data" and value.strip(b" \t"))
        ):
            emit(*frozen)
            data, frozen = None, None
        if line.startswith(b":"):
            comments.append(line[1:])
        elif line.startswith(b"{"):
            out.append(SSE("message", text(line), last_id))
        elif name == b"data":
            data = [*(data or []), value]
        elif name == b"event":
            event = value
        elif name == b"id":
            if b"\0" not in value:
                last_id = text(value)
        elif name == b"retry":
            if value and all(c in b"0123456789" for c in value) and len(value.lstrip(b"0")) <= 18:
                retry = int(value)

    for line in lines:
        process(line)
    if last:
        process(last)
    if frozen is not None:
        emit(*frozen)
    elif data is not None and is_json(b"\n".join(data)):
        emit(event, retry, comments, last_id)
    return out


def check(body: bytes, expected: list[SSE], **kw: object) -> None:
    assert parse(body, **kw) == expected
    assert reference(body) == expected


# -- line ends ----------------------------------------------------------------------------


@pytest.mark.parametrize("nl", [b"\n", b"\r", b"\r\n"])
def test_line_ends(nl: bytes) -> None:
    body = b"data: a" + nl + b"data: b" + nl + nl + b"event: e" + nl + b"data: c" + nl + nl
    check(body, [SSE(data="a\nb"), SSE(event="e", data="c")])


def test_mixed_line_ends() -> None:
    body = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    check(body, [SSE(data="a\nb\nc"), SSE(data="d")])


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    body = b"data: a\r\ndata: b\r\n\r\n"
    # every offset, including between each CR and its LF, is covered by parse()
    assert parse(body) == [SSE(data="a\nb")]
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\n") == []  # the LF completes the CRLF: not a blank line
    assert dec.feed(b"\r") == [SSE(data="a")]
    assert dec.feed(b"\n") == []


def test_cr_cr_is_two_line_ends() -> None:
    check(b"data: a\r\r", [SSE(data="a")])
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\r") == [SSE(data="a")]


def test_lone_cr_at_end_of_body() -> None:
    check(b"data: a\r\r", [SSE(data="a")])
    dec = SSEDecoder()
    assert dec.feed(b"data: {}\r") == []
    assert dec.close() == [SSE(data="{}")]
    assert dec.close() == []


# -- BOM ----------------------------------------------------------------------------------


def test_bom_stripped() -> None:
    check(b"\xef\xbb\xbfdata: a\n\n", [SSE(data="a")])


def test_bom_split_across_chunks() -> None:
    for i in (1, 2):
        body = b"\xef\xbb\xbfdata: a\n\n"
        assert feed_chunks([body[:i], body[i:]]) == [SSE(data="a")]
    assert feed_chunks([b"\xef", b"\xbb", b"\xbf", b"data: a\n\n"]) == [SSE(data="a")]


def test_second_bom_not_stripped() -> None:
    # The second BOM starts the field name, which then is not "data".
    check(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [SSE(data="b")])
    # A BOM later in the stream is ordinary text.
    check(
        b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: \xef\xbb\xbfc\n\n",
        [SSE(data="a"), SSE(data="\ufeffc")],
    )


def test_bom_prefix_that_is_not_a_bom() -> None:
    check(b"\xef\xbbdata: a\n\ndata: b\n\n", [SSE(data="b")])
    assert feed_chunks([b"\xef", b"\n", b"data: b\n\n"]) == [SSE(data="b")]


# -- fields -------------------------------------------------------------------------------


def test_comments_collected() -> None:
    body = b": first\n:second\ndata: a\n:third\n\ndata: b\n\n"
    check(body, [SSE(data="a", comments=(" first", "second", "third")), SSE(data="b")])


def test_comments_cleared_by_blank_line_without_data() -> None:
    check(b": ping\n\n: ping\n\ndata: a\n\n", [SSE(data="a")])


def test_dashscope_shape() -> None:
    body = b'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"text":"hi"}}\n\n'
    check(
        body,
        [
            SSE(
                event="result",
                data='{"output":{"text":"hi"}}',
                id="1",
                comments=("HTTP_STATUS/200",),
            )
        ],
    )
    body = b'id:2\nevent:error\n:HTTP_STATUS/429\ndata:{"code":"Throttling"}\n\n'
    (ev,) = parse(body)
    assert ev.comments == ("HTTP_STATUS/429",)
    assert ev.event == "error" and ev.id == "2"


def test_field_without_colon() -> None:
    # "data" alone is a data line with an empty value.
    check(b"data\n\n", [SSE(data="")])
    check(b"data\ndata\n\n", [SSE(data="\n")])
    check(b"event\ndata: x\n\n", [SSE(data="x")])
    check(b"id\ndata: x\n\n", [SSE(data="x", id="")])


def test_exactly_one_leading_space_stripped() -> None:
    check(
        b"data:  x\n\ndata:y\n\ndata: \n\ndata:\n\nevent:  e\ndata: z \n\n",
        [SSE(data=" x"), SSE(data="y"), SSE(data=""), SSE(data=""), SSE(event=" e", data="z ")],
    )


def test_value_may_contain_colons() -> None:
    check(b"data: a: b:c\n\n", [SSE(data="a: b:c")])


def test_multiline_data_joined() -> None:
    check(b"data: a\ndata:\ndata: c\n\n", [SSE(data="a\n\nc")])
    check(b"data: {\ndata: }\n\n", [SSE(data="{\n}")])


def test_empty_data_buffer_no_dispatch() -> None:
    check(b"event: x\n\n\n\nid: 3\n\nretry: 5\n\n", [])
    check(b"event: x\n\ndata: a\n\n", [SSE(data="a")])  # the event type was reset


def test_event_type_reset_after_dispatch() -> None:
    check(
        b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\nevent: c\ndata: 3\n\nevent:\ndata: 4\n\n",
        [SSE(event="a", data="1"), SSE(data="2"), SSE(event="c", data="3"), SSE(data="4")],
    )


def test_retry_digits_only() -> None:
    body = (
        b"retry: 1000\ndata: a\n\n"
        b"data: b\n\n"
        b"retry: 10x\ndata: c\n\n"
        b"retry: -1\ndata: d\n\n"
        b"retry:\ndata: e\n\n"
        b"retry: \xd9\xa3\ndata: f\n\n"  # ARABIC-INDIC DIGIT THREE is not an ASCII digit
        b"retry:007\ndata: g\n\n"
        b"retry: 1.5\ndata: h\n\n"
    )
    check(
        body,
        [
            SSE(data="a", retry=1000),
            SSE(data="b"),
            SSE(data="c"),
            SSE(data="d"),
            SSE(data="e"),
            SSE(data="f"),
            SSE(data="g", retry=7),
            SSE(data="h"),
        ],
    )


def test_retry_property_and_huge_retry() -> None:
    dec = SSEDecoder()
    assert dec.retry is None
    dec.feed(b"retry: 2500\n\n")
    assert dec.retry == 2500
    # more digits than int() converts by default: ignored, never an exception
    assert dec.feed(b"retry: " + b"9" * 6000 + b"\ndata: x\n\n") == [SSE(data="x")]
    assert dec.retry == 2500
    assert dec.feed(b"retry: " + b"0" * 6000 + b"12\ndata: x\n\n") == [SSE(data="x", retry=12)]


def test_id_with_nul_ignored() -> None:
    check(
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [SSE(data="a", id="1"), SSE(data="b", id="1")],
    )


def test_id_persists_and_can_be_cleared() -> None:
    check(
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid\ndata: d\n\nid: 3\ndata: e\n\n",
        [
            SSE(data="a", id="1"),
            SSE(data="b", id="1"),
            SSE(data="c", id="2"),  # set in a block that dispatched nothing
            SSE(data="d", id=""),
            SSE(data="e", id="3"),
        ],
    )
    dec = SSEDecoder()
    dec.feed(b"id: 7\n\n")
    assert dec.last_event_id == "7"


def test_id_set_after_data_in_same_block() -> None:
    check(b"data: a\nid: 9\n\n", [SSE(data="a", id="9")])


def test_unknown_fields_ignored() -> None:
    check(b"foo: bar\nDATA: x\nData: y\n data: z\ndata: a\n\n", [SSE(data="a")])


def test_invalid_utf8_replaced() -> None:
    check(
        b"data: a\xffb\n\nevent: \xc3\ndata: \xe2\x82\n\ndata: \xf0\x9f\x98\x80\n\n",
        [SSE(data="a\ufffdb"), SSE(event="\ufffd", data="\ufffd"), SSE(data="\U0001f600")],
    )


def test_multibyte_char_split_across_chunks() -> None:
    body = "data: 你好 über 😀\n\n".encode()
    assert parse(body) == [SSE(data="你好 über 😀")]


def test_incomplete_event_at_eof_dropped() -> None:
    check(b"data: a\n\ndata: b\n", [SSE(data="a")])
    check(b"data: a\n\ndata: b", [SSE(data="a")])
    check(b"data: a\n\nevent: x\ndata: b\r", [SSE(data="a")])


def test_empty_and_trivial_bodies() -> None:
    check(b"", [])
    check(b"\n\n\n", [])
    check(b"\xef\xbb\xbf", [])
    check(b":\n\n", [])
    dec = SSEDecoder()
    assert dec.feed(b"") == []
    assert dec.close() == []


def test_openai_stream() -> None:
    frame = (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"m","choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}\n\n'
    )
    body = frame * 3 + b"data: [DONE]\n\n"
    events = parse(body)
    assert [e.data for e in events[-2:]] == [frame[6:-2].decode(), "[DONE]"]
    assert len(events) == 4 and all(e.event == "message" for e in events)


def test_anthropic_stream() -> None:
    body = (
        b"event: message_start\ndata: {}\n\n"
        b": keepalive\n\n"
        b'event: ping\ndata: {"type": "ping"}\n\n'
        b'event: content_block_delta\ndata: {"t":1}\n\n'
    )
    check(
        body,
        [
            SSE(event="message_start", data="{}"),
            SSE(event="ping", data='{"type": "ping"}'),
            SSE(event="content_block_delta", data='{"t":1}'),
        ],
    )


def test_many_events_in_one_chunk_then_continuation() -> None:
    # A big chunk takes the bulk path; the open event continues in the next chunk.
    body = b"".join(b"data: %d\n\n" % i for i in range(500))
    dec = SSEDecoder()
    first = dec.feed(body + b"event: e\ndata: x")
    assert [e.data for e in first] == [str(i) for i in range(500)]
    assert dec.feed(b"\ndata: y\n") == []
    assert dec.feed(b"\ndata: z\n\n") == [SSE(event="e", data="x\ny"), SSE(data="z")]


def dashscope_events(n: int, start: int = 1) -> bytes:
    """``n`` DashScope-shaped blocks: id, event, comment, data (no space after colons)."""
    return b"".join(
        b"id:%d\nevent:result\n:HTTP_STATUS/200\n"
        b'data:{"output":{"finish_reason":"null","text":"t%d"},"request_id":"r"}\n\n' % (i, i)
        for i in range(start, start + n)
    )


def dashscope_expected(n: int, start: int = 1) -> list[SSE]:
    return [
        SSE(
            event="result",
            data=f'{{"output":{{"finish_reason":"null","text":"t{i}"}},"request_id":"r"}}',
            id=str(i),
            comments=("HTTP_STATUS/200",),
        )
        for i in range(start, start + n)
    ]


def test_dashscope_stream_many_events() -> None:
    # Enough events in one chunk for the column-at-a-time path, then split everywhere.
    body = dashscope_events(12)
    check(body, dashscope_expected(12))
    big = dashscope_events(3000)
    expected = dashscope_expected(3000)
    for size in (7, 200, 4096, 65536):
        chunks = [big[i : i + size] for i in range(0, len(big), size)]
        assert feed_chunks(chunks) == expected, size


def test_dashscope_stream_shares_event_type_and_comments() -> None:
    # Repeated "event:result" and ":HTTP_STATUS/200" lines reuse one string and one tuple.
    events = SSEDecoder().feed(dashscope_events(500))
    assert len(events) == 500
    assert len({id(e.comments) for e in events}) == 1
    assert len({id(e.event) for e in events}) == 1
    chunked: list[SSE] = []
    reads = SSEDecoder()  # runs read by the fast lane, blocks at the edges line by line
    for i in range(0, len(body := dashscope_events(500)), 4096):
        chunked += reads.feed(body[i : i + 4096])
    assert chunked == events
    assert len({id(e.comments) for e in chunked}) == len({id(e.event) for e in chunked}) == 1
    small = SSEDecoder()
    one_at_a_time = [e for i in range(1, 6) for e in small.feed(dashscope_events(1, i))]
    assert one_at_a_time == dashscope_expected(5)
    assert len({id(e.comments) for e in one_at_a_time}) == 1


def test_runs_of_blocks_with_odd_blocks_between() -> None:
    odd = [
        b": keepalive\n\n",
        b"id:77\nevent:error\n:HTTP_STATUS/429\ndata:{}\n\n",
        b"id:78\nevent:result\n:HTTP_STATUS/200\ndata: spaced\n\n",
        b"id:\x00\nevent:result\n:HTTP_STATUS/200\ndata:{}\n\n",
        b"id: 79\nevent:result\n:HTTP_STATUS/200\ndata:{}\n\n",
        b"id:80\nevent:result\n:HTTP_STATUS/200\ndata:{}\ndata:{}\n\n",
        b"id:81\nevent:result\nretry:250\n:HTTP_STATUS/200\ndata:{}\n\n",
        b"id:82\nevent:result\n:HTTP_STATUS/200\ndata\n\n",
        b"id:83\nevent:result\n:HTTP_STATUS/200\ndata:\xff\xfe\n\n",
        b"event:result\n:HTTP_STATUS/200\ndata:{}\n\n",
        b"\n\n",
    ]
    body = b""
    for k, block in enumerate(odd):
        body += dashscope_events(5 + k, 100 * k) + block
    body += dashscope_events(9, 5000)
    expected = reference(body)
    assert len(expected) > 100
    for size in (len(body), 1000, 333, 64):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert feed_chunks(chunks) == expected, size


def test_runs_of_blocks_keep_little_of_what_their_headers_said() -> None:
    # The lane remembers what the last short headers give an event; long or many distinct
    # headers (a hostile server) cannot make it hold much, and the events stay exact.
    from aiollm.framing._sse import _MAX_KEPT_HEADER, _kept_header

    for comment in (b"x" * (_MAX_KEPT_HEADER + 1), *(b"c%d" % i for i in range(200))):
        body = b"".join(b"id:%d\n:%s\ndata:{}\n\n" % (i, comment) for i in range(20))
        assert feed_chunks([body]) == reference(body)
    assert _kept_header.cache_info().currsize <= 64
    hits = _kept_header.cache_info().hits
    body = b"".join(b"id:%d\n:once\ndata:{}\n\n" % i for i in range(20))
    assert feed_chunks([body]) == feed_chunks([body]) == reference(body)
    assert _kept_header.cache_info().hits == hits + 1  # one read per run, then kept


def test_runs_of_blocks_invalid_utf8_and_spaces() -> None:
    # Ids and data with invalid UTF-8, "id: " and "data: " with one space stripped.
    blocks = [b"id: \xe4\xbd%d\n: c\xff\ndata: \xc3x %d\n\n" % (i, i) for i in range(40)]
    expected = [
        SSE(data=f"\ufffdx {i}", id=f"\ufffd{i}", comments=(" c\ufffd",)) for i in range(40)
    ]
    check(b"".join(blocks[:8]), expected[:8])
    assert feed_chunks([b"".join(blocks)]) == expected


def test_runs_of_blocks_respect_limits() -> None:
    body = dashscope_events(50)
    # An event counts its data (with a newline per line) and each comment line plus COMMENT_COST.
    size = max(len(b.rpartition(b"data:")[2]) + 1 for b in body.split(b"\n\n"))
    size += len(":HTTP_STATUS/200") + COMMENT_COST
    dec = SSEDecoder(max_event_bytes=size)
    assert len(dec.feed(body)) == 50
    big = body + b"id:51\nevent:result\n:HTTP_STATUS/200\ndata:" + b"x" * size + b"\n\n"
    for kw in ({"max_event_bytes": size}, {"max_line_bytes": size}):
        dec = SSEDecoder(**kw)  # type: ignore[arg-type]
        assert len(dec.feed(big)) == 50  # the events before the error come first
        with pytest.raises(ProtocolError, match=next(iter(kw))):
            dec.close()
        with pytest.raises(ProtocolError, match="after close"):
            dec.feed(b"data: x\n\n")
    dec = SSEDecoder(max_event_bytes=size - 1)
    assert len(dec.feed(body)) == 9  # ids 1-9 are one byte shorter
    with pytest.raises(ProtocolError, match="max_event_bytes"):
        dec.close()


# -- frames without blank lines, bare JSON lines (rules 1-3) ---------------------------------


def test_frames_without_blank_lines() -> None:
    frames = [b'{"a":1}', b'[{"b":2}]', b'{"c":"x\\ny"}']
    well_formed = b"".join(b"data: " + f + b"\n\n" for f in frames)
    packed = b"".join(b"data: " + f + b"\n" for f in frames)
    expected = [SSE(data=f.decode()) for f in frames]
    check(well_formed, expected)
    check(packed, expected)  # the last one at the end of the body (rule 3)
    check(packed[:-1], expected)  # even without its line end
    check(packed.replace(b"data: ", b"data:"), expected)
    check(packed.replace(b"\n", b"\r\n"), expected)
    check(packed.replace(b"\n", b"\r"), expected)
    # [DONE] is not JSON: at the end of the body without its blank line it is discarded
    check(packed + b"data: [DONE]\n", expected)
    check(packed + b"data: [DONE]\n\n", [*expected, SSE(data="[DONE]")])


def test_json_over_several_data_lines_is_joined() -> None:
    pretty = b'data: {\ndata:   "a": [\ndata:     1,\ndata:     2\ndata:   ]\ndata: }\n'
    expected = SSE(data='{\n  "a": [\n    1,\n    2\n  ]\n}')
    check(pretty + b"\n", [expected])
    check(pretty + pretty, [expected, expected])  # no blank lines at all
    split = b'data: {"choices":[{"delta":\ndata: {"content":"hi"}}]}\n'
    check(split * 2, [SSE(data='{"choices":[{"delta":\n{"content":"hi"}}]}')] * 2)
    # a brace inside a string does not close the value
    check(b'data: {"t":"}"\ndata: }\n\n', [SSE(data='{"t":"}"\n}')])
    # a closed value followed by more text on the same data line is not one JSON value
    check(b"data: {} x\ndata: {}\n\n", [SSE(data="{} x\n{}")])
    # text that is not JSON is joined, as WHATWG says
    check(b"data: YHOO\ndata: +2\ndata: 10\n\n", [SSE(data="YHOO\n+2\n10")])
    check(b"data: 1\ndata: 2\n\n", [SSE(data="1\n2")])  # scalars are never split
    check(b"data: [x]\ndata: y\n\n", [SSE(data="[x]\ny")])  # balanced but not JSON
    # a blank value does not start a frame: it joins
    check(b"data: {}\ndata:\ndata: \t\n\n", [SSE(data="{}\n\n\t")])


def test_fields_after_complete_json() -> None:
    # With the blank line, fields after the data belong to the event (WHATWG)
    check(
        b'data: {"a":1}\nid: 9\nevent: e\nretry: 5\n: c\n\n',
        [SSE(event="e", data='{"a":1}', id="9", retry=5, comments=(" c",))],
    )
    # without it, they belong to the next frame
    body = (
        b"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{}\n"
        b"id:2\nevent:error\n:HTTP_STATUS/500\nretry: 7\ndata:[]\n"
        b"id:3\n: trailing\n"
    )
    check(
        body,
        [
            SSE(event="result", data="{}", id="1", comments=("HTTP_STATUS/200",)),
            SSE(event="error", data="[]", id="2", retry=7, comments=("HTTP_STATUS/500",)),
        ],
    )
    dec = SSEDecoder()
    dec.feed(body)
    dec.close()
    assert dec.last_event_id == "3"


def test_bare_json_lines() -> None:
    err = b'{"error_code":110,"error_msg":"Access token invalid"}'
    body = b'data: {"a":1}\n\n' + err + b"\nid: 4\n" + b'{"error_code":18}\n\n{"error_code":336003}'
    check(
        body,
        [
            SSE(data='{"a":1}'),
            SSE(data=err.decode()),
            SSE(data='{"error_code":18}', id="4"),
            SSE(data='{"error_code":336003}', id="4"),  # at the end without its line end
        ],
    )
    # after complete JSON data without a blank line: the pending event first
    check(b'data: {"a":1}\n' + err + b"\n", [SSE(data='{"a":1}'), SSE(data=err.decode())])
    # an event being built around it continues
    check(b"event: e\ndata: 1\n{}\ndata: 2\n\n", [SSE(data="{}"), SSE(event="e", data="1\n2")])
    # a JSON body with no event-stream framing at all
    check(b'{"x":1}\n{"y":2}', [SSE(data='{"x":1}'), SSE(data='{"y":2}')])


def test_end_of_body_rules() -> None:
    check(b"data: a\n\ndata: b", [SSE(data="a")])  # not JSON: discarded
    check(b"data: a\n\ndata: {", [SSE(data="a")])  # incomplete JSON: discarded
    check(b"data: a\n\ndata: {}", [SSE(data="a"), SSE(data="{}")])
    check(b"event: x\ndata: {}\n", [SSE(event="x", data="{}")])
    dec = SSEDecoder()
    assert dec.feed(b"data: {}") == []
    assert dec.close() == [SSE(data="{}")]
    assert dec.close() == []


# -- lifecycle and limits -------------------------------------------------------------------


def test_feed_after_close_raises() -> None:
    dec = SSEDecoder()
    dec.close()
    with pytest.raises(ProtocolError):
        dec.feed(b"data: a\n\n")


def test_line_limit_in_one_chunk() -> None:
    dec = SSEDecoder(max_line_bytes=100)
    assert dec.feed(b"data: " + b"x" * 94 + b"\n\n") == [SSE(data="x" * 94)]  # 100: ok
    with pytest.raises(ProtocolError, match="max_line_bytes=100"):
        dec.feed(b"data: " + b"x" * 95 + b"\n\n")
    with pytest.raises(ProtocolError):
        dec.feed(b"data: a\n\n")  # unusable after an error


def test_line_limit_in_small_chunks() -> None:
    dec = SSEDecoder(max_line_bytes=1000)
    dec.feed(b"data: ok\n\n")
    with pytest.raises(ProtocolError, match="max_line_bytes") as info:
        for _ in range(200):
            dec.feed(b"x" * 7)
    assert isinstance(info.value, AiollmError)
    assert "SSEDecoder(max_line_bytes=...)" in str(info.value)


def test_line_limit_comment_and_crlf() -> None:
    dec = SSEDecoder(max_line_bytes=50)
    with pytest.raises(ProtocolError):
        for _ in range(20):
            dec.feed(b":" + b"c" * 9)
    # CRLF line ends do not count against the limit
    dec = SSEDecoder(max_line_bytes=10)
    assert dec.feed(b"data: 1234\r\n\r\n") == [SSE(data="1234")]


def test_event_limit() -> None:
    dec = SSEDecoder(max_event_bytes=100)
    # 10 lines of 9 bytes joined by 9 newlines = 99 bytes: ok
    assert dec.feed(b"data: xxxxxxxxx\n" * 10 + b"\n") == [SSE(data="\n".join(["x" * 9] * 10))]
    with pytest.raises(ProtocolError, match="max_event_bytes=100"):
        for _ in range(20):
            dec.feed(b"data: xxxxxxxxx\n")
    dec = SSEDecoder(max_event_bytes=100)
    with pytest.raises(ProtocolError, match="max_event_bytes"):
        dec.feed(b"data: xxxxxxxxx\n" * 11 + b"\n")
    # endless comments without a blank line are bounded too
    dec = SSEDecoder(max_event_bytes=100)
    with pytest.raises(ProtocolError, match="max_event_bytes"):
        for _ in range(20):
            dec.feed(b": keepalive\n")


def test_event_limit_not_hit_by_many_small_events() -> None:
    dec = SSEDecoder(max_event_bytes=20, max_line_bytes=20)
    body = b"data: 0123456789\n\n" * 1000
    assert len(dec.feed(body)) == 1000
    assert (
        len(feed_chunks([body[i : i + 7] for i in range(0, len(body), 7)], max_event_bytes=20))
        == 1000
    )


def test_bad_limits_rejected() -> None:
    with pytest.raises(ValueError):
        SSEDecoder(max_line_bytes=0)


# -- properties -------------------------------------------------------------------------------

FIELD_NAMES = ["data", "data", "data", "event", "id", "retry", "", "x", "dat"]
value_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=12,
) | st.sampled_from(
    ["", " ", "1000", "42", "a\0b", ":", " data: x", "{}", "[1]", '{"a":', "1}", "[", "]", '"}"']
)
line_strategy = st.one_of(
    st.tuples(
        st.sampled_from(FIELD_NAMES), st.sampled_from([":", ": ", ":  ", ""]), value_text
    ).map(lambda t: t[0] + t[1] + (t[2] if t[1] else "")),
    value_text.map(lambda v: ":" + v),  # comment
    st.sampled_from(['{"error_code":110,"error_msg":"x"}', "{", "{:"]),
)
block_strategy = st.lists(line_strategy, max_size=5)


def render(blocks: list[list[str]], ends: list[str], bom: bool, tail: str) -> bytes:
    out: list[str] = []
    k = 0
    for block in blocks:
        for line in [*block, ""]:
            out.append(line + ends[k % len(ends)])
            k += 1
    return (("\ufeff" if bom else "") + "".join(out) + tail).encode()


def split_at(body: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(body) + 1) for p in points})
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(block_strategy, max_size=8),
    ends=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=1, max_size=4),
    bom=st.booleans(),
    tail=st.sampled_from(["", "data: t", "data", ":c", "event: e", '{"a":1}']),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
# One space after the colon is dropped, not two: the id is " " (one block, and a run of them).
@example(blocks=[["id:  ", "data: x"]], ends=["\n"], bom=False, tail="", points=[])
@example(blocks=[["id:  ", "data: x"]] * 3, ends=["\n"], bom=False, tail="", points=[])
def test_chunking_invariance_and_reference(
    blocks: list[list[str]],
    ends: list[str],
    bom: bool,
    tail: str,
    points: list[int],
) -> None:
    body = render(blocks, ends, bom, tail)
    whole = feed_chunks([body])
    assert whole == reference(body)
    assert feed_chunks(split_at(body, points)) == whole


def json_containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5), json_containers, max_leaves=6
)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(
        st.lists(json_value, max_size=3) | st.dictionaries(st.text(max_size=4), json_value),
        min_size=1,
        max_size=12,
    ),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    space=st.sampled_from(["", " "]),
    indent=st.sampled_from([None, 0, 2]),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_json_frames_without_blank_lines_equal_well_formed(
    frames: list[object], end: str, space: str, indent: int | None, points: list[int]
) -> None:
    """JSON frames, pretty-printed or not, with or without blank lines: the same events."""
    docs = [json.dumps(f, indent=indent, ensure_ascii=False) for f in frames]
    blocks = ["".join(f"data:{space}{line}{end}" for line in doc.split("\n")) for doc in docs]
    well_formed = "".join(block + end for block in blocks).encode()
    packed = "".join(blocks).encode()
    expected = [SSE(data=doc if space else doc.replace("\n ", "\n")) for doc in docs]
    assert feed_chunks([well_formed]) == expected
    assert feed_chunks(split_at(packed, points)) == expected
    assert feed_chunks([packed]) == expected


interesting_bytes = st.lists(
    st.sampled_from(
        [
            b"data",
            b"event",
            b"id",
            b"retry",
            b":",
            b" ",
            b"\n",
            b"\r",
            b"\r\n",
            b"\x00",
            b"\xef\xbb\xbf",
            b"\xef",
            b"\xff",
            b"\xc3",
            b"7",
            b"x",
            b"data: ",
            b"\n\n",
            b"{",
            b'{"error_code":110}',
        ]
    )
    | st.binary(max_size=6),
    max_size=40,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(
    body=interesting_bytes,
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_arbitrary_bytes_match_reference(body: bytes, points: list[int]) -> None:
    whole = feed_chunks([body])
    assert whole == reference(body)
    assert feed_chunks(split_at(body, points)) == whole


@settings(max_examples=400, deadline=None)
@given(
    body=interesting_bytes | st.binary(max_size=200),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    max_line=st.integers(min_value=1, max_value=40),
    max_event=st.integers(min_value=1, max_value=40),
)
def test_arbitrary_bytes_only_protocol_error(
    body: bytes, points: list[int], max_line: int, max_event: int
) -> None:
    dec = SSEDecoder(max_line_bytes=max_line, max_event_bytes=max_event)
    bound = max(max_line, max_event)  # a bare JSON line is bounded by max_line_bytes
    try:
        for chunk in split_at(body, points):
            for ev in dec.feed(chunk):
                assert len(ev.data.encode()) <= bound * 3  # U+FFFD is 3 bytes
        dec.close()
    except ProtocolError:
        pass


# Blocks with more than data lines, repeated with few changes (DashScope-like runs).
HEADER_LINES = [
    "id:{n}",
    "id: {n}",
    "event:result",
    "event: delta",
    ":HTTP_STATUS/200",
    ": keepalive",
    "retry:1500",
    "retry: x",
    "x-unknown:1",
    '{{"error_code":110}}',
    "id",
    "data:head",
    "data",
]
raw_value = value_text.map(str.encode) | st.sampled_from(
    [b"\xff", b"\xe4\xbd", b"caf\xc3", b" lead", b"", b"a\x00b", b'{"t":"\xe4\xbd\xa0"}']
)
shape_strategy = st.tuples(
    st.lists(st.sampled_from(HEADER_LINES), max_size=4),
    st.sampled_from(["data:", "data: ", "data"]),
)
block_end = st.sampled_from(["\n\n"] * 8 + ["\n", "\n\n\n"])
Run = tuple[tuple[list[str], str], list[tuple[bytes, bytes, str]]]
run_strategy = st.tuples(
    shape_strategy,
    st.lists(st.tuples(raw_value, raw_value, block_end), min_size=1, max_size=12),
)


def render_runs(runs: list[Run]) -> bytes:
    """Blocks of each run's shape; ``{n}`` in a header line takes the block's id value."""
    out: list[bytes] = []
    for (header, data_field), values in runs:
        for ident, value, end in values:
            for line in header:
                out.append(line.replace("{n}", "\x00").encode().replace(b"\x00", ident) + b"\n")
            out.append(data_field.encode() + (value if data_field != "data" else b""))
            out.append(end.encode())
    return b"".join(out)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(run_strategy, min_size=1, max_size=5),
    crlf=st.booleans(),
    points=st.lists(st.integers(min_value=0, max_value=100_000), max_size=8),
)
@example(
    runs=[((["id:{n}", "retry: x"], "data:"), [(b"", b"", "\n\n")] * 3 + [(b"0", b"", "\n\n")])],
    crlf=False,
    points=[],
)  # a run whose first event is plain but a later one sets an id
def test_runs_of_blocks_match_reference(
    runs: list[Run],
    crlf: bool,
    points: list[int],
) -> None:
    body = render_runs(runs)
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    expected = reference(body)
    assert feed_chunks([body]) == expected
    assert feed_chunks(split_at(body, points)) == expected
