"""The DashScope response decoder, sans-IO: recorded frames and bodies in, events and typed errors out."""

from __future__ import annotations

import gc
import itertools
import json
import time
from typing import Any

import pytest
from decoding import decoded, http_failure
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import aiollm
from aiollm.events import Event, Finish, TextDelta, Usage, fold
from aiollm.providers._base import Call
from aiollm.providers.dashscope import DashScopeDecoder, ModeDetector, error_for

# -- real recordings (../shared/wire/dashscope.md and the service documents) ------------------
RECORDED_STREAM = (
    b"id:1\n"
    b"event:result\n"
    b":HTTP_STATUS/200\n"
    b'data:{"output":{"finish_reason":"null","text":"1+"},"usage":{"total_tokens":18,"input_tokens":16,"output_tokens":2},"request_id":"5b441aa7-..."}\n'
    b"\n"
    b"id:5\n"
    b"event:result\n"
    b":HTTP_STATUS/200\n"
    b'data:{"output":{"finish_reason":"stop","text":""},"usage":{"total_tokens":22,"input_tokens":16,"output_tokens":6},"request_id":"5b441aa7-..."}\n'
    b"\n"
)
RECORDED_ERROR_EVENT = (
    b"id:1\n"
    b"event:error\n"
    b":HTTP_STATUS/400\n"
    b'data:{"code":"InvalidParameter","message":"Role must be user or assistant and Content length must be greater than 0","request_id":"7671..."}\n'
    b"\n"
)
TEXT_BODY = b'{"output":{"finish_reason":"stop","text":"Hangzhou is the capital."},"usage":{"total_tokens":43,"output_tokens":35,"input_tokens":8},"request_id":"4ef2..."}'
MESSAGE_BODY = (
    '{"output":{"choices":[{"message":{"content":"你好，有什么我可以帮助你的吗？","role":"assistant"},'
    '"index":0,"finish_reason":"stop"}]},"usage":{"total_tokens":12,"input_tokens":3,"output_tokens":9},'
    '"request_id":"8673e696-ee22-9ed0-9c35-b8673d4b87bc"}'
).encode()
CHATYUAN_BODY = (
    '{"output":{"text":"尊敬的领导：\\n\\n我因感冒不适，需要请假一天，希望您能够"},'
    '"request_id":"2f632081-cb29-9f8b-a5c4-1af836cb794e"}'
).encode()
LLAMA_BODY = b'{"output":{"text":"Hey, are you conscious?"},"usage":{"output_tokens":104,"input_tokens":41},"request_id":"632a7015-a46b-9892-8185-8a29866ce5ea"}'
CHATYUAN_SDK_BODY = (
    '{"status_code": 200, "request_id": "39a41abe-1bed-430a-b9b5-277130c7eb82", "code": "", '
    '"message": "", "output": {"text": "好的"}}'
).encode()
INVALID_KEY_BODY = b'{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"}'


def codec(
    stream: bool = True, headers: dict[str, str] | None = None, **params: Any
) -> DashScopeDecoder:
    call = Call(op="chat", model="qwen-turbo", stream=stream, params=params)
    return DashScopeDecoder(call, 200, headers)


