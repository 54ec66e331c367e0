"""DashScope request shapes (aioresponses), settings and validation before sending."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

import aiollm
from aiollm import Client

pytestmark = pytest.mark.anyio

KEY = "sk-test-dashscope-0123456789"
ORIGIN = "https://dashscope.example.com"
ENDPOINT = f"{ORIGIN}/api/v1/services/aigc/text-generation/generation"
MSGS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "你好"},
]
RESULT = {"output": {"finish_reason": "stop", "text": "hi"}, "request_id": "r1"}
STREAM = (
    'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"finish_reason":"null","text":"hi"},"request_id":"r2"}\n\n'
    'id:2\nevent:result\n:HTTP_STATUS/200\ndata:{"output":{"finish_reason":"stop","text":""},"request_id":"r2"}\n\n'
)


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with Client(
        providers={"dashscope": {"api_key": KEY, "base_url": ORIGIN}}, env={}, max_retries=0
    ) as c:
        yield c


def sent(mocked: Any, url: str = ENDPOINT) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers and JSON body of the one request sent to ``url``."""
    calls = mocked.requests[("POST", URL(url))]
    assert len(calls) == 1
    kwargs = calls[0].kwargs
    return dict(kwargs["headers"]), json.loads(kwargs["data"])


async def test_chat_request_shape(mocked: Any, client: Client) -> None:
    mocked.post(ENDPOINT, payload=RESULT)
    reply = await client.chat("dashscope/qwen-turbo", MSGS)
    assert reply.text == "hi" and reply.request_id == "r1"
    headers, body = sent(mocked)
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Type"] == "application/json"
    assert "X-DashScope-SSE" not in headers and "X-DashScope-WorkSpace" not in headers
    assert body == {"model": "qwen-turbo", "input": {"messages": MSGS}}


async def test_stream_request_shape(mocked: Any, client: Client) -> None:
    mocked.post(ENDPOINT, body=STREAM, content_type="text/event-stream")
    async with client.stream("dashscope/qwen-turbo", MSGS, result_format="message") as s:
        completion = await s.final()
    assert completion.text == "hi" and completion.finish_reason == "stop"
    headers, body = sent(mocked)
    assert headers["X-DashScope-SSE"] == "enable"
    assert headers["Accept"] == "text/event-stream"
    assert body["parameters"] == {"result_format": "message", "incremental_output": True}


@pytest.mark.parametrize("choice", [True, False])
async def test_explicit_incremental_output_is_kept(
    mocked: Any, client: Client, choice: bool
) -> None:
    mocked.post(ENDPOINT, body=STREAM, content_type="text/event-stream")
    await client.stream("dashscope/qwen-turbo", MSGS, incremental_output=choice).final()
    assert sent(mocked)[1]["parameters"] == {"incremental_output": choice}


async def test_parameters_pass_through_unchanged(mocked: Any, client: Client) -> None:
    mocked.post(ENDPOINT, payload=RESULT)
    params: dict[str, Any] = {
        "temperature": 0.3,
        "top_p": 0.85,
        "top_k": 5,
        "max_tokens": 100,
        "seed": 1234,
        "stop": ["\n\n", "END"],
        "repetition_penalty": 1.1,
        "enable_search": True,
        "result_format": "text",
        "vendor_option": {"nested": [1, "二"]},
    }
    await client.chat("dashscope/qwen-max", MSGS, **params)
    assert sent(mocked)[1] == {
        "model": "qwen-max",
        "input": {"messages": MSGS},
        "parameters": params,
    }


async def test_prompt_input(mocked: Any, client: Client) -> None:
    mocked.post(ENDPOINT, payload=RESULT)
    mocked.post(ENDPOINT, payload=RESULT)
    await client.chat("dashscope/llama2-7b-chat-v2", prompt="hello, who are you?")
    await client.complete("dashscope/llama2-7b-chat-v2", "hello, who are you?", seed=7)
    calls = mocked.requests[("POST", URL(ENDPOINT))]
    bodies = [json.loads(c.kwargs["data"]) for c in calls]
    assert bodies[0] == {"model": "llama2-7b-chat-v2", "input": {"prompt": "hello, who are you?"}}
    assert bodies[1]["input"] == {"prompt": "hello, who are you?"} and bodies[1]["parameters"] == {
        "seed": 7
    }


