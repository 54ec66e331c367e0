"""JSONFramer document splitting, and sniff_body."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiollm.errors import ProtocolError
from aiollm.framing import SNIFF_MAX_BYTES, BodyKind, BodySniffer, JSONFramer, sniff_body

# -- helpers ------------------------------------------------------------------------------


def frame(chunks: list[bytes], **kw: Any) -> list[bytes]:
    framer = JSONFramer(**kw)
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    out += framer.close()
    return out


def frame_all_ways(body: bytes) -> list[bytes]:
    """Frame ``body`` whole, split in two at every offset, and byte by byte; all must agree."""
    whole = frame([body])
    for i in range(1, len(body)):
        assert frame([body[:i], body[i:]]) == whole, f"split at {i}"
    assert frame([body[i : i + 1] for i in range(len(body))]) == whole
    return whole


def split_at(body: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(body) + 1) for p in points})
    return [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]


# -- JSONFramer ---------------------------------------------------------------------------


def test_single_pretty_printed_document() -> None:
    doc = {"id": "x", "choices": [{"message": {"content": "a\nb {"}}], "n": [1, 2, {}]}
    body = json.dumps(doc, indent=2).encode() + b"\n"
    (out,) = frame_all_ways(body)
    assert json.loads(out) == doc
    assert out == body.strip()


def test_pretty_printed_not_split_at_newlines() -> None:
    framer = JSONFramer()
    assert framer.feed(b'{\n  "a": 1,\n') == []
    assert framer.feed(b'  "b": [\n    2\n  ]\n') == []
    assert framer.feed(b"}\n") == [b'{\n  "a": 1,\n  "b": [\n    2\n  ]\n}']
    assert framer.close() == []


def test_ndjson_incremental() -> None:
    framer = JSONFramer()
    assert framer.feed(b'{"a": 1}\n{"b"') == [b'{"a": 1}']
    assert framer.feed(b": 2}") == [b'{"b": 2}']  # returned as soon as it is complete
    assert framer.feed(b"\n") == []
    assert framer.feed(b'{"c": [3]}\r\n') == [b'{"c": [3]}']
    assert framer.close() == []


def test_ndjson_lines() -> None:
    lines = [b'{"model":"m","response":"Hi","done":false}', b'{"done":true}', b"[1,2]"]
    assert frame_all_ways(b"\n".join(lines) + b"\n") == lines


def test_back_to_back() -> None:
    assert frame_all_ways(b'{"a":1}{"b":2}[3]"s"') == [b'{"a":1}', b'{"b":2}', b"[3]", b'"s"']


def test_whitespace_separated() -> None:
    body = b' \r\n\t{"a":1} {"b":2}\n\n  [ ]\t"x"  7 true\nfalse null -1.5e3 \n'
    assert frame_all_ways(body) == [
        b'{"a":1}',
        b'{"b":2}',
        b"[ ]",
        b'"x"',
        b"7",
        b"true",
        b"false",
        b"null",
        b"-1.5e3",
    ]


def test_strings_with_brackets_and_escapes() -> None:
    docs = [
        b'{"a":"}{][","b":"\\"}","c":"\\\\"}',
        b'["\\\\\\"]", "{"]',
        b'{"k\\"}":"\\u005c"}',
        b'"just a string with } and \\" inside"',
    ]
    assert frame_all_ways(b"".join(docs)) == docs
    for d in docs:
        json.loads(d)  # they are real JSON


def test_scalar_documents() -> None:
    framer = JSONFramer()
    assert framer.feed(b"12") == []  # may continue
    assert framer.feed(b"3 ") == [b"123"]
    assert framer.feed(b"4") == []
    assert framer.close() == [b"4"]  # a final scalar is a document at close
    assert frame([b'"token"']) == [b'"token"']
    assert frame([b"1{}"]) == [b"1", b"{}"]


def test_bom_skipped() -> None:
    assert frame_all_ways(b'\xef\xbb\xbf{"a":1}') == [b'{"a":1}']
    assert frame([b"\xef", b"\xbb", b"\xbf", b"[1]"]) == [b"[1]"]


def test_utf8_content_untouched() -> None:
    doc = '{"t":"你好 😀"}'.encode()
    assert frame_all_ways(doc) == [doc]


def test_long_documents_with_escapes_across_scan_windows() -> None:
    # Long strings and long runs of tokens are scanned in windows; an escape, a quote or a
    # bracket may fall on any window edge.
    docs = []
    for shift in range(6):
        docs.append(
            json.dumps(
                {
                    "a": "x" * (32 * 1024 - shift) + '\\"}' * 7 + "\\" * 9000,
                    "b": ['q\\"', "{"] * 9000,
                }
            ).encode()
        )
    body = b"\n".join(docs)
    assert frame([body]) == docs
    assert frame(split_at(body, list(range(0, len(body), 9973)))) == docs
    assert [json.loads(d) for d in docs]


def test_empty_body() -> None:
    assert frame([]) == []
    assert frame([b""]) == []
    assert frame([b" \n\t\r\n "]) == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1',
        b'{"a":[1,2]',
        b'{"a":"unterminated',
        b'{"a":"x\\',
        b'"abc',
        b'{"a":1}\n{"b":',
        b"[",
        b"tru",
        b"-",
        b"1.",
        b"\xef\xbb",
    ],
)
def test_truncated_body_raises(body: bytes) -> None:
    for chunks in ([body], [body[i : i + 1] for i in range(len(body))]):
        framer = JSONFramer()
        for chunk in chunks:
            framer.feed(chunk)
        with pytest.raises(ProtocolError, match="truncated JSON body"):
            framer.close()


@pytest.mark.parametrize("body", [b"}", b"]", b'{"a":1}}', b",", b"abc ", b"<html>", b"nul l"])
def test_invalid_top_level_raises(body: bytes) -> None:
    framer = JSONFramer()
    with pytest.raises(ProtocolError):
        framer.feed(body)
        framer.close()
    with pytest.raises(ProtocolError):
        framer.feed(b"{}")  # unusable after an error or close


def test_oversize_document_raises() -> None:
    doc = b'{"a":"' + b"x" * 100 + b'"}'
    assert frame([doc], max_document_bytes=len(doc)) == [doc]
    with pytest.raises(ProtocolError, match="max_document_bytes"):
        frame([doc], max_document_bytes=len(doc) - 1)
    # also when it arrives in many small chunks and never completes
    framer = JSONFramer(max_document_bytes=1000)
    with pytest.raises(ProtocolError, match=r"JSONFramer\(max_document_bytes=\.\.\.\)"):
        framer.feed(b"[")
        for _ in range(200):
            framer.feed(b"1,2,3,")
    framer = JSONFramer(max_document_bytes=1000)
    with pytest.raises(ProtocolError, match="max_document_bytes"):
        framer.feed(b'"')
        for _ in range(300):
            framer.feed(b"abc\\")  # ends inside an escape every time
    with pytest.raises(ProtocolError, match="max_document_bytes"):
        frame([b"1" * 50 + b" "], max_document_bytes=10)


def test_many_small_documents_within_limit() -> None:
    body = b'{"a":1}\n' * 1000
    assert len(frame(split_at(body, list(range(0, len(body), 5))), max_document_bytes=7)) == 1000


def test_whitespace_between_documents_is_not_retained() -> None:
    framer = JSONFramer(max_document_bytes=10)
    for _ in range(100):
        assert framer.feed(b" " * 50 + b"\n") == []
    assert framer.feed(b"{}") == [b"{}"]


# -- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def needs_separator(a: Any, b: Any) -> bool:
    bare = (bool, int, float, type(None))
    return isinstance(a, bare) and isinstance(b, bare)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(json_values, max_size=8),
    seps=st.lists(st.sampled_from(["", "", " ", "\n", "\r\n", "\n\n", "\t "]), min_size=1),
    points=st.lists(st.integers(min_value=0, max_value=100_000), max_size=8),
    indent=st.sampled_from([None, 0, 2]),
)
def test_roundtrip_concatenated_documents(
    values: list[Any], seps: list[str], points: list[int], indent: int | None
) -> None:
    parts: list[bytes] = []
    for i, value in enumerate(values):
        if indent is None:
            doc = msgspec.json.encode(value)
        else:
            doc = msgspec.json.format(msgspec.json.encode(value), indent=indent)
        if i:
            sep = seps[i % len(seps)]
            if not sep and needs_separator(values[i - 1], value):
                sep = " "
            parts.append(sep.encode())
        parts.append(doc)
    body = b"".join(parts)
    docs = frame(split_at(body, points))
    assert docs == frame([body])
    assert [msgspec.json.decode(d) for d in docs] == values


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(
        st.sampled_from(
            [b"{", b"}", b"[", b"]", b'"', b"\\", b" ", b"\n", b"1", b"tr", b"ue", b","]
        )
        | st.binary(max_size=5),
        max_size=40,
    ).map(b"".join),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    limit=st.integers(min_value=1, max_value=30),
)
def test_arbitrary_bytes_only_protocol_error(body: bytes, points: list[int], limit: int) -> None:
    framer = JSONFramer(max_document_bytes=limit)
    try:
        for chunk in split_at(body, points):
            for doc in framer.feed(chunk):
                assert 0 < len(doc) <= limit
        framer.close()
    except ProtocolError:
        pass


ANSWER = (
    b'{"id":"as-1","object":"chat.completion","result":"\xe4\xbd\xa0\xe5\xa5\xbd",'
    b'"is_truncated":false,"need_clear_history":false,"usage":{"total_tokens":74}}'
)


@pytest.mark.parametrize("junk", [b"}", b"<html>", b"]]", b",", b": 1"])
@pytest.mark.parametrize("doc", [ANSWER, b'{"error_code":111,"error_msg":"Access token expired"}'])
def test_completed_documents_come_before_the_error(doc: bytes, junk: bytes) -> None:
    """Junk after a whole document in the same chunk: the document first, then the error."""
    body = doc + b"\n" + junk
    for chunks in ([body], split_at(body, [len(doc)]), [body[i : i + 1] for i in range(len(body))]):
        framer = JSONFramer()
        docs: list[bytes] = []
        with pytest.raises(ProtocolError, match=r"JSON body|JSON value"):
            for chunk in chunks:
                docs += framer.feed(chunk)
            framer.close()
        assert docs == [doc]
    if junk == b"<html>":
        return  # a top-level token that may go on: the error comes at the end of the body
    framer = JSONFramer()
    assert framer.feed(body) == [doc]
    with pytest.raises(ProtocolError, match="JSON"):
        framer.feed(b"{}")  # the next call raises
    with pytest.raises(ProtocolError, match="after close"):
        framer.feed(b"{}")


# -- sniff_body ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "head", "kind"),
    [
        # the media type decides when it is specific
        ("text/event-stream", b"", BodyKind.SSE),
        ("text/event-stream; charset=utf-8", b"{", BodyKind.SSE),
        ("Text/Event-Stream;charset=UTF-8", b"", BodyKind.SSE),
        ("application/json", b"data: x", BodyKind.JSON),
        ("application/json;charset=UTF-8", b"", BodyKind.JSON),
        ("APPLICATION/JSON ; charset=utf-8", b"<html>", BodyKind.JSON),
        ("application/x-ndjson", b"", BodyKind.JSON),
        ("application/jsonl", b"", BodyKind.JSON),
        ("application/problem+json", b"", BodyKind.JSON),
        ("application/vnd.api+json; ext=x", b"", BodyKind.JSON),
        # otherwise the head decides
        (None, b'{"error": {}}', BodyKind.JSON),
        (None, b"[{}]", BodyKind.JSON),
        ("", b"\xef\xbb\xbf \r\n\t{", BodyKind.JSON),
        ("text/plain", b"data: {}", BodyKind.SSE),
        ("text/plain; charset=utf-8", b"event: x\n", BodyKind.SSE),
        ("application/octet-stream", b"id: 1\n", BodyKind.SSE),
        (None, b"retry: 100\n", BodyKind.SSE),
        (None, b": ping\n\n", BodyKind.SSE),
        (None, b"\n\ndata:x", BodyKind.SSE),
        ("text/html", b"<html><body>502 Bad Gateway</body></html>", BodyKind.OTHER),
        ("text/html; charset=utf-8", b'  {"code": 500}', BodyKind.JSON),
        ("text/html", b"data: x", BodyKind.SSE),
        ("text/plain", b"Internal Server Error", BodyKind.OTHER),
        (None, b"", BodyKind.OTHER),
        (None, b"   ", BodyKind.OTHER),
        (None, b"DATA: x", BodyKind.OTHER),
        (None, b"dat", BodyKind.OTHER),
        (None, b'"token"', BodyKind.OTHER),
        ("json", b"x", BodyKind.OTHER),
        ("+json", b"x", BodyKind.OTHER),
    ],
)
def test_sniff_body(content_type: str | None, head: bytes, kind: BodyKind) -> None:
    assert sniff_body(content_type, head) is kind


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"", BodyKind.OTHER),
        (b"\n", BodyKind.OTHER),
        (b"  \r\n", BodyKind.OTHER),
        (b"da", BodyKind.OTHER),
        (b"\n\nretr", BodyKind.OTHER),
        (b":", BodyKind.SSE),
        (b"\xef\xbb", BodyKind.OTHER),
        (b"\xef\xbb\xbf", BodyKind.OTHER),
        (b"\xef\xbb\xbf ev", BodyKind.OTHER),
    ],
)
def test_sniff_waits_on_a_head_too_short_to_decide(head: bytes, kind: BodyKind) -> None:
    if kind is BodyKind.SSE:
        assert sniff_body(None, head, final=False) is kind
        return
    assert sniff_body(None, head, final=False) is None
    assert sniff_body(None, head) is kind  # at the end of the body: decided
    assert sniff_body("application/json", head, final=False) is BodyKind.JSON


def test_sniff_decides_once_the_prefix_is_whole() -> None:
    assert sniff_body(None, b"\n", final=False) is None
    assert sniff_body(None, b"\nda", final=False) is None
    assert sniff_body(None, b"\ndata", final=False) is None
    assert sniff_body(None, b"\ndata:", final=False) is BodyKind.SSE
    assert sniff_body(None, b"\n\t{", final=False) is BodyKind.JSON
    assert sniff_body(None, b"\xef\xbb", final=False) is None
    assert sniff_body(None, b"\xef\xbb\xbf[", final=False) is BodyKind.JSON


def test_sniff_decides_on_what_cannot_become_sse_or_json() -> None:
    assert sniff_body(None, b"<", final=False) is BodyKind.OTHER
    assert sniff_body(None, b"dx", final=False) is BodyKind.OTHER
    assert sniff_body(None, b"\n" * SNIFF_MAX_BYTES, final=False) is BodyKind.OTHER


@settings(max_examples=200, deadline=None)
@given(
    lead=st.sampled_from([b"", b"\n", b" \r\n\t", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"]),
    head=st.sampled_from([b"data: {}\n\n", b": x\n", b"id: 1\n", b"{}", b"[1]", b"<p>", b"dat"]),
    points=st.lists(st.integers(min_value=0, max_value=100), max_size=5),
)
def test_body_sniffer_split_invariance(lead: bytes, head: bytes, points: list[int]) -> None:
    body = lead + head
    expected = sniff_body(None, body)
    sniffer = BodySniffer(None)
    kinds = [sniffer.feed(chunk) for chunk in split_at(body, points)] + [sniffer.end()]
    assert [k for k in kinds if k is not None] == [expected]
    assert body.startswith(sniffer.head)  # every byte before the decision is kept