def run_sse(
    c: DashScopeDecoder, body: bytes, *, chunk: int | None = None, info: bool = False
) -> list[Event]:
    """Feed ``body`` to the decoder (in ``chunk``-byte pieces) and end it."""
    pieces = [body] if chunk is None else [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return decoded(c, pieces, info=info)


def each_frame(c: DashScopeDecoder, body: bytes) -> list[list[Event]]:
    """The events of each frame of ``body``, fed one frame at a time (not ended)."""
    frames = [f + b"\n\n" for f in body.split(b"\n\n") if f]
    return [decoded(c, [f], end=False) for f in frames]


def run_json(c: DashScopeDecoder, body: bytes, *, info: bool = False) -> list[Event]:
    return decoded(c, [body], info=info)


def http_error(status: int, headers: dict[str, str], body: bytes) -> aiollm.APIError:
    return http_failure(
        DashScopeDecoder(Call(op="chat", model="m", stream=True), status, headers), body
    )


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def frame(
    frame_id: int,
    text: str,
    finish: str = "null",
    *,
    output_tokens: int | None = None,
    message: bool = False,
    sep: bytes = b"\n\n",
) -> bytes:
    output: dict[str, Any]
    if message:
        output = {
            "choices": [
                {"message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ]
        }
    else:
        output = {"finish_reason": finish, "text": text}
    obj: dict[str, Any] = {"output": output, "request_id": "rid-1"}
    if output_tokens is not None:
        obj["usage"] = {
            "total_tokens": 5 + output_tokens,
            "input_tokens": 5,
            "output_tokens": output_tokens,
        }
    data = json.dumps(obj, ensure_ascii=False).encode()
    return f"id:{frame_id}\nevent:result\n:HTTP_STATUS/200\n".encode() + b"data:" + data + sep


def stream_of(
    texts: list[str],
    *,
    cumulative: bool,
    message: bool = False,
    sep: bytes = b"\n\n",
    final_text: str | None = None,
) -> bytes:
    """A DashScope stream of ``texts`` (one token per frame) and a final ``stop`` frame."""
    out = []
    so_far = ""
    for i, t in enumerate(texts):
        so_far += t
        out.append(
            frame(i + 1, so_far if cumulative else t, output_tokens=i + 1, message=message, sep=sep)
        )
    last = final_text if final_text is not None else (so_far if cumulative else "")
    out.append(
        frame(len(texts) + 1, last, "stop", output_tokens=len(texts), message=message, sep=sep)
    )
    return b"".join(out)


# -- the recorded frames -------------------------------------------------------------------------
def test_recorded_stream() -> None:
    c = codec()
    events = run_sse(c, RECORDED_STREAM, info=True)
    # usage is a running total: one Usage event, the final one, before Finish.
    assert [e for e in events if not isinstance(e, aiollm.ResponseInfo)] == [
        TextDelta("1+"),
        Usage(16, 6, 22),
        Finish("stop"),
    ]
    assert fold(events).request_id == "5b441aa7-..." and c.finished


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_recorded_stream_split_anywhere(chunk: int) -> None:
    assert run_sse(codec(), RECORDED_STREAM, chunk=chunk) == run_sse(codec(), RECORDED_STREAM)


def test_recorded_stream_without_blank_lines() -> None:
    squeezed = RECORDED_STREAM.replace(b"}\n\n", b"}\n")
    assert b"\n\n" not in squeezed
    assert run_sse(codec(), squeezed) == run_sse(codec(), RECORDED_STREAM)


def test_recorded_error_event_has_its_real_status() -> None:
    with pytest.raises(aiollm.InvalidRequestError) as info:
        run_sse(codec(), RECORDED_ERROR_EVENT)
    err = info.value
    assert err.status == 400 and err.code == "InvalidParameter"
    assert err.request_id == "7671..." and "Content length" in err.message
    assert not err.retryable


@pytest.mark.parametrize(
    ("status", "code", "cls", "retryable"),
    [
        (429, "Throttling.RateQuota", aiollm.RateLimitError, True),
        (429, "Throttling.AllocationQuota", aiollm.RateLimitError, True),
        (429, "PrepaidBillOverdue", aiollm.QuotaExceededError, False),
        (500, "InternalError.Algo.DataInspectionFailed", aiollm.ContentFilterError, False),
        (500, "InternalError.Algo", aiollm.ServerError, True),
        (400, "DataInspectionFailed", aiollm.ContentFilterError, False),
    ],
)
def test_error_event_after_text(
    status: int, code: str, cls: type[aiollm.APIError], retryable: bool
) -> None:
    body = frame(1, "Hello") + (
        f"id:2\nevent:error\n:HTTP_STATUS/{status}\n".encode()
        + b'data:{"code":"'
        + code.encode()
        + b'","message":"m","request_id":"r-9"}\n\n'
    )
    c = codec()
    first, second = body.split(b"\n\n", 1)
    assert decoded(c, [first + b"\n\n"], end=False) == [TextDelta("Hello")]
    with pytest.raises(cls) as info:
        decoded(c, [second], end=False)
    assert info.value.status == status and info.value.code == code
    assert info.value.retryable is retryable and info.value.request_id == "r-9"


def test_error_event_that_is_not_json() -> None:
    body = b"id:1\nevent:error\n:HTTP_STATUS/503\ndata:upstream unavailable\n\n"
    with pytest.raises(aiollm.ServerError, match="upstream unavailable") as info:
        run_sse(codec(), body)
    assert info.value.status == 503


# -- non-streamed bodies -----------------------------------------------------------------------
def test_text_format_body() -> None:
    c = codec(stream=False)
    events = run_json(c, TEXT_BODY, info=True)
    assert events[1:] == [TextDelta("Hangzhou is the capital."), Usage(8, 35, 43), Finish("stop")]
    assert fold(events).request_id == "4ef2..."


def test_message_format_body() -> None:
    c = codec(stream=False)
    events = run_json(c, MESSAGE_BODY, info=True)
    assert events[1:] == [
        TextDelta("你好，有什么我可以帮助你的吗？"),
        Usage(3, 9, 12),
        Finish("stop"),
    ]
    assert fold(events).request_id == "8673e696-ee22-9ed0-9c35-b8673d4b87bc"


def test_body_without_usage_or_finish_reason() -> None:
    c = codec(stream=False)
    events = run_json(c, CHATYUAN_BODY, info=True)
    assert events[1:] == [TextDelta("尊敬的领导：\n\n我因感冒不适，需要请假一天，希望您能够")]
    assert fold(events).request_id == "2f632081-cb29-9f8b-a5c4-1af836cb794e"


def test_usage_without_total_is_summed() -> None:
    c = codec(stream=False)
    assert run_json(c, LLAMA_BODY)[1] == Usage(41, 104, 145)


def test_empty_code_in_a_result_is_not_an_error() -> None:
    c = codec(stream=False)
    assert run_json(c, CHATYUAN_SDK_BODY) == [TextDelta("好的")]


def test_error_inside_a_200_json_body() -> None:
    with pytest.raises(aiollm.AuthenticationError):
        run_json(codec(stream=False), INVALID_KEY_BODY)


@pytest.mark.parametrize(
    ("body", "cls", "words"),
    [
        (
            b'{"error":{"code":"InvalidApiKey","message":"bad key"}}',
            aiollm.AuthenticationError,
            "bad key",
        ),
        (b'{"error":{"code":"999","message":"boom"}}', aiollm.APIError, "boom"),
        (b'{"error":"nope"}', aiollm.APIError, "nope"),
        (b'{"error":[1,2]}', aiollm.APIError, "[1,2]"),
    ],
)
def test_an_error_object_in_a_200_body_is_the_error(
    body: bytes, cls: type[aiollm.APIError], words: str
) -> None:
    # OpenAI-style error bodies (from proxies in front of DashScope), whole or as a frame
    with pytest.raises(cls, match=words.replace("[", r"\[")):
        run_json(codec(stream=False), body)
    with pytest.raises(cls, match=words.replace("[", r"\[")):
        run_sse(codec(), b"data:" + body + b"\n\n")


def test_a_200_body_with_neither_output_nor_error_is_a_protocol_error() -> None:
    with pytest.raises(aiollm.ProtocolError, match="no output"):
        run_json(codec(stream=False), b'{"request_id": "r", "usage": {}}')


def test_empty_json_body_is_a_protocol_error() -> None:
    with pytest.raises(aiollm.ProtocolError, match="no result"):
        codec(stream=False, headers={"Content-Type": "application/json"}).end()


def test_request_id_header_is_the_fallback() -> None:
    c = codec(stream=False, headers={"X-Request-Id": "hdr-1"})
    assert fold(run_json(c, b'{"output":{"text":"x"}}', info=True)).request_id == "hdr-1"
    c = codec(stream=False, headers={"x-request-id": "hdr-1"})
    assert fold(run_json(c, TEXT_BODY, info=True)).request_id == "4ef2..."


# -- HTTP errors -------------------------------------------------------------------------------
HTTP_CASES = [
    (401, "InvalidApiKey", aiollm.AuthenticationError, False),
    (403, "AccessDenied", aiollm.PermissionDeniedError, False),
    (403, "Workspace.AccessDenied", aiollm.PermissionDeniedError, False),
    (403, "Model.AccessDenied", aiollm.PermissionDeniedError, False),
    (403, "AccessDenied.Unpurchased", aiollm.PermissionDeniedError, False),
    (404, "ModelNotFound", aiollm.NotFoundError, False),
    (404, "WorkSpaceNotFound", aiollm.NotFoundError, False),
    (400, "InvalidParameter", aiollm.InvalidRequestError, False),
    (400, "BadRequest.EmptyInput", aiollm.InvalidRequestError, False),
    (400, "DataInspectionFailed", aiollm.ContentFilterError, False),
    (400, "Arrearage", aiollm.QuotaExceededError, False),
    (400, "UnsupportedOperation", aiollm.InvalidRequestError, False),
    (408, "RequestTimeOut", aiollm.ServerError, True),
    (413, "BadRequest.TooLarge", aiollm.InvalidRequestError, False),
    (429, "Throttling", aiollm.RateLimitError, True),
    (429, "Throttling.RateQuota", aiollm.RateLimitError, True),
    (429, "Throttling.AllocationQuota", aiollm.RateLimitError, True),
    (429, "LimitRequests", aiollm.RateLimitError, True),
    (429, "PrepaidBillOverdue", aiollm.QuotaExceededError, False),
    (429, "PostpaidBillOverdue", aiollm.QuotaExceededError, False),
    (429, "CommodityNotPurchased", aiollm.QuotaExceededError, False),
    (500, "InternalError", aiollm.ServerError, True),
    (500, "InternalError.Timeout", aiollm.ServerError, True),
    (500, "SystemError", aiollm.ServerError, True),
    (500, "InternalError.Algo.DataInspectionFailed", aiollm.ContentFilterError, False),
    (503, "ModelUnavailable", aiollm.ServerError, True),
    (418, "SomethingNew", aiollm.InvalidRequestError, False),
]


@pytest.mark.parametrize(("status", "code", "cls", "retryable"), HTTP_CASES)
def test_http_error_mapping(
    status: int, code: str, cls: type[aiollm.APIError], retryable: bool
) -> None:
    body = json.dumps({"code": code, "message": "msg", "request_id": "rid-7"}).encode()
    err = http_error(status, {"Retry-After": "3"}, body)
    assert type(err) is cls
    assert (err.status, err.code, err.request_id, err.retryable) == (
        status,
        code,
        "rid-7",
        retryable,
    )
    assert err.retry_after == 3.0 and err.provider == "dashscope"


def test_http_error_retry_after_is_optional_and_request_id_from_header() -> None:
    body = b'{"code":"Throttling","message":"Requests rate limit exceeded"}'
    err = http_error(429, {"x-request-id": "hdr-2"}, body)
    assert isinstance(err, aiollm.RateLimitError)
    assert err.retry_after is None and err.request_id == "hdr-2"


def test_http_error_with_a_non_json_body() -> None:
    err = http_error(502, {}, b"<html>Bad Gateway</html>")
    assert isinstance(err, aiollm.ServerError) and "Bad Gateway" in err.message
    err = http_error(429, {"Retry-After": "1"}, b"")
    assert isinstance(err, aiollm.RateLimitError) and err.retry_after == 1.0


def test_context_overflow_is_an_invalid_request() -> None:
    err = error_for("InvalidParameter", "Range of input length should be [1, 6000]", status=400)
    assert isinstance(err, aiollm.ContextOverflowError)
    assert isinstance(err, aiollm.InvalidRequestError)


def test_error_without_a_status_goes_by_code() -> None:
    assert type(error_for("InternalError", "x", status=None)) is aiollm.ServerError
    assert type(error_for("InvalidParameter", "x", status=None)) is aiollm.InvalidRequestError
    assert type(error_for("Mystery", "x", status=None)) is aiollm.APIError


def test_invalid_api_key_message_says_what_to_set() -> None:
    err = http_error(401, {}, INVALID_KEY_BODY)
    assert "DASHSCOPE_API_KEY" in str(err) and "Invalid API-key provided." in str(err)


# -- stream texts: incremental, cumulative, detection ------------------------------------------
HA = ["ha", " ha", " ha", " ha"]
HAHA = ["哈", "哈", "哈", "哈哈", "哈"]


@pytest.mark.parametrize("tokens", [HA, HAHA, ["a", "", "b"], ["x"]])
@pytest.mark.parametrize("message", [False, True])
@pytest.mark.parametrize(
    ("choice", "cumulative"),
    [(True, False), (True, True), (False, True), (None, False), (None, True)],
)
def test_stream_texts_are_exact(
    tokens: list[str], message: bool, choice: bool | None, cumulative: bool
) -> None:
    params = {} if choice is None else {"incremental_output": choice}
    c = codec(**params)
    events = run_sse(c, stream_of(tokens, cumulative=cumulative, message=message))
    assert text_of(events) == "".join(tokens)
    assert events[-1] == Finish("stop")


def test_cumulative_repetitive_text_is_not_mangled() -> None:
    # Naive str.replace diffing of "ha ha" against "ha" gives " ha ha"-style garbage.
    body = stream_of(HA, cumulative=True)
    deltas = [
        e.text for e in run_sse(codec(incremental_output=False), body) if isinstance(e, TextDelta)
    ]
    assert deltas == HA


def test_cumulative_frame_that_does_not_extend_is_a_protocol_error() -> None:
    c = codec(incremental_output=False)
    assert (
        text_of(decoded(c, [frame(1, "Hello") + frame(2, "Hello wor")], end=False)) == "Hello wor"
    )
    with pytest.raises(aiollm.ProtocolError, match="does not continue the 9 characters"):
        decoded(c, [frame(3, "Help", output_tokens=3)], end=False)


def test_cumulative_frame_that_shrinks_is_a_protocol_error() -> None:
    body = frame(1, "Hello world") + frame(2, "Hello")
    with pytest.raises(aiollm.ProtocolError, match="event id 2"):
        run_sse(codec(incremental_output=False), body)


def test_detected_cumulative_then_broken_is_a_protocol_error() -> None:
    body = frame(1, "a") + frame(2, "ab") + frame(3, "abc") + frame(4, "xyz")
    with pytest.raises(aiollm.ProtocolError):
        run_sse(codec(), body)


def test_cumulative_empty_final_frame_is_no_new_text() -> None:
    body = stream_of(["Hi", " there"], cumulative=True, final_text="")
    assert text_of(run_sse(codec(incremental_output=False), body)) == "Hi there"
    assert text_of(run_sse(codec(), body)) == "Hi there"


def test_detection_records_the_mode() -> None:
    events = run_sse(codec(), stream_of(HA, cumulative=True), info=True)
    assert fold(events).extra["stream_mode"] == "cumulative"
    events = run_sse(codec(), stream_of(HA, cumulative=False), info=True)
    assert fold(events).extra["stream_mode"] == "incremental"
    events = run_sse(codec(incremental_output=False), stream_of(HA, cumulative=True), info=True)
    assert fold(events).extra["stream_mode"] == "cumulative"


def test_detection_holds_back_one_frame_of_a_cumulative_server() -> None:
    c = codec()
    frames = each_frame(c, stream_of(["Hel", "lo", " you"], cumulative=True))
    assert text_of(frames[0]) == "Hel"
    assert text_of(frames[1]) == ""  # "Hello" extends "Hel": held back
    assert text_of(frames[2]) == "lo you"  # second extension: cumulative
    assert c.mode == "cumulative"


def test_detection_decides_incremental_at_once() -> None:
    c = codec()
    frames = each_frame(c, stream_of(["Hel", "lo"], cumulative=False))
    assert text_of(frames[0]) == "Hel"
    assert text_of(frames[1]) == "lo"
    assert c.mode == "incremental"


def test_detection_resolves_held_frames_at_the_end_of_the_body() -> None:
    # A cumulative stream cut off while undecided: the text so far is kept.
    body = frame(1, "Hi") + frame(2, "Hi th")
    c = codec()
    with pytest.raises(aiollm.ProtocolError, match="finish_reason"):
        run_sse(c, body)
    d = ModeDetector()
    assert d.feed("Hi") == (None, ["Hi"])
    assert d.feed("Hi th") == (None, [])
    assert d.finish() == ("cumulative", ["Hi th"])  # the latest, read against the first


def test_finish_reason_null_string_is_not_finished() -> None:
    c = codec()
    events = decoded(c, [frame(1, "x", "null")], end=False)
    assert not any(isinstance(e, Finish) for e in events) and not c.finished
    with pytest.raises(aiollm.ProtocolError, match="finish_reason"):
        c.end()


def test_finish_reason_length() -> None:
    events = run_sse(
        codec(),
        stream_of(["a", "b"], cumulative=False, final_text="c").replace(b'"stop"', b'"length"'),
    )
    assert events[-1] == Finish("length") and text_of(events) == "abc"


def test_usage_is_a_running_total_yielded_once_at_the_end() -> None:
    c = codec(incremental_output=True)
    partial = decoded(
        c, [frame(1, "a", output_tokens=1) + frame(2, "b", output_tokens=3)], end=False
    )
    assert partial and not [e for e in partial if isinstance(e, Usage)]
    assert c.abort() == [Usage(5, 3, 8)]  # the running total, for a partial completion
    body = (
        frame(1, "a", output_tokens=1)
        + frame(2, "b", output_tokens=1)
        + frame(3, "", "stop", output_tokens=2)
    )
    events = run_sse(codec(incremental_output=True), body)
    assert [e for e in events if isinstance(e, Usage)] == [Usage(5, 2, 7)]
    assert isinstance(events[-2], Usage) and isinstance(events[-1], Finish)


def test_last_frame_without_usage_keeps_the_running_total_of_the_frame_before() -> None:
    for message in (False, True):
        body = (
            frame(1, "a", output_tokens=1, message=message)
            + frame(2, "b", output_tokens=3, message=message)
            + frame(3, "", "stop", message=message)
        )
        events = run_sse(codec(incremental_output=True), body)
        assert [e for e in events if isinstance(e, Usage)] == [Usage(5, 3, 8)]
        assert events[-1] == Finish("stop") and text_of(events) == "ab"


def test_malformed_frame_is_a_protocol_error() -> None:
    body = frame(1, "a") + b'id:2\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"text":\n\n'
    with pytest.raises(aiollm.ProtocolError, match="malformed JSON frame in event id '2'"):
        run_sse(codec(), body)


def test_wrong_shape_is_a_protocol_error_not_a_crash() -> None:
    for data in (b"[1,2]", b'{"output":{"text":5}}', b'{"usage":{"output_tokens":"x"}}'):
        with pytest.raises(aiollm.ProtocolError):
            run_sse(codec(), b"id:1\nevent:result\ndata:" + data + b"\n\n")


def test_result_event_with_error_status_is_an_error() -> None:
    body = b'id:1\nevent:result\n:HTTP_STATUS/429\ndata:{"code":"Throttling","message":"slow down"}\n\n'
    with pytest.raises(aiollm.RateLimitError) as info:
        run_sse(codec(), body)
    assert info.value.status == 429


def test_streamed_call_with_a_json_body() -> None:
    c = codec()
    events = run_json(c, TEXT_BODY)
    assert text_of(events) == "Hangzhou is the capital." and events[-1] == Finish("stop")


# -- properties ---------------------------------------------------------------------------------
TOKENS = st.lists(
    st.sampled_from(["ha", " ha", "哈", "哈哈", "a", "ab", "", "\n", "😀"]), max_size=12
)


FRAMING = {
    "message": st.booleans(),
    "blank_lines": st.booleans(),
    "chunk": st.integers(1, 50),
}


def framed(tokens: list[str], cumulative: bool, message: bool, blank_lines: bool) -> bytes:
    return stream_of(
        tokens, cumulative=cumulative, message=message, sep=b"\n\n" if blank_lines else b"\n"
    )


@settings(max_examples=200, deadline=None)
@given(tokens=TOKENS, **FRAMING)
def test_cumulative_mode_is_exact(
    tokens: list[str], message: bool, blank_lines: bool, chunk: int
) -> None:
    body = framed(tokens, True, message, blank_lines)
    events = run_sse(codec(incremental_output=False), body, chunk=chunk)
    assert text_of(events) == "".join(tokens)
    assert events[-1] == Finish("stop")


@settings(max_examples=200, deadline=None)
@given(tokens=TOKENS, choice=st.sampled_from([None, True]), **FRAMING)
def test_detection_reads_a_server_that_ignores_the_request_exactly(
    tokens: list[str], choice: bool | None, message: bool, blank_lines: bool, chunk: int
) -> None:
    params = {} if choice is None else {"incremental_output": choice}
    events = run_sse(codec(**params), framed(tokens, True, message, blank_lines), chunk=chunk)
    assert text_of(events) == "".join(tokens)
    assert events[-1] == Finish("stop")


def misreadable(texts: list[str]) -> bool:
    """The documented case where an incremental stream reads as cumulative."""
    texts = [t for t in texts if t]
    extensions = 0
    for prev, cur in itertools.pairwise(texts):
        if len(cur) < len(prev) or not cur.startswith(prev):
            return False
        if len(cur) > len(prev):
            extensions += 1
            if extensions == 2:
                return True
    return len(texts) >= 2


@settings(max_examples=200, deadline=None)
@given(tokens=TOKENS, choice=st.sampled_from([None, True]), **FRAMING)
def test_detection_reads_an_obliging_server_exactly(
    tokens: list[str], choice: bool | None, message: bool, blank_lines: bool, chunk: int
) -> None:
    assume(not misreadable(tokens))
    params = {} if choice is None else {"incremental_output": choice}
    events = run_sse(codec(**params), framed(tokens, False, message, blank_lines), chunk=chunk)
    assert text_of(events) == "".join(tokens)
    assert events[-1] == Finish("stop")


def test_the_misreadable_case_is_what_the_rule_says() -> None:
    # An obliging server whose first frames each extend the one before reads as cumulative...
    body = stream_of(["ha", "haha", "hahaha"], cumulative=False)
    assert text_of(run_sse(codec(), body)) == "hahaha"
    # ...and any later frame that is not cumulative exposes it loudly.
    body = stream_of(["ha", "haha", "hahaha", "!"], cumulative=False)
    with pytest.raises(aiollm.ProtocolError, match="read as cumulative"):
        run_sse(codec(), body)


# -- cost ---------------------------------------------------------------------------------------
def test_incremental_frames_cost_the_same_late_as_early() -> None:
    # Work per frame must not grow with the text so far (no rebuilding, no re-scanning).
    n, block, window = 12000, 1000, 50
    body = stream_of([f" word{i % 7}" * 6 for i in range(n)], cumulative=False)
    sses = [f + b"\n\n" for f in body.split(b"\n\n") if f]

    def fastest_window(feed: Any, frames: list[bytes]) -> float:
        # A busy machine pauses some windows of ~0.2 ms, not all of them: the fastest is the cost.
        best = float("inf")
        for i in range(0, len(frames), window):
            t0 = time.perf_counter()
            for sse in frames[i : i + window]:
                feed(sse)
            best = min(best, time.perf_counter() - t0)
        return best

    early = late = float("inf")
    gc.disable()
    try:
        for _ in range(5):
            c = codec()
            early = min(early, fastest_window(c.feed, sses[:block]))
            for sse in sses[block : n - block]:
                c.feed(sse)
            late = min(late, fastest_window(c.feed, sses[n - block : n]))
    finally:
        gc.enable()
    assert late < 3 * early
    assert c.mode == "incremental" and c._text == ""


def test_cumulative_frames_are_checked_not_rebuilt() -> None:
    c = codec(incremental_output=False)
    each_frame(c, b"\n\n".join(stream_of(["a", "b", "c"], cumulative=True).split(b"\n\n")[:3]))
    assert c._text == "abc"  # the last frame's own text object is kept, nothing is joined
