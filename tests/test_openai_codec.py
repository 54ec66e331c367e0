"""The OpenAI wire codec, sans-IO: chunks, whole responses, embeddings and every error shape."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from decoding import decoded, http_failure

import aiollm
from aiollm import Finish, TextDelta, Usage
from aiollm.events import Embeddings, fold
from aiollm.providers._base import Call
from aiollm.providers.openai import OpenAIDecoder


def chat_call(stream: bool = True) -> Call:
    return Call(op="chat", model="m", stream=stream, messages=[{"role": "user", "content": "hi"}])


def embed_call(inputs: str | list[str]) -> Call:
    return Call(op="embed", model="e", stream=False, input=inputs)


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    delta = {} if content is None else {"content": content}
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return "data: " + json.dumps(obj) + "\n\n"


def feed_sse(codec: OpenAIDecoder, body: str, *, end: bool = True, info: bool = False) -> list[Any]:
    return decoded(codec, [body], end=end, info=info)


def feed_json(codec: OpenAIDecoder, document: Any, *, info: bool = False) -> list[Any]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return decoded(codec, [raw], info=info)


def feed_event(codec: OpenAIDecoder, data: str, *, event: str = "") -> list[Any]:
    head = f"event: {event}\n" if event else ""
    return decoded(codec, [f"{head}data: {data}\n\n"], end=False)


# -- streams -----------------------------------------------------------------------------------
def test_stream_chunks_usage_and_done() -> None:
    usage = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    body = (
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
        '"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
        + chunk("Hel")
        + chunk("lo")
        + chunk(None, "stop")
        + "data: "
        + json.dumps(usage)
        + "\n\n"
        + "data: [DONE]\n\n"
    )
    codec = OpenAIDecoder(chat_call())
    events = feed_sse(codec, body, info=True)
    assert [e for e in events if not isinstance(e, aiollm.ResponseInfo)] == [
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(3, 2, 5),
        Finish("stop"),
    ]
    assert codec.finished and fold(events).request_id == "chatcmpl-1"


def test_finish_reason_null_is_not_a_finish() -> None:
    codec = OpenAIDecoder(chat_call())
    events = feed_sse(codec, chunk("a") + chunk("b"), end=False)
    assert events == [TextDelta("a"), TextDelta("b")]
    assert not codec.finished
    with pytest.raises(aiollm.ProtocolError, match=r"finish_reason or \[DONE\]"):
        codec.end()


def test_body_ending_after_finish_without_done_is_a_normal_end() -> None:
    codec = OpenAIDecoder(chat_call())
    events = feed_sse(codec, chunk("a") + chunk(None, "length"))
    assert events == [TextDelta("a"), Finish("length")]
    assert codec.finished


def test_usage_on_the_finish_chunk_and_continuous_usage() -> None:
    codec = OpenAIDecoder(chat_call())
    body = chunk(
        "a", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    ) + chunk(None, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    events = feed_sse(codec, body)
    assert events == [TextDelta("a"), Usage(1, 1, 2), Usage(1, 2, 3), Finish("stop")]


def test_only_the_first_choice_is_followed() -> None:
    def frame(index: int, content: str | None, finish: str | None = None) -> str:
        choice = {
            "index": index,
            "delta": {} if content is None else {"content": content},
            "finish_reason": finish,
        }
        return "data: " + json.dumps({"choices": [choice]}) + "\n\n"

    codec = OpenAIDecoder(chat_call())
    body = (
        frame(0, "a")
        + frame(1, "X")
        + frame(1, None, "stop")
        + frame(0, "b")
        + frame(0, None, "length")
    )
    assert feed_sse(codec, body) == [TextDelta("a"), TextDelta("b"), Finish("length")]


def test_done_stops_even_with_trailing_garbage() -> None:
    codec = OpenAIDecoder(chat_call())
    events = feed_sse(
        codec,
        chunk(
            "a",
        )
        + chunk(None, "stop")
        + "data: [DONE]\n\ndata: {broken\n\n",
    )
    assert events == [TextDelta("a"), Finish("stop")]


def test_malformed_frame_is_a_protocol_error() -> None:
    codec = OpenAIDecoder(chat_call())
    with pytest.raises(aiollm.ProtocolError, match="malformed JSON frame"):
        feed_sse(codec, 'data: {"id": "x", "choices": [\n\n')


def test_wrong_types_are_a_protocol_error_not_a_crash() -> None:
    codec = OpenAIDecoder(chat_call())
    with pytest.raises(aiollm.ProtocolError):
        feed_event(codec, '{"choices": [{"delta": {"content": 5}}]}')
    codec = OpenAIDecoder(chat_call())
    with pytest.raises(aiollm.ProtocolError):
        feed_event(codec, "[1, 2]")


def test_comment_only_event_is_ignored() -> None:
    codec = OpenAIDecoder(chat_call())
    assert decoded(codec, [": keep-alive\n\n"], end=False) == []


@pytest.mark.parametrize(
    ("error", "cls", "code"),
    [
        (
            {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"},
            aiollm.RateLimitError,
            "rate_limit_exceeded",
        ),
        ({"message": "boom", "type": "server_error", "code": None}, aiollm.ServerError, None),
        (
            {
                "message": "too long",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            aiollm.ContextOverflowError,
            "context_length_exceeded",
        ),
        # vLLM / LiteLLM put an HTTP status in "code" (LiteLLM as a string).
        (
            {"message": "bad", "type": "BadRequestError", "code": 400},
            aiollm.InvalidRequestError,
            400,
        ),
        (
            {"message": "throttled", "type": "throttling_error", "code": "429"},
            aiollm.RateLimitError,
            429,
        ),
        ({"message": "what", "type": "mystery", "code": None}, aiollm.APIError, None),
    ],
)
def test_error_inside_a_stream(error: dict[str, Any], cls: type[Exception], code: object) -> None:
    codec = OpenAIDecoder(chat_call())
    with pytest.raises(cls) as info:
        feed_sse(codec, chunk("a")[:0] + "data: " + json.dumps({"error": error}) + "\n\n")
    exc = info.value
    assert type(exc) is cls
    assert isinstance(exc, aiollm.APIError) and exc.code == code and exc.status == 200
    assert error["message"] in str(exc)


def test_error_event_with_plain_text_data() -> None:
    codec = OpenAIDecoder(chat_call())
    with pytest.raises(aiollm.APIError, match="upstream went away"):
        feed_event(codec, "upstream went away", event="error")


# -- whole responses ---------------------------------------------------------------------------
CHAT = {
    "id": "chatcmpl-3j8",
    "object": "chat.completion",
    "created": 1700035542,
    "model": "llama",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": " Hello!"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 28, "total_tokens": 56, "completion_tokens": 28},
}


@pytest.mark.parametrize("stream", [False, True])
def test_whole_chat_response(stream: bool) -> None:
    codec = OpenAIDecoder(chat_call(stream))
    events = feed_json(codec, CHAT, info=True)
    assert events[1:] == [TextDelta(" Hello!"), Usage(28, 28, 56), Finish("stop")]
    assert fold(events).request_id == "chatcmpl-3j8"


def test_whole_text_completion() -> None:
    doc = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "m",
        "choices": [
            {"index": 0, "text": ", there was", "logprobs": None, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 5, "total_tokens": 45, "completion_tokens": 40},
    }
    codec = OpenAIDecoder(Call(op="complete", model="m", stream=False, prompt="Once"))
    assert feed_json(codec, doc) == [TextDelta(", there was"), Usage(5, 40, 45), Finish("length")]


def test_response_without_choices_is_a_protocol_error() -> None:
    with pytest.raises(aiollm.ProtocolError, match="no choices"):
        feed_json(OpenAIDecoder(chat_call(False)), {"id": "x", "object": "chat.completion"})


def test_error_body_in_a_200_response() -> None:
    codec = OpenAIDecoder(chat_call(False))
    with pytest.raises(aiollm.AuthenticationError) as info:
        feed_json(
            codec,
            {
                "error": {
                    "message": "Incorrect API key",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    assert info.value.code == "invalid_api_key"


def test_top_level_vllm_error_object() -> None:
    codec = OpenAIDecoder(chat_call(False))
    doc = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    with pytest.raises(aiollm.ContextOverflowError):
        feed_json(codec, doc)


# -- HTTP errors -------------------------------------------------------------------------------
def http_error(status: int, body: Any, headers: dict[str, str] | None = None) -> aiollm.APIError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http_failure(OpenAIDecoder(chat_call(), status, headers or {}), raw)


def test_http_429_with_retry_after() -> None:
    exc = http_error(
        429,
        {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
        {"Retry-After": "7", "x-request-id": "req_123"},
    )
    assert type(exc) is aiollm.RateLimitError and exc.retryable
    assert exc.retry_after == 7.0 and exc.status == 429 and exc.request_id == "req_123"


def test_retry_after_ms_wins() -> None:
    exc = http_error(
        429, {"error": {"message": "x"}}, {"retry-after-ms": "250", "Retry-After": "1"}
    )
    assert exc.retry_after == 0.25


def test_http_date_retry_after() -> None:
    # A date is measured against the response's Date (the transport stamps one if missing).
    date = {"Date": "Wed, 21 Oct 2015 07:30:00 GMT"}
    exc = http_error(503, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT", **date})
    assert type(exc) is aiollm.ServerError and exc.retry_after == 0.0
    exc = http_error(503, b"", {"Retry-After": "Wed, 21 Oct 2015 07:30:45 GMT", **date})
    assert exc.retry_after == 45.0


def test_insufficient_quota_on_429_is_not_retryable() -> None:
    exc = http_error(
        429,
        {
            "error": {
                "message": "You exceeded your current quota",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        },
    )
    assert type(exc) is aiollm.QuotaExceededError and not exc.retryable


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, aiollm.InvalidRequestError),
        (401, aiollm.AuthenticationError),
        (403, aiollm.PermissionDeniedError),
        (404, aiollm.NotFoundError),
        (500, aiollm.ServerError),
        (503, aiollm.ServerError),
    ],
)
def test_real_status_decides(status: int, cls: type[aiollm.APIError]) -> None:
    exc = http_error(status, {"error": {"message": "nope", "type": "whatever", "code": None}})
    assert type(exc) is cls and exc.status == status
    assert str(exc).startswith("[openai] nope [whatever]")


def test_litellm_context_window_error_by_words() -> None:
    exc = http_error(
        400,
        {
            "error": {
                "message": "litellm.ContextWindowExceededError: this is a mock "
                "context window exceeded error",
                "type": "invalid_request_error",
                "param": None,
                "code": "400",
            }
        },
    )
    assert type(exc) is aiollm.ContextOverflowError and exc.code == 400


def test_fastapi_detail_body() -> None:
    exc = http_error(404, {"detail": "Not Found"})
    assert type(exc) is aiollm.NotFoundError and "Not Found" in exc.message
    exc = http_error(422, {"detail": [{"loc": ["body", "model"], "msg": "field required"}]})
    assert type(exc) is aiollm.InvalidRequestError and "field required" in exc.message


def test_non_json_error_body() -> None:
    exc = http_error(502, b"<html><body>Bad Gateway</body></html>")
    assert type(exc) is aiollm.ServerError and "Bad Gateway" in exc.message


def test_error_messages_mask_echoed_keys() -> None:
    exc = http_error(
        401, {"error": {"message": "Incorrect API key provided: Bearer sk-abcdef123456"}}
    )
    assert "sk-abcdef123456" not in str(exc)


# -- embeddings ---------------------------------------------------------------------------------
def test_embeddings_restore_input_order() -> None:
    doc = {
        "object": "list",
        "model": "e",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
        "data": [
            {"object": "embedding", "embedding": [2.0], "index": 1},
            {"object": "embedding", "embedding": [1.0], "index": 0},
        ],
    }
    codec = OpenAIDecoder(embed_call(["a", "b"]))
    (embeddings,) = feed_json(codec, doc)
    assert isinstance(embeddings, Embeddings)
    assert embeddings.embeddings == [[1.0], [2.0]]
    assert embeddings.model == "e" and embeddings.usage == Usage(4, None, 4)


def test_embeddings_in_base64() -> None:
    raw = base64.b64encode(struct.pack("<3f", 0.5, -1.0, 2.0)).decode()
    codec = OpenAIDecoder(embed_call("x"))
    (embeddings,) = feed_json(codec, {"data": [{"embedding": raw, "index": 0}]})
    assert isinstance(embeddings, Embeddings) and embeddings.embeddings == [[0.5, -1.0, 2.0]]
    with pytest.raises(aiollm.ProtocolError, match="base64"):
        feed_json(OpenAIDecoder(embed_call("x")), {"data": [{"embedding": "!!!", "index": 0}]})


def test_embeddings_count_must_match_input() -> None:
    with pytest.raises(aiollm.ProtocolError, match="asked for 2 embedding"):
        feed_json(
            OpenAIDecoder(embed_call(["a", "b"])), {"data": [{"embedding": [1.0], "index": 0}]}
        )


def test_embeddings_error_body_and_garbage() -> None:
    with pytest.raises(aiollm.RateLimitError):
        feed_json(OpenAIDecoder(embed_call("a")), {"error": {"message": "slow", "code": 429}})
    with pytest.raises(aiollm.ProtocolError, match="'data'"):
        feed_json(OpenAIDecoder(embed_call("a")), {"object": "list"})
    with pytest.raises(aiollm.ProtocolError, match="no embeddings"):
        OpenAIDecoder(embed_call("a"), 200, {"Content-Type": "application/json"}).end()
