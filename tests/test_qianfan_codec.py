"""Qianfan response decoder, sans-IO: the document's real frames, error bodies, anomalies, safety."""

from __future__ import annotations

import warnings

import pytest
from decoding import decoded, http_failure

from aiollm.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from aiollm.events import Event, Finish, ResponseInfo, SafetyNotice, TextDelta, Usage, fold
from aiollm.providers._base import Call
from aiollm.providers.qianfan import QianfanDecoder, SentenceOrderWarning, error_from_code

# The streamed answer of the Llama-2-7b-chat document, frame for frame (no blank lines between
# the frames, as the document prints them).
SEED_STREAM = """\
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166793,"sentence_id":0,"is_end":false,"is_truncated":false,"result":"以下是一些适合自驾游的路线推荐:\\n\\n1.","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":16,"total_tokens":27}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166794,"sentence_id":1,"is_end":false,"is_truncated":false,"result":" 中国大陆最美的景观大道:川藏线,从成都出发,沿着川藏公路一路向西,经过稻城亚丁、理塘、巴塘、芒康等美景,最终到达拉萨。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":50,"total_tokens":77}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166795,"sentence_id":2,"is_end":false,"is_truncated":false,"result":"\\n2. 丝绸之路:这是一条贯穿中国东西部的公路,从上海出发,经过西安、兰州、乌鲁木齐等城市,最终到达喀什。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":43,"total_tokens":120}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166796,"sentence_id":3,"is_end":false,"is_truncated":false,"result":"沿途可以欣赏到中国北方和南方的不同景色。\\n3. 西北大环线:从成都出发,经过都江堰、青城山、丹巴、塔公草原、新都桥等景点,最终到达西宁。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":56,"total_tokens":176}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166799,"sentence_id":4,"is_end":false,"is_truncated":false,"result":"这条路线可以领略到中国西北地区的壮美风光。\\n4. 东北环线:从沈阳出发,经过长春、吉林、延吉等城市,最终到达哈尔滨。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":48,"total_tokens":224}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166800,"sentence_id":5,"is_end":false,"is_truncated":false,"result":"沿途可以欣赏到中国东北地区的广阔草原和森林。\\n5. 西南环线:从成都出发,经过雅安、康定、理塘、稻城亚丁等景点,最终到达香格里拉。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":54,"total_tokens":278}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166802,"sentence_id":6,"is_end":false,"is_truncated":false,"result":"这条路线可以领略到中国西南地区的高山峡谷和民族文化。\\n6. 海南环线:从三亚出发,经过海口、文昌、万宁等城市,最终到达三亚。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":52,"total_tokens":330}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166803,"sentence_id":7,"is_end":false,"is_truncated":false,"result":"这条路线可以欣赏到中国南方的海岸线和热带雨林。\\n7. 滇藏线:从昆明出发,经过大理、丽江、香格里拉等景点,最终到达西藏拉萨。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":52,"total_tokens":382}}
data: {"id":"as-ywwpgx4dt7","object":"chat.completion","created":1680166804,"sentence_id":8,"is_end":true,"is_truncated":false,"result":"这条路线可以领略到中国西南地区和西藏地区的自然风光和人文景观。","need_clear_history":false,"usage":{"prompt_tokens":11,"completion_tokens":30,"total_tokens":412}}
""".encode()

