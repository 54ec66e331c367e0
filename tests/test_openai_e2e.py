"""The ``openai`` provider: request shapes (aioresponses) and end to end against the emulator."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from aioresponses import aioresponses

import aiollm
from aiollm import Client, Finish, TextDelta, Usage
from aiollm.testing import Emulator, Fault

pytestmark = pytest.mark.anyio

MSGS = [{"role": "user", "content": "hello there"}]
BASE = "http://api.test/v1"
CHAT_BODY = (
    b'{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"content":"ok"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


def sent_requests(mocked: aioresponses) -> list[tuple[str, str, Any]]:
    return [
        (method, str(url), call.kwargs)
        for (method, url), calls in mocked.requests.items()
        for call in calls
    ]


# -- request shapes --------------------------------------------------------------------------------
async def test_stream_request_asks_for_usage_and_sse() -> None:
    sse = (
        b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/chat/completions", body=sse, content_type="text/event-stream")
        async with Client(providers={"openai": {"base_url": BASE, "api_key": "sk-k"}}, env={}) as c:
            completion = await c.stream("openai/m", MSGS, max_tokens=5).final()
        ((method, url, kwargs),) = sent_requests(mocked)
    assert completion.text == "x"
    assert (method, url) == ("POST", f"{BASE}/chat/completions")
    assert kwargs["headers"]["Accept"] == "text/event-stream"
    assert kwargs["headers"]["Authorization"] == "Bearer sk-k"
    body = json.loads(kwargs["data"])
    assert body == {
        "model": "m",
        "messages": MSGS,
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_stream_options_can_be_turned_off_and_are_never_sent_unstreamed() -> None:
    sse = b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n'
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/chat/completions", body=sse, content_type="text/event-stream")
        mocked.post(f"{BASE}/chat/completions", body=CHAT_BODY, content_type="application/json")
        async with Client(providers={"openai": {"base_url": BASE}}, env={}) as c:
            await c.stream("openai/m", MSGS, stream_options=None).final()
            await c.chat("openai/m", MSGS, stream_options={"include_usage": True})
        first, second = sent_requests(mocked)
    assert json.loads(first[2]["data"])["stream"] is True
    assert "stream_options" not in json.loads(first[2]["data"])
    assert "stream_options" not in json.loads(second[2]["data"])
    assert "stream" not in json.loads(second[2]["data"])
    # a custom server without a key: no Authorization header at all
    assert "Authorization" not in first[2]["headers"]


async def test_complete_and_embed_request_shapes() -> None:
    completion = (
        b'{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":" upon",'
        b'"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
        b'"total_tokens":2}}'
    )
    embeddings = b'{"object":"list","model":"e","data":[{"embedding":[0.5],"index":0}]}'
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/completions", body=completion, content_type="application/json")
        mocked.post(f"{BASE}/embeddings", body=embeddings, content_type="application/json")
        async with Client(
            providers={"openai": {"base_url": BASE + "/", "api_key": "k"}}, env={}
        ) as c:
            done = await c.complete("openai/m", "Once", max_tokens=1, temperature=0.5)
            vectors = await c.embed("openai/e", "hello")
        (_, url1, kw1), (_, url2, kw2) = sent_requests(mocked)
    assert url1 == f"{BASE}/completions" and url2 == f"{BASE}/embeddings"
    assert json.loads(kw1["data"]) == {
        "model": "m",
        "prompt": "Once",
        "max_tokens": 1,
        "temperature": 0.5,
    }
    assert json.loads(kw2["data"]) == {"model": "e", "input": "hello"}
    assert done.text == " upon" and done.finish_reason == "length"
    assert vectors.embeddings == [[0.5]] and vectors.model == "e"


async def test_default_base_url_needs_a_key() -> None:
    async with Client(env={}) as client:
        with pytest.raises(aiollm.ConfigurationError, match="OPENAI_API_KEY"):
            await client.chat("openai/gpt-4o-mini", MSGS)


async def test_settings_from_the_environment() -> None:
    env = {"OPENAI_BASE_URL": "http://env.test/v1", "OPENAI_API_KEY": "sk-env"}
    with aioresponses() as mocked:
        mocked.post(
            "http://env.test/v1/chat/completions", body=CHAT_BODY, content_type="application/json"
        )
        async with Client(env=env) as client:
            await client.chat("openai/m", MSGS)
        ((_, _, kwargs),) = sent_requests(mocked)
    assert kwargs["headers"]["Authorization"] == "Bearer sk-env"


@pytest.mark.parametrize("bad", [[], [1, 2], None])
async def test_bad_embedding_input_is_rejected_before_sending(bad: Any) -> None:
    async with Client(providers={"openai": {"base_url": BASE}}, env={}) as client:
        with pytest.raises(aiollm.InvalidRequestError, match="input"):
            await client.embed("openai/e", bad)


# -- end to end --------------------------------------------------------------------------------------
async def test_stream_end_to_end(client: Client) -> None:
    async with client.stream("openai/m", MSGS) as stream:
        events = [ev async for ev in stream]
    texts = [ev for ev in events if isinstance(ev, TextDelta)]
    assert len(texts) == 24
    assert [type(ev) for ev in events[-2:]] == [Usage, Finish]
    completion = stream.completion
    assert completion.finish_reason == "stop" and completion.usage == Usage(2, 24, 26)
    assert completion.request_id == "chatcmpl-emu1"


async def test_stream_without_done_ends_normally(emu: Emulator, client: Client) -> None:
    emu.state.openai.send_done = False
    completion = await client.stream("openai/m", MSGS).final()
    assert completion.finish_reason == "stop" and len(completion.text.split()) == 24
    assert completion.usage == Usage(2, 24, 26)


async def test_truncated_stream_is_interrupted(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("truncate", after_tokens=3))
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await client.stream("openai/m", MSGS).final()
    assert isinstance(info.value.error, aiollm.ProtocolError)
    assert len(info.value.partial.text.split()) == 3


async def test_error_inside_the_stream_after_text(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("error", code="server_error", message="overloaded", after_tokens=2))
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await client.stream("openai/m", MSGS).final()
    assert isinstance(info.value.error, aiollm.APIError)
    assert "overloaded" in str(info.value.error)


async def test_retry_after_is_honoured(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("http", status=429, retry_after=0.3, message="slow down"))
    start = anyio.current_time()
    completion = await client.chat("openai/m", MSGS)
    elapsed = anyio.current_time() - start
    assert completion.text and emu.stats.requests["openai.chat"] == 2
    assert elapsed >= 0.3


async def test_rate_limit_error_carries_retry_after(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("http", status=429, retry_after=2, message="slow down"))
    with pytest.raises(aiollm.RateLimitError) as info:
        await client.chat("openai/m", MSGS, max_retries=0)
    assert info.value.retry_after == 2.0 and info.value.status == 429
    assert "slow down" in str(info.value)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "context_length_exceeded", aiollm.ContextOverflowError),
        (401, "invalid_api_key", aiollm.AuthenticationError),
        (404, "model_not_found", aiollm.NotFoundError),
        (429, "insufficient_quota", aiollm.QuotaExceededError),
        (400, "content_filter", aiollm.ContentFilterError),
        (500, None, aiollm.ServerError),
    ],
)
async def test_errors_with_the_real_status(
    emu: Emulator, client: Client, status: int, code: str | None, cls: type[aiollm.APIError]
) -> None:
    emu.script("openai", Fault("error", status=status, code=code, message="scripted"))
    with pytest.raises(cls) as info:
        await client.chat("openai/m", MSGS, max_retries=0)
    assert type(info.value) is cls
    assert info.value.status == status and info.value.code == code


async def test_wrong_key_is_an_authentication_error(emu: Emulator) -> None:
    async with Client(
        providers={"openai": {"base_url": f"{emu.url}/v1", "api_key": "sk-wrong"}}, env={}
    ) as client:
        with pytest.raises(aiollm.AuthenticationError) as info:
            await client.stream("openai/m", MSGS).final()
    assert "sk-wrong" not in str(info.value) and info.value.status == 401


async def test_complete_end_to_end(emu: Emulator, client: Client) -> None:
    completion = await client.complete("openai/m", "Once upon a time", max_tokens=5)
    assert len(completion.text.split()) == 5 and completion.finish_reason == "length"
    assert completion.usage == Usage(4, 5, 9) and completion.provider == "openai"
    assert emu.stats.bodies[-1]["prompt"] == "Once upon a time"


async def test_embed_end_to_end_keeps_input_order(client: Client) -> None:
    one = await client.embed("openai/e", "alpha")
    many = await client.embed("openai/e", ["alpha", "beta gamma", "delta"])
    assert len(many.embeddings) == 3 and many.embeddings[0] == one.embeddings[0]
    assert many.embeddings[1] != many.embeddings[0]
    assert many.usage == Usage(4, None, 4) and many.model == "e" and many.provider == "openai"


async def test_embeddings_error(emu: Emulator, client: Client) -> None:
    emu.script(
        "openai",
        Fault("error", status=400, code="invalid_input", message="bad input", route="embeddings"),
    )
    with pytest.raises(aiollm.InvalidRequestError, match="bad input"):
        await client.embed("openai/e", "x")
