"""The ``gateway`` provider end to end: token life cycle, JSON-only streaming, every error code."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anyio
import pytest
from aioresponses import aioresponses
from yarl import URL

import aiollm
from aiollm import Client, Finish, RetryPolicy, TextDelta, Usage
from aiollm.auth import EndpointToken
from aiollm.providers.gateway import GATEWAY_ERRORS, GatewayToken
from aiollm.testing import Emulator, Fault
from aiollm.testing.gateway import GatewayState, make_jwt, revoke_tokens

pytestmark = pytest.mark.anyio

MODEL = "gateway/llama-2-7b-chat"
MSGS = [{"role": "user", "content": "Hello! What is your name?"}]
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


def gw(emu: Emulator) -> GatewayState:
    return emu.state.gateway


# -- request shapes (no server) ----------------------------------------------------------------------
async def test_request_shapes() -> None:
    token = make_jwt({"abilityId": "app-x", "exp": 4102444800, "iat": 4102441200})
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }
    settings = {
        "url": "http://gw.test/",
        "appid": "the-appid",
        "secret": "the-secret",
        "ability": "app-x",
    }
    with aioresponses() as mocked:
        mocked.get(
            re.compile(r"http://gw\.test/api/v1/ability_sub/external/getToken.*"),
            payload={"code": 0, "data": {"accessToken": token}},
        )
        mocked.post(
            re.compile(r"http://gw\.test/app-x/v1/chat/completions\?accessToken=.*"), payload=answer
        )
        async with Client(providers={"gateway": settings}, env={}) as client:
            events = [
                ev
                async for ev in client.stream(MODEL, MSGS, temperature=0.5)
                if not isinstance(ev, aiollm.ResponseInfo)
            ]
        sent = [(m, str(u), c.kwargs) for (m, u), calls in mocked.requests.items() for c in calls]
    (m1, url1, _), (m2, url2, kw2) = sent
    assert m1 == "GET" and url1.startswith("http://gw.test/api/v1/ability_sub/external/getToken")
    assert dict(URL(url1).query) == {"appid": "the-appid", "secret": "the-secret"}
    assert m2 == "POST" and url2.startswith("http://gw.test/app-x/v1/chat/completions")
    assert dict(URL(url2).query) == {"accessToken": token}
    assert "Authorization" not in kw2["headers"]
    assert kw2["headers"]["Content-Type"] == "application/json"
    assert json.loads(kw2["data"]) == {
        "model": "llama-2-7b-chat",
        "messages": MSGS,
        "temperature": 0.5,
    }
    assert events == [TextDelta("hi"), Finish("stop")]


# -- calls ---------------------------------------------------------------------------------------------
async def test_chat(emu: Emulator, client: Client) -> None:
    reply = await client.chat(MODEL, MSGS)
    assert reply.provider == "gateway" and reply.model == "llama-2-7b-chat"
    assert len(reply.text.split()) == 24 and reply.finish_reason == "stop"
    assert reply.usage == Usage(5, 24, 29) and reply.request_id == "chatcmpl-gw1"
    assert emu.stats.requests["gateway.token"] == 1


async def test_stream_is_one_json_call_with_delta_usage_finish(
    emu: Emulator, client: Client
) -> None:
    async with client.stream(MODEL, MSGS) as stream:
        events = [ev async for ev in stream if not isinstance(ev, aiollm.ResponseInfo)]
    assert [type(ev) for ev in events] == [TextDelta, Usage, Finish]
    assert stream.completion.text == events[0].text  # type: ignore[union-attr]
    assert stream.attempts == 1 and emu.stats.requests["gateway.chat"] == 1
    assert "stream" not in emu.stats.bodies[-1]


async def test_complete(emu: Emulator, client: Client) -> None:
    done = await client.complete(MODEL, "Once upon a time", max_tokens=5, temperature=0.5)
    assert len(done.text.split()) == 5 and done.finish_reason == "length"
    assert done.usage == Usage(4, 5, 9)
    assert emu.stats.bodies[-1] == {
        "model": "llama-2-7b-chat",
        "prompt": "Once upon a time",
        "max_tokens": 5,
        "temperature": 0.5,
    }


async def test_embed_in_input_order(emu: Emulator, client: Client) -> None:
    one = await client.embed(MODEL, "Hello world!")
    many = await client.embed(MODEL, ["x", "Hello world!"])
    assert many.embeddings[1] == one.embeddings[0] and len(many.embeddings) == 2
    assert one.usage == Usage(2, None, 2) and one.model == "llama-2-7b-chat"
    assert emu.stats.bodies[-1] == {"model": "llama-2-7b-chat", "input": ["x", "Hello world!"]}


async def test_ability_from_the_token(emu: Emulator) -> None:
    settings = emu.settings()["gateway"]
    del settings["ability"]
    async with Client(providers={"gateway": settings}, env={}) as client:
        reply = await client.chat(MODEL, MSGS)
    assert reply.text


async def test_settings_from_the_environment(emu: Emulator) -> None:
    async with Client(env=emu.env()) as client:
        assert (await client.chat(MODEL, MSGS)).text


@pytest.mark.parametrize(
    "shape", ["data.accessToken", "data.token", "data", "token", "accessToken", "text"]
)
async def test_every_token_shape(emu: Emulator, client: Client, shape: str) -> None:
    gw(emu).token_shape = shape
    assert (await client.chat(MODEL, MSGS)).text


# -- the token's life cycle ---------------------------------------------------------------------------
async def test_token_single_flight(emu: Emulator, client: Client) -> None:
    results: list[str] = []

    async def one() -> None:
        results.append((await client.chat(MODEL, MSGS)).text)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(results) == 20 and all(results)
    assert emu.stats.requests["gateway.token"] == 1
    assert emu.stats.requests["gateway.chat"] == 20


async def test_token_refreshed_before_expiry(emu: Emulator, client: Client) -> None:
    gw(emu).token_lifetime = 1.0
    await client.chat(MODEL, MSGS)
    auth = client.auth("gateway")
    assert isinstance(auth, EndpointToken) and isinstance(auth.endpoint, GatewayToken)
    assert auth.lifetime is not None
    assert 0.0 < auth.lifetime <= 1.0  # read from the JWT (how much is left depends on load)
    await client.chat(MODEL, MSGS)
    assert emu.stats.requests["gateway.token"] == 1
    await anyio.sleep(1.0)
    await client.chat(MODEL, MSGS)
    # refreshed ahead of time: no request was ever rejected
    assert emu.stats.requests["gateway.token"] == 2
    assert emu.stats.requests["gateway.chat"] == 3


async def test_expired_token_is_rejected_and_replaced_once(emu: Emulator) -> None:
    gw(emu).token_lifetime = 0.2
    async with emu.client(retry=FAST) as client:
        # a token source whose clock stands still never notices the expiry by itself
        settings = emu.settings()["gateway"]
        client._auth["gateway"] = EndpointToken(
            GatewayToken(settings["url"], settings["appid"], settings["secret"]),
            provider="gateway",
            clock=lambda: 0.0,
        )
        await client.chat(MODEL, MSGS)
        await anyio.sleep(0.25)
        reply = await client.chat(MODEL, MSGS)
    assert reply.text
    assert emu.stats.requests["gateway.token"] == 2
    assert emu.stats.requests["gateway.chat"] == 3  # ok, rejected (expired), ok


async def test_revoked_token_is_refreshed_once_and_retried(emu: Emulator, client: Client) -> None:
    await client.chat(MODEL, MSGS)
    revoke_tokens(emu)
    async with client.stream(MODEL, MSGS) as stream:
        events = [ev async for ev in stream if not isinstance(ev, aiollm.ResponseInfo)]
    assert events and stream.attempts == 2
    assert emu.stats.requests["gateway.token"] == 2


async def test_auth_failure_is_retried_only_once(emu: Emulator, client: Client) -> None:
    emu.script(
        "gateway", *[Fault("error", code=401, message="accessToken expired", route="chat")] * 3
    )
    with pytest.raises(aiollm.AuthenticationError) as info:
        await client.chat(MODEL, MSGS)
    assert info.value.code == 401
    assert emu.stats.requests["gateway.chat"] == 2 and emu.stats.requests["gateway.token"] == 2


async def test_wrong_secret(emu: Emulator) -> None:
    settings = {**emu.settings()["gateway"], "secret": "wrong-secret-value"}
    async with Client(providers={"gateway": settings}, env={}) as client:
        with pytest.raises(aiollm.AuthenticationError) as info:
            await client.chat(MODEL, MSGS)
    assert "wrong-secret-value" not in str(info.value) and "appid" in str(info.value)
    assert emu.stats.requests.get("gateway.chat", 0) == 0


async def test_token_endpoint_outage_is_retried(emu: Emulator, client: Client) -> None:
    emu.script("gateway", Fault("http", status=503, route="token", retry_after=0))
    assert (await client.chat(MODEL, MSGS)).text
    assert emu.stats.requests["gateway.token"] == 2


async def test_token_endpoint_error_shape(emu: Emulator, client: Client) -> None:
    emu.script("gateway", Fault("error", code=40001, message="app not subscribed", route="token"))
    emu.script("gateway", Fault("error", code=40001, message="app not subscribed", route="token"))
    with pytest.raises(aiollm.AuthenticationError, match="app not subscribed"):
        await client.chat(MODEL, MSGS)


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["code_msg", "code_message", "openai"])
@pytest.mark.parametrize("status", [None, 400])
@pytest.mark.parametrize(("code", "cls"), [(c, cls) for c, (_, cls) in GATEWAY_ERRORS.items()])
async def test_every_error_code_in_every_shape(
    emu: Emulator,
    client: Client,
    shape: str,
    status: int | None,
    code: int,
    cls: type[aiollm.APIError],
) -> None:
    gw(emu).error_shape = shape
    emu.script("gateway", Fault("error", code=code, message="scripted", status=status))
    with pytest.raises(cls) as info:
        await client.chat(MODEL, MSGS, max_retries=0)
    assert type(info.value) is cls and info.value.code == code
    assert info.value.status == (status or 200) and info.value.provider == "gateway"


async def test_cuda_out_of_memory_is_retried(emu: Emulator, client: Client) -> None:
    emu.script("gateway", Fault("error", code=50002, message="CUDA_OUT_OF_MEMORY"))
    assert (await client.chat(MODEL, MSGS)).text
    assert emu.stats.requests["gateway.chat"] == 2


async def test_bare_http_status_with_retry_after(emu: Emulator, client: Client) -> None:
    emu.script("gateway", Fault("http", status=429, retry_after=0.2, route="chat"))
    start = anyio.current_time()
    assert (await client.chat(MODEL, MSGS)).text
    assert anyio.current_time() - start >= 0.2
    emu.script("gateway", Fault("http", status=404, message="no such ability", route="chat"))
    with pytest.raises(aiollm.NotFoundError, match="no such ability"):
        await client.chat(MODEL, MSGS)


@pytest.mark.parametrize("kind", ["malformed", "truncate"])
async def test_broken_json_answer(emu: Emulator, client: Client, kind: str) -> None:
    emu.script("gateway", Fault(kind, route="chat"))  # type: ignore[arg-type]
    with pytest.raises(aiollm.ProtocolError):
        await client.stream(MODEL, MSGS).final()


# -- streaming when asked to ---------------------------------------------------------------------------
def streaming_client(emu: Emulator, **kwargs: Any) -> Client:
    settings = emu.settings()
    settings["gateway"]["stream"] = True
    return Client(providers=settings, env={}, retry=FAST, **kwargs)


async def test_stream_refused_falls_back_once_and_is_remembered(emu: Emulator) -> None:
    async with streaming_client(emu) as client:
        first = await client.stream(MODEL, MSGS).final()
        second = client.stream(MODEL, MSGS)
        events = [ev async for ev in second if not isinstance(ev, aiollm.ResponseInfo)]
    assert first.text and first.finish_reason == "stop"
    bodies = emu.stats.bodies[1:]  # after the token request
    assert [b.get("stream") for b in bodies] == [True, None, None]
    assert bodies[0]["stream_options"] == {"include_usage": True}
    assert [type(ev) for ev in events] == [TextDelta, Usage, Finish] and second.attempts == 1


async def test_stream_refused_without_retries_fails_then_falls_back(emu: Emulator) -> None:
    async with streaming_client(emu, max_retries=0) as client:
        with pytest.raises(aiollm.InvalidRequestError) as info:
            await client.stream(MODEL, MSGS).final()
        assert info.value.code == -98434 and info.value.retryable
        assert (await client.stream(MODEL, MSGS).final()).text


async def test_streaming_gateway(emu: Emulator) -> None:
    gw(emu).allow_stream = True
    async with streaming_client(emu) as client:
        async with client.stream(MODEL, MSGS) as stream:
            events = [ev async for ev in stream if not isinstance(ev, aiollm.ResponseInfo)]
    assert sum(isinstance(ev, TextDelta) for ev in events) == 24
    assert stream.completion.usage == Usage(5, 24, 29)


async def test_non_streaming_call_never_falls_back(emu: Emulator, client: Client) -> None:
    emu.script("gateway", Fault("error", code=-98434, message="INVALID_RESPONSE_CONTENT_TYPE"))
    with pytest.raises(aiollm.InvalidRequestError) as info:
        await client.chat(MODEL, MSGS)
    assert not info.value.retryable and emu.stats.requests["gateway.chat"] == 1


# -- secrets stay out of messages, reprs and logs ------------------------------------------------------
async def test_token_and_secret_never_leak(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []
    async with emu.client(retry=FAST) as client:
        await client.chat(MODEL, MSGS)
        revoke_tokens(emu)
        await client.chat(MODEL, MSGS)
        for fault in (
            Fault("error", code=401, message="accessToken expired", route="chat"),
            Fault("error", code=401, message="accessToken expired", route="chat"),
            Fault("reset", route="chat"),
            Fault("reset", route="chat"),
            Fault("reset", route="chat"),
            Fault("http", status=400, message="bad", route="chat"),
        ):
            emu.script("gateway", fault)
        for _ in range(3):
            try:
                await client.chat(MODEL, MSGS)
            except aiollm.AiollmError as exc:
                failures.append(exc)
        stream = client.stream(MODEL, MSGS)
        await stream.final()
        shown = [str(exc) for exc in failures] + [repr(exc) for exc in failures]
        shown += [repr(client.auth("gateway")), repr(stream), repr(client)]
    assert {type(exc) for exc in failures} == {
        aiollm.AuthenticationError,
        aiollm.TransportError,
        aiollm.InvalidRequestError,
    }
    shown += [record.getMessage() for record in caplog.records]
    text = "\n".join(shown)
    tokens = gw(emu).issued
    assert len(tokens) >= 3
    for secret in [*tokens, emu.gateway_secret]:
        assert secret not in text