SEED_TEXT = (
    "以下是一些适合自驾游的路线推荐:\n\n1."
    " 中国大陆最美的景观大道:川藏线,从成都出发,沿着川藏公路一路向西,经过稻城亚丁、理塘、巴塘、芒康等美景,最终到达拉萨。"
    "\n2. 丝绸之路:这是一条贯穿中国东西部的公路,从上海出发,经过西安、兰州、乌鲁木齐等城市,最终到达喀什。"
    "沿途可以欣赏到中国北方和南方的不同景色。\n3. 西北大环线:从成都出发,经过都江堰、青城山、丹巴、塔公草原、新都桥等景点,最终到达西宁。"
    "这条路线可以领略到中国西北地区的壮美风光。\n4. 东北环线:从沈阳出发,经过长春、吉林、延吉等城市,最终到达哈尔滨。"
    "沿途可以欣赏到中国东北地区的广阔草原和森林。\n5. 西南环线:从成都出发,经过雅安、康定、理塘、稻城亚丁等景点,最终到达香格里拉。"
    "这条路线可以领略到中国西南地区的高山峡谷和民族文化。\n6. 海南环线:从三亚出发,经过海口、文昌、万宁等城市,最终到达三亚。"
    "这条路线可以欣赏到中国南方的海岸线和热带雨林。\n7. 滇藏线:从昆明出发,经过大理、丽江、香格里拉等景点,最终到达西藏拉萨。"
    "这条路线可以领略到中国西南地区和西藏地区的自然风光和人文景观。"
)

# The document's non-streamed single-turn answer.
SEED_RESPONSE = """{
  "id": "as-bcmt5ct4iy",
  "object": "chat.completion",
  "created": 1680167072,
  "result": "您好,我是由Meta AI研发并开源,在编码、推理及知识应用等场景表现优秀,Llama-2-7b-chat是高性能版本。",
  "is_truncated":false,
  "need_clear_history": false,
  "usage": {
    "prompt_tokens": 7,
    "completion_tokens": 67,
    "total_tokens": 74
  }
}""".encode()


def stream_codec(status: int = 200, headers: dict[str, str] | None = None) -> QianfanDecoder:
    call = Call(op="chat", model="llama_2_7b", stream=True, messages=[])
    return QianfanDecoder(call, status, headers)


def plain_codec(status: int = 200, headers: dict[str, str] | None = None) -> QianfanDecoder:
    call = Call(op="chat", model="llama_2_7b", stream=False, messages=[])
    return QianfanDecoder(call, status, headers)


def sse(codec: QianfanDecoder, data: bytes | str) -> list[Event]:
    """The events of one event-stream frame with ``data``."""
    raw = data if isinstance(data, bytes) else data.encode()
    return decoded(codec, [b"data: " + raw + b"\n\n"], end=False)


def whole(codec: QianfanDecoder, body: bytes, *, info: bool = False) -> list[Event]:
    """The events of a whole JSON body."""
    return decoded(codec, [body], info=info)


HTML = {"Content-Type": "text/html"}


def frame(**fields: object) -> str:
    import json

    return json.dumps(fields, ensure_ascii=False)