def all_sent(mocked: Any, url: str = ENDPOINT) -> list[dict[str, str]]:
    return [dict(c.kwargs["headers"]) for c in mocked.requests.get(("POST", URL(url)), [])]


async def test_workspace_header_from_settings_and_env(mocked: Any) -> None:
    mocked.post(ENDPOINT, payload=RESULT, repeat=True)
    settings = {"api_key": KEY, "base_url": ORIGIN, "workspace": "ws_QTggmeA"}
    async with Client(providers={"dashscope": settings}, env={}) as c:
        await c.chat("dashscope/qwen-turbo", MSGS)
    env = {"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_BASE_URL": ORIGIN, "DASHSCOPE_WORKSPACE": "ws_env"}
    async with Client(env=env) as c:
        await c.chat("dashscope/qwen-turbo", MSGS)
    first, second = all_sent(mocked)
    assert first["X-DashScope-WorkSpace"] == "ws_QTggmeA"
    assert (
        second["X-DashScope-WorkSpace"] == "ws_env" and second["Authorization"] == f"Bearer {KEY}"
    )


async def test_default_origin_and_base_url_forms(mocked: Any) -> None:
    default = "https://dashscope.aliyuncs.com/api/v1/services/aigc/text-generation/generation"
    mocked.post(default, payload=RESULT)
    mocked.post(ENDPOINT, payload=RESULT, repeat=True)
    async with Client(env={"DASHSCOPE_API_KEY": KEY}) as c:
        await c.chat("dashscope/qwen-turbo", MSGS)
    assert len(all_sent(mocked, default)) == 1
    for base in (ORIGIN + "/", ORIGIN + "/api/v1", ORIGIN + "/api/v1/"):
        async with Client(providers={"dashscope": {"api_key": KEY, "base_url": base}}, env={}) as c:
            await c.chat("dashscope/qwen-turbo", MSGS)
    assert len(all_sent(mocked)) == 3


async def test_missing_key_names_the_variable(mocked: Any) -> None:
    async with Client(env={}) as c:
        with pytest.raises(aiollm.ConfigurationError, match="DASHSCOPE_API_KEY"):
            await c.chat("dashscope/qwen-turbo", MSGS)
    assert not mocked.requests


async def test_key_never_in_errors(mocked: Any, client: Client) -> None:
    mocked.post(
        ENDPOINT,
        status=401,
        payload={
            "code": "InvalidApiKey",
            "message": "Invalid API-key provided.",
            "request_id": "x",
        },
    )
    with pytest.raises(aiollm.AuthenticationError) as info:
        await client.chat("dashscope/qwen-turbo", MSGS)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in repr(client.auth("dashscope"))


async def test_embeddings_are_unsupported(client: Client) -> None:
    with pytest.raises(aiollm.UnsupportedOperationError):
        await client.embed("dashscope/text-embedding-v1", "hi")


# -- validation -----------------------------------------------------------------------------------
BAD = [
    ("baichuan2-turbo", "temperature", 1.1, r"\[0, 1\]"),
    ("baichuan2-turbo", "temperature", -0.1, r"\[0, 1\]"),
    ("baichuan2-turbo", "temperature", "hot", r"\[0, 1\]"),
    ("baichuan2-turbo", "top_p", 1.0, r"\[0, 1\)"),
    ("baichuan2-turbo", "top_p", True, r"\[0, 1\)"),
    ("baichuan2-turbo", "top_k", 21, r"\[0, 20\]"),
    ("baichuan2-turbo", "top_k", 2.5, r"integer in \[0, 20\]"),
    ("baichuan2-turbo", "max_tokens", 0, r"\[1, 8192\]"),
    ("baichuan2-turbo", "max_tokens", 8193, r"\[1, 8192\]"),
    ("baichuan2-turbo-192k", "max_tokens", 2049, r"\[1, 2048\]"),
    ("baichuan2-turbo-192k", "top_p", 1, r"\[0, 1\)"),
]


