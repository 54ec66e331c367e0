"""Qianfan requests: settings, the messages rules, trimming, and the exact HTTP requests."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from aiollm import Client, RetryPolicy
from aiollm.auth import EndpointToken, StaticToken, token_source
from aiollm.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProtocolError,
    RateLimitError,
    ServerError,
    UnsupportedOperationError,
)
from aiollm.providers._base import Call
from aiollm.providers.qianfan import QianfanProvider, QianfanToken, trim_history
from aiollm.transport import Transport

BASE = "https://qf.example.test"
AK, SK = "test-ak-123456", "test-sk-abcdef"
TOKEN = "24.0123456789abcdef.2592000.1700000000.282335-11111111"

TOKEN_URL = re.compile(r"^https://qf\.example\.test/oauth/2\.0/token\b.*$")
CHAT_URL = re.compile(
    r"^https://qf\.example\.test/rpc/2\.0/ai_custom/v1/wenxinworkshop/chat/llama_2_7b\b.*$"
)


def mock(m: aioresponses, url: re.Pattern[str], **response: Any) -> None:
    m.post(url, **response)


def provider(**settings: Any) -> QianfanProvider:
    return QianfanProvider({"base_url": BASE, **settings}, {})


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def chat_call(messages: list[dict[str, Any]], stream: bool = False, **params: Any) -> Call:
    return Call(op="chat", model="llama_2_7b", stream=stream, messages=messages, params=params)


# -- settings --------------------------------------------------------------------------------
def auth_of(prov: QianfanProvider) -> Any:
    return token_source(prov.credential(), provider="qianfan")


def test_ak_sk_make_a_refreshable_token_source() -> None:
    auth = auth_of(provider(ak=AK, sk=SK))
    assert isinstance(auth, EndpointToken) and auth.refreshable
    assert isinstance(auth.endpoint, QianfanToken)
    assert auth.endpoint.url == BASE + "/oauth/2.0/token"
    assert AK not in repr(auth) and SK not in repr(auth)


def test_environment_and_default_base_url() -> None:
    prov = QianfanProvider({}, {"QIANFAN_AK": AK, "QIANFAN_SK": SK})
    assert prov.base_url == "https://aip.baidubce.com"
    assert isinstance(prov.credential(), QianfanToken)
    prov = QianfanProvider({}, {"QIANFAN_BASE_URL": BASE + "/"})
    assert prov.base_url == BASE


def test_ready_access_token_is_static() -> None:
    auth = auth_of(provider(access_token=TOKEN))
    assert isinstance(auth, StaticToken) and not auth.refreshable
    auth = auth_of(QianfanProvider({}, {"QIANFAN_ACCESS_TOKEN": TOKEN}))
    assert isinstance(auth, StaticToken)
    # AK/SK in the environment win over a token in the environment (they can refresh).
    env = {"QIANFAN_ACCESS_TOKEN": TOKEN, "QIANFAN_AK": AK, "QIANFAN_SK": SK}
    assert isinstance(QianfanProvider({}, env).credential(), QianfanToken)
    # A token passed as a setting wins over AK/SK in the environment.
    assert isinstance(auth_of(QianfanProvider({"access_token": TOKEN}, env)), StaticToken)


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigurationError, match="QIANFAN_AK and QIANFAN_SK"):
        _ = QianfanProvider({}, {}).credential()
    with pytest.raises(ConfigurationError, match="QIANFAN_SK"):
        _ = QianfanProvider({"ak": AK}, {}).credential()


def test_only_chat_is_supported() -> None:
    with pytest.raises(UnsupportedOperationError):
        provider().prepare(Call(op="embed", model="x", stream=False, input="a"))


@pytest.mark.parametrize("model", ["", "a/b", "x?y=1", "a b", "../etc"])
def test_endpoint_names_are_checked(model: str) -> None:
    call = Call(op="chat", model=model, stream=False, messages=[user("hi")])
    with pytest.raises(InvalidRequestError, match="endpoint name"):
        provider().prepare(call)


# -- the messages rules ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ([], "must not be empty"),
        ([user("a"), bot("b")], "must be odd"),
        ([bot("a")], "message 0 has role 'assistant'"),
        ([user("a"), user("b"), user("c")], "message 1 has role 'user'"),
        ([user("a"), bot("b"), bot("c")], "message 2 has role 'assistant'"),
        ([user("a"), {"role": "system", "content": "s"}, user("c")], "only allowed first"),
        ([user("a"), bot("b"), user("x" * 2001)], "at most 2000 characters"),
        ([{"role": "user", "content": 5}], "string 'content'"),
        ([{"role": "system", "content": "only a system message"}], "must not be empty"),
    ],
)
def test_messages_rules(messages: list[dict[str, Any]], rule: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(rule)) as info:
        provider().prepare(chat_call(messages))
    assert str(info.value).startswith("[qianfan] messages rule:")


def test_last_message_of_exactly_2000_characters_is_fine() -> None:
    provider().prepare(chat_call([user("x" * 2000)]))


def test_prompt_becomes_one_user_message() -> None:
    call = Call(op="chat", model="llama_2_7b", stream=False, prompt="hello")
    assert provider().body(call) == {"messages": [user("hello")]}


def test_body_fields_and_leading_system_message() -> None:
    call = chat_call(
        [{"role": "system", "content": "be brief"}, user("hi")],
        stream=True,
        temperature=0.3,
        top_p=0.8,
        penalty_score=1.1,
        stop=["\n"],
        max_tokens=64,
        user_id="u-1",
        something_new={"x": 1},
        top_k=None,
    )
    prov = provider()
    prov.prepare(call)
    assert prov.body(call) == {
        "messages": [user("hi")],
        "system": "be brief",
        "temperature": 0.3,
        "top_p": 0.8,
        "penalty_score": 1.1,
        "stop": ["\n"],
        "max_output_tokens": 64,
        "user_id": "u-1",
        "something_new": {"x": 1},
        "top_k": None,
        "stream": True,
    }


def test_system_twice_is_rejected() -> None:
    call = chat_call([{"role": "system", "content": "a"}, user("hi")], system="b")
    with pytest.raises(InvalidRequestError, match="not both"):
        provider().prepare(call)


def test_stream_param_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="stream"):
        provider().prepare(
            Call(
                op="chat",
                model="llama_2_7b",
                stream=False,
                messages=[user("hi")],
                params={"stream": True},
            )
        )


# -- trimming ------------------------------------------------------------------------------------
def test_trim_history_drops_oldest_pairs_until_it_fits() -> None:
    history = [user("a" * 800), bot("b" * 800), user("c" * 300), bot("d" * 300), user("e" * 500)]
    assert trim_history(history) == history[2:]  # 1100 <= 2000 once the first pair is gone
    assert trim_history(history[2:]) == history[2:]
    big = [user("a" * 10), bot("b" * 1995), user("c" * 1990)]
    assert trim_history(big) == [big[-1]]


def test_trim_history_is_opt_in_and_not_sent() -> None:
    history = [user("a" * 1500), bot("b" * 1500), user("c")]
    prov = provider()
    plain = chat_call(history)
    prov.prepare(plain)
    assert prov.body(plain)["messages"] == history
    trimmed = chat_call(history, trim_history=True)
    prov.prepare(trimmed)
    body = prov.body(trimmed)
    assert body == {"messages": [user("c")]}
    assert prov.prepare(trimmed).notes == {"trimmed_messages": 2}
    with pytest.raises(InvalidRequestError, match="trim_history"):
        prov.prepare(chat_call(history, trim_history="yes"))


# -- request shapes (aioresponses) -------------------------------------------------------------------
def query_of(url: str) -> dict[str, str]:
    """The query parameters a request carried in its URL."""
    return dict(URL(url).query)


def only_request(
    m: aioresponses, method: str, pattern: re.Pattern[str]
) -> tuple[str, dict[str, Any]]:
    calls = [
        (str(url), c)
        for (meth, url), cs in m.requests.items()
        if meth == method
        for c in cs
        if pattern.match(str(url))
    ]
    assert len(calls) == 1, calls
    url, call = calls[0]
    return url, call.kwargs


@pytest.mark.anyio
async def test_token_and_chat_requests() -> None:
    with aioresponses() as m:
        mock(m, TOKEN_URL, payload={"access_token": TOKEN, "expires_in": 2592000})
        mock(
            m,
            CHAT_URL,
            payload={
                "id": "as-1",
                "result": "你好",
                "is_truncated": False,
                "usage": {"total_tokens": 3},
            },
        )
        async with Client(
            providers={"qianfan": {"ak": AK, "sk": SK, "base_url": BASE}}, env={}
        ) as c:
            reply = await c.chat(
                "qianfan/llama_2_7b",
                [{"role": "system", "content": "sys"}, user("hi")],
                temperature=0.5,
            )
        assert reply.text == "你好" and reply.request_id == "as-1"
        url, kwargs = only_request(m, "POST", TOKEN_URL)
        assert url.startswith(BASE + "/oauth/2.0/token")
        assert query_of(url) == {
            "grant_type": "client_credentials",
            "client_id": AK,
            "client_secret": SK,
        }
        assert kwargs["data"] is None
        url, kwargs = only_request(m, "POST", CHAT_URL)
        assert url.startswith(BASE + "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/llama_2_7b")
        assert query_of(url) == {"access_token": TOKEN}
        assert kwargs["headers"]["Content-Type"] == "application/json"
        assert "Authorization" not in kwargs["headers"]
        assert json.loads(kwargs["data"]) == {
            "messages": [user("hi")],
            "system": "sys",
            "temperature": 0.5,
        }


@pytest.mark.anyio
async def test_stream_request_body_has_stream_true() -> None:
    frames = (
        'data: {"id":"as-2","sentence_id":0,"is_end":false,"result":"a"}\n\n'
        'data: {"id":"as-2","sentence_id":1,"is_end":true,"result":"b","usage":{"total_tokens":2}}\n\n'
    )
    with aioresponses() as m:
        mock(m, CHAT_URL, body=frames, headers={"Content-Type": "text/event-stream;charset=utf-8"})
        async with Client(
            providers={"qianfan": {"access_token": TOKEN, "base_url": BASE}}, env={}
        ) as c:
            async with c.stream("qianfan/llama_2_7b", [user("hi")]) as s:
                completion = await s.final()
        assert completion.text == "ab" and completion.finish_reason == "stop"
        url, kwargs = only_request(m, "POST", CHAT_URL)
        assert json.loads(kwargs["data"]) == {"messages": [user("hi")], "stream": True}
        assert query_of(url) == {"access_token": TOKEN}


# -- token responses -----------------------------------------------------------------------------------
async def fetch_with(m: aioresponses, **response: Any) -> tuple[str, float | None]:
    mock(m, TOKEN_URL, **response)
    transport = Transport()
    try:
        return await EndpointToken(QianfanToken(BASE, AK, SK)).fetch(transport)
    finally:
        await transport.aclose()


@pytest.mark.anyio
async def test_token_success_returns_lifetime() -> None:
    with aioresponses() as m:
        assert await fetch_with(m, payload={"access_token": TOKEN, "expires_in": 2592000}) == (
            TOKEN,
            2592000,
        )
    with aioresponses() as m:
        assert await fetch_with(m, payload={"access_token": TOKEN}) == (TOKEN, None)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 401])
async def test_token_failure_is_authentication_error_with_description(status: int) -> None:
    with aioresponses() as m, pytest.raises(AuthenticationError) as info:
        await fetch_with(
            m,
            status=status,
            payload={"error": "invalid_client", "error_description": "unknown client id"},
        )
    err = info.value
    assert "unknown client id" in str(err) and err.code == "invalid_client"
    assert AK not in repr(err) and SK not in repr(err)


@pytest.mark.anyio
async def test_token_failure_description_echoing_the_secret_is_masked() -> None:
    with aioresponses() as m, pytest.raises(AuthenticationError) as info:
        await fetch_with(
            m,
            status=401,
            payload={"error": "invalid_client", "error_description": f"bad secret {SK}"},
        )
    assert SK not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "error"),
    [
        ({"status": 500, "body": "<html>oops</html>"}, ServerError),
        ({"status": 503, "payload": {"error": "temporarily_unavailable"}}, ServerError),
        ({"status": 429, "body": "slow down"}, RateLimitError),
        ({"status": 200, "body": "<html>not json</html>"}, ProtocolError),
        ({"status": 200, "payload": {"expires_in": 5}}, ProtocolError),
        (
            {"status": 200, "payload": {"error_code": 110, "error_msg": "denied"}},
            AuthenticationError,
        ),
    ],
)
async def test_token_other_failures_are_typed(
    response: dict[str, Any], error: type[Exception]
) -> None:
    with aioresponses() as m, pytest.raises(error) as info:
        await fetch_with(m, **response)
    assert type(info.value) is error
    assert SK not in str(info.value) and AK not in str(info.value)


@pytest.mark.anyio
async def test_token_failure_reaches_the_caller_typed() -> None:
    with aioresponses() as m:
        for _ in range(3):
            mock(
                m,
                TOKEN_URL,
                status=401,
                payload={"error": "invalid_client", "error_description": "unknown client id"},
            )
        async with Client(
            providers={"qianfan": {"ak": AK, "sk": SK, "base_url": BASE}},
            env={},
            retry=RetryPolicy(backoff_base=0.01),
        ) as c:
            with pytest.raises(AuthenticationError, match="unknown client id"):
                await c.chat("qianfan/llama_2_7b", [user("hi")])


def test_requests_declare_their_secrets() -> None:
    prov = provider()
    request = prov.build_request(prov.prepare(chat_call([user("hi")])), TOKEN)
    assert request.secrets == (TOKEN,)
    assert TOKEN not in request.url
    token_request = QianfanToken(BASE, AK, SK).request()
    assert set(token_request.secrets) == {AK, SK}
    assert AK not in token_request.url and SK not in token_request.url