def decode_stream(
    codec: QianfanDecoder, body: bytes, chunk: int = 0, *, info: bool = False
) -> list[Event]:
    """Feed ``body`` to the decoder (in ``chunk``-byte pieces) and end it."""
    chunks = [body] if not chunk else [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return decoded(codec, chunks, info=info)


# -- the document's frames ------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_seed_stream_text_usage_finish(chunk: int) -> None:
    codec = stream_codec()
    events = decode_stream(codec, SEED_STREAM, chunk, info=True)
    completion = fold(events)
    events = [e for e in events if not isinstance(e, ResponseInfo)]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == SEED_TEXT
    assert sum(isinstance(e, TextDelta) for e in events) == 9
    usages = [e for e in events if isinstance(e, Usage)]
    # Only the is_end frame's usage counts (earlier frames' usage varies by deployment).
    assert usages == [Usage(11, 30, 412)]
    assert events[-1] == Finish("stop")
    assert codec.finished
    assert completion.request_id == "as-ywwpgx4dt7"
    assert "sentence_anomalies" not in completion.extra
    assert completion.extra["need_clear_history"] is False


def test_seed_stream_with_blank_lines_too() -> None:
    body = SEED_STREAM.replace(b"\ndata: ", b"\n\ndata: ") + b"\n"
    events = decode_stream(stream_codec(), body)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == SEED_TEXT


def test_seed_non_streamed_response() -> None:
    codec = plain_codec()
    events = whole(codec, SEED_RESPONSE, info=True)
    completion = fold(events)
    events = [e for e in events if not isinstance(e, ResponseInfo)]
    assert events[0] == TextDelta(
        "您好,我是由Meta AI研发并开源,在编码、推理及知识应用等场景表现优秀,Llama-2-7b-chat是高性能版本。"
    )
    assert Usage(7, 67, 74) in events
    assert events[-1] == Finish("stop")
    assert codec.finished and completion.request_id == "as-bcmt5ct4iy"
    assert codec.end() == []


def test_truncated_response_finishes_with_length() -> None:
    codec = plain_codec()
    events = whole(
        codec, b'{"id":"a","result":"x","is_truncated":true,"usage":{"total_tokens":3}}', info=True
    )
    assert events[-1] == Finish("length")
    assert fold(events).extra["is_truncated"] is True


def test_finish_reason_from_the_body() -> None:
    assert whole(plain_codec(), b'{"result":"x","finish_reason":"normal"}')[-1] == Finish("stop")
    events = whole(plain_codec(), b'{"result":"","finish_reason":"content_filter"}')
    assert events == [Finish("content_filter")]


# -- stream ends ------------------------------------------------------------------------------
def test_is_end_frame_with_empty_result_ends_the_stream() -> None:
    codec = stream_codec()
    assert sse(codec, frame(id="a", sentence_id=0, is_end=False, result="hi")) == [TextDelta("hi")]
    events = sse(
        codec, frame(id="a", sentence_id=1, is_end=True, result="", usage={"total_tokens": 5})
    )
    assert events == [Usage(None, None, 5), Finish("stop")]
    assert codec.finished


def test_stream_ending_without_is_end_is_a_protocol_error() -> None:
    codec = stream_codec()
    body = SEED_STREAM.rsplit(b"\n", 2)[0] + b"\n"  # drop the is_end frame
    with pytest.raises(ProtocolError, match="without its is_end frame"):
        decode_stream(codec, body)


def test_empty_stream_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        stream_codec().end()
    with pytest.raises(ProtocolError):
        plain_codec().end()


def test_malformed_frame_is_a_protocol_error_without_secrets() -> None:
    codec = stream_codec()
    with pytest.raises(ProtocolError, match="malformed JSON frame") as info:
        sse(codec, '{"result": "x", "u": "?access_token=24.abc')
    assert "24.abc" not in str(info.value)
    with pytest.raises(ProtocolError):
        sse(stream_codec(), '{"result": 5}')  # wrong type
    with pytest.raises(ProtocolError):
        whole(stream_codec(), b"[1, 2]")


def test_empty_data_is_ignored() -> None:
    assert sse(stream_codec(), "") == []


# -- sentence_id ----------------------------------------------------------------------------
def test_sentence_gap_keeps_text_and_warns() -> None:
    codec = stream_codec()
    events: list[Event] = []
    with pytest.warns(SentenceOrderWarning, match="skipped: expected 1, got 3"):
        for sid, text in [(0, "a"), (3, "b"), (4, "c")]:
            events += decoded(
                codec,
                [f"data: {frame(sentence_id=sid, is_end=False, result=text)}\n\n"],
                end=False,
                info=True,
            )
    events += decoded(
        codec, [f"data: {frame(sentence_id=5, is_end=True, result='d')}\n\n"], info=True
    )
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "abcd"
    assert fold(events).extra["sentence_anomalies"] == [
        {"frame": 1, "expected": 1, "sentence_id": 3}
    ]


def test_repeated_sentence_ids_warn_once_and_list_each() -> None:
    codec = stream_codec()
    events: list[Event] = []
    with pytest.warns(SentenceOrderWarning, match="repeated") as record:
        for i in range(4):
            body = f"data: {frame(sentence_id=0, is_end=i == 3, result=str(i))}\n\n"
            events += decoded(codec, [body], end=False, info=True)
    assert len(record) == 1
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "0123"
    assert [a["frame"] for a in fold(events).extra["sentence_anomalies"]] == [1, 2, 3]


def test_anomaly_list_is_bounded() -> None:
    codec = stream_codec()
    events: list[Event] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SentenceOrderWarning)
        for _ in range(500):
            body = f"data: {frame(sentence_id=0, is_end=False, result='x')}\n\n"
            events += decoded(codec, [body], end=False, info=True)
    assert len(fold(events).extra["sentence_anomalies"]) == 100