@pytest.mark.parametrize(("model", "param", "value", "range_"), BAD)
async def test_out_of_range_is_refused_before_sending(
    mocked: Any, client: Client, model: str, param: str, value: Any, range_: str
) -> None:
    with pytest.raises(aiollm.InvalidRequestError, match=rf"{model}: {param}=.* {range_}") as info:
        await client.chat(f"dashscope/{model}", MSGS, **{param: value})
    assert info.value.provider == "dashscope"
    with pytest.raises(aiollm.InvalidRequestError, match=param):
        client.stream(f"dashscope/{model}", MSGS, **{param: value})
    assert not mocked.requests


GOOD = [
    ("baichuan2-turbo", {"temperature": 0, "top_p": 0, "top_k": 0, "max_tokens": 1}),
    ("baichuan2-turbo", {"temperature": 1, "top_p": 0.999, "top_k": 20, "max_tokens": 8192}),
    ("baichuan2-turbo", {"temperature": 0.3, "top_k": 5.0, "seed": 3, "max_tokens": None}),
    ("baichuan2-turbo-192k", {"max_tokens": 2048}),
    ("qwen-turbo", {"temperature": 5, "top_p": 3, "top_k": 500, "max_tokens": 10**6}),
    ("baichuan2-turbo-32k", {"temperature": 7}),
]


@pytest.mark.parametrize(("model", "params"), GOOD)
async def test_in_range_and_unknown_models_are_sent(
    mocked: Any, client: Client, model: str, params: dict[str, Any]
) -> None:
    mocked.post(ENDPOINT, payload=RESULT)
    await client.chat(f"dashscope/{model}", MSGS, **params)
    assert sent(mocked)[1]["parameters"] == params


async def test_chatyuan_refuses_messages_and_takes_a_prompt(mocked: Any, client: Client) -> None:
    with pytest.raises(aiollm.InvalidRequestError, match="prompt only") as info:
        await client.chat("dashscope/chatyuan-large-v2", MSGS)
    assert "小元" in info.value.message
    assert not mocked.requests
    mocked.post(ENDPOINT, payload=RESULT)
    prompt = "用户：帮我写个请假条\n小元："
    await client.chat("dashscope/chatyuan-large-v2", prompt=prompt)
    assert sent(mocked)[1] == {"model": "chatyuan-large-v2", "input": {"prompt": prompt}}


def test_settings_and_the_environment_are_read_once_not_per_request() -> None:
    from aiollm.providers._base import Call
    from aiollm.providers.dashscope import GENERATION_PATH, DashScopeProvider

    looked_up: list[str] = []

    class Env(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            looked_up.append(key)
            return super().get(key, default)

    provider = DashScopeProvider({"api_key": "k"}, Env(DASHSCOPE_WORKSPACE="ws-1"))
    prepared = provider.prepare(
        Call("chat", "qwen-plus", True, messages=[{"role": "user", "content": "hi"}])
    )
    requests = [provider.build_request(prepared, "k") for _ in range(3)]
    assert all(r.headers["X-DashScope-WorkSpace"] == "ws-1" for r in requests)
    assert all(r.url == "https://dashscope.aliyuncs.com" + GENERATION_PATH for r in requests)
    assert sorted(set(looked_up)) == sorted(looked_up)  # each variable asked for once


def test_a_missing_key_is_read_again_once_it_is_set() -> None:
    from aiollm.providers.dashscope import DashScopeProvider

    env: dict[str, str] = {}
    provider = DashScopeProvider({}, env)
    with pytest.raises(aiollm.ConfigurationError, match="DASHSCOPE_API_KEY"):
        provider.credential()
    env["DASHSCOPE_API_KEY"] = "sk-later"
    assert provider.credential() == "sk-later"