# -- safety ---------------------------------------------------------------------------------------
def test_need_clear_history_becomes_one_safety_notice() -> None:
    codec = stream_codec()
    first = frame(sentence_id=0, is_end=False, result="a", need_clear_history=True, ban_round=2)
    last = frame(sentence_id=1, is_end=True, result="", need_clear_history=True, ban_round=2)
    events = decoded(codec, [f"data: {first}\n\ndata: {last}\n\n"], info=True)
    notices = [e for e in events if isinstance(e, SafetyNotice)]
    assert len(notices) == 1
    assert notices[0].clear_history and notices[0].ban_round == 2
    extra = fold(events).extra
    assert extra["need_clear_history"] is True and extra["ban_round"] == 2


def test_non_streamed_unsafe_question() -> None:
    codec = plain_codec()
    events = whole(codec, b'{"id":"x","result":"","need_clear_history":true,"ban_round":-1}')
    assert events[0] == SafetyNotice(
        clear_history=True,
        ban_round=-1,
        message=events[0].message,  # type: ignore[union-attr]
    )
    assert "current question" in (events[0].message or "")  # type: ignore[union-attr]
    assert events[-1] == Finish("stop")


# -- errors ---------------------------------------------------------------------------------------
ERROR_TABLE: list[tuple[int, type[APIError], bool]] = [
    (1, ServerError, True),
    (2, ServerError, True),
    (336000, ServerError, True),
    (4, RateLimitError, True),
    (18, RateLimitError, True),
    (336100, RateLimitError, True),
    (336501, RateLimitError, True),
    (336502, RateLimitError, True),
    (17, QuotaExceededError, False),
    (19, QuotaExceededError, False),
    (13, AuthenticationError, False),
    (100, AuthenticationError, False),
    (110, AuthenticationError, False),
    (111, AuthenticationError, False),
    (6, PermissionDeniedError, False),
    (336004, PermissionDeniedError, False),
    (3, NotFoundError, False),
    (336005, NotFoundError, False),
    (336001, InvalidRequestError, False),
    (336002, InvalidRequestError, False),
    (336003, InvalidRequestError, False),
    (336101, InvalidRequestError, False),
    (336105, InvalidRequestError, False),
    (999999, APIError, False),
]


@pytest.mark.parametrize(("code", "cls", "retryable"), ERROR_TABLE)
def test_error_table(code: int, cls: type[APIError], retryable: bool) -> None:
    err = error_from_code(code, "msg")
    assert type(err) is cls
    assert err.code == code and isinstance(err.code, int)
    assert err.retryable is retryable
    assert err.provider == "qianfan"


def test_error_body_on_a_stream_request_arrives_as_json() -> None:
    codec = stream_codec()
    with pytest.raises(RateLimitError) as info:
        whole(codec, b'{"error_code":18,"error_msg":"Open api qps request limit reached"}')
    err = info.value
    assert err.code == 18 and err.status == 200
    assert "Open api qps request limit reached" in str(err)


def test_error_code_as_string_and_zero() -> None:
    with pytest.raises(AuthenticationError) as info:
        whole(plain_codec(), b'{"error_code":"110","error_msg":"Access token invalid"}')
    assert info.value.code == 110
    # error_code 0 is no error
    assert whole(plain_codec(), b'{"error_code":0,"result":"ok"}')[0] == TextDelta("ok")
    with pytest.raises(APIError) as other:
        whole(plain_codec(), b'{"error_code":"weird","error_msg":"?"}')
    assert other.value.code == "weird"


def test_error_frame_inside_a_stream() -> None:
    codec = stream_codec()
    body = (
        SEED_STREAM.split(b"\n")[0]
        + b'\ndata: {"error_code":336000,"error_msg":"Internal error"}\n'
    )
    with pytest.raises(ServerError, match="Internal error"):
        decode_stream(codec, body)


@pytest.mark.parametrize("eol", [b"\n", b""])
def test_bare_json_error_line_inside_a_stream(eol: bytes) -> None:
    codec = stream_codec()
    body = (
        SEED_STREAM.split(b"\n")[0]
        + b'\n{"error_code":111,"error_msg":"Access token expired"}'
        + eol
    )
    with pytest.raises(AuthenticationError) as info:
        decode_stream(codec, body)
    assert info.value.code == 111


def test_bare_json_error_line_as_the_whole_stream() -> None:
    with pytest.raises(AuthenticationError):
        decode_stream(stream_codec(), b'{"error_code":110,"error_msg":"Access token invalid"}\n')


def test_html_error_body_with_a_code() -> None:
    body = b'<html><body>{"error_code":18,"error_msg":"Open api qps request limit reached"}</body></html>'
    with pytest.raises(RateLimitError) as info:
        decoded(stream_codec(200, HTML), [body])
    assert info.value.code == 18
    assert "qps request limit" in str(info.value)


def test_html_error_body_with_escaped_message() -> None:
    body = b'<html><body>{"error_code":336100,"error_msg":"\\u4eba\\u592a\\u591a"}</body></html>'
    with pytest.raises(RateLimitError, match="人太多"):
        decoded(stream_codec(200, HTML), [body])


def test_error_message_echoing_the_token_url_is_masked() -> None:
    with pytest.raises(AuthenticationError) as info:
        whole(
            plain_codec(),
            b'{"error_code":100,"error_msg":"Invalid parameter in /chat?access_token=24.leak.1"}',
        )
    assert "24.leak" not in str(info.value)


def test_html_error_body_without_a_code() -> None:
    body = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    with pytest.raises(ProtocolError, match="text/html") as info:
        decoded(stream_codec(200, HTML), [body])
    assert "502 Bad Gateway" in str(info.value)
    assert "<h1>" not in str(info.value)


def test_html_body_snippet_is_redacted() -> None:
    body = b"<html>bad request to /chat?access_token=24.topsecret.123 </html>"
    with pytest.raises(ProtocolError) as info:
        decoded(plain_codec(200, HTML), [body])
    assert "topsecret" not in str(info.value)


def test_http_error_with_a_qianfan_body() -> None:
    err = http_failure(
        plain_codec(429, {"Retry-After": "2"}),
        b'{"error_code":18,"error_msg":"Open api qps request limit reached"}',
    )
    assert isinstance(err, RateLimitError)
    assert err.status == 429 and err.code == 18 and err.retry_after == 2.0
    err = http_failure(plain_codec(502), b"<html><h1>502 Bad Gateway</h1></html>")
    assert isinstance(err, ServerError) and err.status == 502
    assert "502 Bad Gateway" in err.message
    err = http_failure(plain_codec(404), b'{"error":"not here"}')
    assert isinstance(err, NotFoundError)


def test_in_body_error_takes_status_and_retry_after_from_the_response_head() -> None:
    codec = stream_codec(200, {"Retry-After": "3"})
    with pytest.raises(RateLimitError) as info:
        whole(codec, b'{"error_code":336501,"error_msg":"rpm limit reached"}')
    assert info.value.status == 200 and info.value.retry_after == 3.0


def test_unsafe_first_frame_without_ban_round_is_one_safety_notice() -> None:
    body = (
        f"data: {frame(sentence_id=0, is_end=False, result='a', need_clear_history=True)}\n\n"
        f"data: {frame(sentence_id=1, is_end=True, result='', need_clear_history=True)}\n\n"
    )
    events = decode_stream(stream_codec(), body.encode(), info=True)
    assert [type(e) for e in events].count(SafetyNotice) == 1
    assert fold(events).extra["need_clear_history"] is True
