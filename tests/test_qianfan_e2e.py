"""Qianfan end to end against the emulator: tokens, refresh, streams, errors, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

from aiollm import (
    AuthenticationError,
    Client,
    Completion,
    Finish,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    SafetyNotice,
    ServerError,
    StreamInterrupted,
    TextDelta,
    Timeout,
    TimeoutError,
    TransportError,
    Usage,
)
from aiollm.events import Event
from aiollm.providers.qianfan import SentenceOrderWarning
from aiollm.testing import Cadence, Emulator, Fault
from aiollm.testing.qianfan import QianfanFault, QianfanState, expire_tokens, revoke_tokens

MODEL = "qianfan/llama_2_7b"
HI = [{"role": "user", "content": "hi"}]

pytestmark = pytest.mark.anyio


def requests(emu: Emulator) -> tuple[int, int]:
    """(token requests, chat requests) the emulator saw."""
    return emu.stats.requests["qianfan.token"], emu.stats.requests["qianfan.chat"]


def qstate(emu: Emulator) -> QianfanState:
    return emu.state.qianfan


async def collect(
    client: Client, messages: list[dict[str, Any]] = HI, **params: Any
) -> tuple[list[Event], Completion]:
    async with client.stream(MODEL, messages, **params) as stream:
        events = [event async for event in stream]
    return events, stream.completion


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture
async def static_client(emu: Emulator) -> AsyncIterator[Client]:
    """A client with a ready access token (not refreshable) issued by the emulator."""
    async with emu.client() as c:
        await c.chat(MODEL, HI)
        token = next(iter(qstate(emu).tokens))
    emu.stats.reset()
    settings = {"access_token": token, "base_url": emu.url}
    async with Client(
        providers={"qianfan": settings}, env={}, retry=RetryPolicy(backoff_base=0.01)
    ) as c:
        yield c


# -- happy paths ----------------------------------------------------------------------------------
async def test_chat(emu: Emulator, client: Client) -> None:
    messages = [
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好!"},
        {"role": "user", "content": "介绍一下你自己"},
    ]
    reply = await client.chat(MODEL, messages, temperature=0.2)
    expected = "".join(emu.reply_tokens_for("介绍一下你自己"))
    assert reply.text == expected
    assert reply.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.output_tokens == emu.reply_tokens
    assert reply.request_id is not None and reply.request_id.startswith("as-")
    assert reply.provider == "qianfan" and reply.model == "llama_2_7b"
    assert reply.safety is None and reply.extra["need_clear_history"] is False
    assert emu.stats.bodies[-1] == {
        "messages": messages[1:],
        "system": "answer briefly",
        "temperature": 0.2,
    }
    assert requests(emu) == (1, 1)


async def test_stream(emu: Emulator, client: Client) -> None:
    events, completion = await collect(client)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == emu.reply_tokens
    assert completion.text == text_of(events) == "".join(emu.reply_tokens_for("hi"))
    assert events[-2:] == [Usage(2, emu.reply_tokens, 2 + emu.reply_tokens), Finish("stop")]
    assert [e for e in events if isinstance(e, Usage)] == [events[-2]]  # the is_end frame's only
    assert "sentence_anomalies" not in completion.extra
    assert emu.stats.bodies[-1]["stream"] is True
    assert emu.stats.completed == 1 and emu.stats.open_streams == 0


async def test_stream_follows_the_cadence() -> None:
    async with Emulator(cadence=Cadence(first_token=0.05, per_token=0.05), reply_tokens=5) as emu:
        async with emu.client() as client:
            await client.chat(MODEL, HI)  # fetch the token first
            start = anyio.current_time()
            arrivals: list[float] = []
            async with client.stream(MODEL, HI) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        arrivals.append(anyio.current_time() - start)
    assert len(arrivals) == 5
    assert arrivals[0] >= 0.045
    # arrived one by one, not at the end (half the scripted spread: room for a stalled client)
    assert arrivals[-1] - arrivals[0] >= 4 * 0.05 * 0.5


async def test_prompt_and_truncation(emu: Emulator, client: Client) -> None:
    reply = await client.chat(MODEL, prompt="hello", max_output_tokens=3)
    assert reply.finish_reason == "length" and reply.extra["is_truncated"] is True
    assert reply.text == "".join(emu.reply_tokens_for("hello")[:3])
    events, completion = await collect(client, max_tokens=4)  # max_tokens is an alias
    assert completion.finish_reason == "length"
    assert len([e for e in events if isinstance(e, TextDelta)]) == 4
    assert emu.stats.bodies[-1]["max_output_tokens"] == 4


# -- the access token -------------------------------------------------------------------------------
async def test_concurrent_first_calls_make_one_token_request(emu: Emulator, client: Client) -> None:
    qstate(emu).token_delay = 0.05
    results: list[Completion] = []

    async def one(i: int) -> None:
        if i % 2:
            results.append(await client.chat(MODEL, HI))
        else:
            results.append((await collect(client))[1])

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    assert len(results) == 20 and all(r.text for r in results)
    assert requests(emu) == (1, 20)


async def test_token_refreshed_ahead_of_expiry(emu: Emulator, client: Client) -> None:
    qstate(emu).token_lifetime = 0.3
    await client.chat(MODEL, HI)
    await anyio.sleep(0.32)  # the server now rejects the first token
    await client.chat(MODEL, HI)
    # A second token was fetched before the call, so the service never answered 111.
    assert requests(emu) == (2, 2)


@pytest.mark.parametrize("reject", [expire_tokens, revoke_tokens])
async def test_rejected_token_is_refreshed_once_and_the_call_retried(
    emu: Emulator, client: Client, reject: Any
) -> None:
    await client.chat(MODEL, HI)
    assert reject(emu) == 1
    reply = await client.chat(MODEL, HI)
    assert reply.text
    assert requests(emu) == (2, 3)
    assert reject(emu) == 2
    events, completion = await collect(client)
    assert completion.text == text_of(events) and completion.finish_reason == "stop"
    assert requests(emu) == (3, 5)


async def test_concurrent_calls_after_expiry_share_one_refresh(
    emu: Emulator, client: Client
) -> None:
    await client.chat(MODEL, HI)
    expire_tokens(emu)
    qstate(emu).token_delay = 0.05
    results: list[Completion] = []

    async def one() -> None:
        results.append(await client.chat(MODEL, HI))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(results) == 20
    assert requests(emu) == (2, 41)  # one refresh; each call: one 111 answer and one retry


@pytest.mark.parametrize("body", ["json", "line", "html"])
@pytest.mark.parametrize("code", [110, 111, 100, 13])
async def test_auth_error_first_in_a_stream_body_refreshes_and_retries(
    emu: Emulator, client: Client, body: Any, code: int
) -> None:
    await client.chat(MODEL, HI)
    emu.script(
        "qianfan", QianfanFault("error", code=code, message="Access token expired", body=body)
    )
    events, completion = await collect(client)
    assert completion.text == "".join(emu.reply_tokens_for("hi"))
    assert completion.text == text_of(events)
    assert requests(emu) == (2, 3)


async def test_auth_error_after_text_is_never_replayed(emu: Emulator, client: Client) -> None:
    emu.script(
        "qianfan",
        QianfanFault(
            "error", code=111, message="Access token expired", after_tokens=3, body="line"
        ),
    )
    seen: list[Event] = []
    with pytest.raises(StreamInterrupted) as info:
        async with client.stream(MODEL, HI) as stream:
            async for event in stream:
                seen.append(event)
    err = info.value
    assert isinstance(err.error, AuthenticationError) and err.error.code == 111
    assert err.partial.text == "".join(emu.reply_tokens_for("hi")[:3]) == text_of(seen)
    assert requests(emu) == (1, 1)


async def test_static_token_rejected_is_not_refreshed(emu: Emulator, static_client: Client) -> None:
    assert (await static_client.chat(MODEL, HI)).text
    expire_tokens(emu)
    with pytest.raises(AuthenticationError) as info:
        await static_client.chat(MODEL, HI)
    assert info.value.code == 111 and info.value.status == 200
    assert requests(emu) == (0, 2)


async def test_bad_secret_is_an_authentication_error(emu: Emulator) -> None:
    settings = {"ak": emu.qianfan_ak, "sk": "wrong-secret", "base_url": emu.url}
    async with Client(providers={"qianfan": settings}, env={}) as c:
        with pytest.raises(AuthenticationError, match="Client authentication failed") as info:
            await c.chat(MODEL, HI)
    assert "wrong-secret" not in repr(info.value)
    assert info.value.status == 401 and info.value.code == "invalid_client"
    # A token that could not be obtained is not "refreshed": one token request, no chat.
    assert requests(emu) == (1, 0)


async def test_token_endpoint_server_error_is_retried(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("http", status=503, route="token"))
    assert (await client.chat(MODEL, HI)).text
    assert requests(emu) == (2, 1)


async def test_token_endpoint_garbage_is_a_protocol_error(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("malformed", route="token"))
    with pytest.raises(ProtocolError, match="not a token response"):
        await client.chat(MODEL, HI)


async def test_token_endpoint_timeout_is_typed(emu: Emulator) -> None:
    emu.script("qianfan", Fault("stall", route="token"))
    settings = {**emu.settings()["qianfan"], "token_timeout": 0.1}
    async with Client(providers={"qianfan": settings}, env={}) as c:
        with pytest.raises(TimeoutError) as info:
            await c.chat(MODEL, HI)
    assert info.value.provider == "qianfan"
    assert requests(emu) == (1, 0)


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "error"),
    [
        (17, QuotaExceededError),
        (19, QuotaExceededError),
        (6, PermissionDeniedError),
        (336004, PermissionDeniedError),
        (3, NotFoundError),
        (336005, NotFoundError),
        (336003, InvalidRequestError),
        (336101, InvalidRequestError),
    ],
)
async def test_final_errors_are_not_retried(
    emu: Emulator, client: Client, code: int, error: type[Exception]
) -> None:
    emu.script("qianfan", QianfanFault("error", code=code, message=f"error {code}"))
    with pytest.raises(error) as info:
        await collect(client)
    assert type(info.value) is error
    assert info.value.code == code  # type: ignore[attr-defined]
    assert requests(emu) == (1, 1)


@pytest.mark.parametrize("body", ["json", "line", "html"])
async def test_server_error_is_retried(emu: Emulator, client: Client, body: Any) -> None:
    emu.script("qianfan", QianfanFault("error", code=336000, message="Internal error", body=body))
    events, completion = await collect(client)
    assert completion.text == text_of(events) != ""
    assert requests(emu) == (1, 2)


async def test_rate_limit_in_a_200_body(emu: Emulator, client: Client) -> None:
    emu.script(
        "qianfan", QianfanFault("error", code=18, message="Open api qps request limit reached")
    )
    with pytest.raises(RateLimitError) as info:
        await client.chat(MODEL, HI, max_retries=0)
    assert info.value.code == 18 and info.value.retryable and info.value.status == 200


async def test_rate_limit_http_429_is_retried(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("http", status=429, retry_after=0.01))
    assert (await client.chat(MODEL, HI)).text
    assert requests(emu) == (1, 2)


async def test_html_page_without_a_code(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", QianfanFault("error", code=None, body="html"))
    with pytest.raises(ProtocolError, match="502 Bad Gateway"):
        await collect(client)


async def test_error_frame_after_text_interrupts(emu: Emulator, client: Client) -> None:
    emu.script(
        "qianfan", QianfanFault("error", code=336000, message="Internal error", after_tokens=2)
    )
    with pytest.raises(StreamInterrupted) as info:
        await collect(client)
    assert isinstance(info.value.error, ServerError)
    assert info.value.partial.text == "".join(emu.reply_tokens_for("hi")[:2])
    assert requests(emu) == (1, 1)


# -- broken streams ----------------------------------------------------------------------------------
async def test_stream_cut_short_without_is_end(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("truncate", after_tokens=4))
    with pytest.raises(StreamInterrupted) as info:
        await collect(client)
    assert isinstance(info.value.error, ProtocolError)
    assert "is_end" in str(info.value.error)
    assert info.value.partial.text == "".join(emu.reply_tokens_for("hi")[:4])
    assert info.value.partial.finish_reason is None


async def test_empty_stream_is_a_protocol_error(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("truncate", after_tokens=0))
    with pytest.raises(ProtocolError):
        await collect(client)


async def test_malformed_frame(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("malformed", after_tokens=2))
    with pytest.raises(StreamInterrupted) as info:
        await collect(client)
    assert isinstance(info.value.error, ProtocolError)


async def test_reset_mid_stream(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("reset", after_tokens=3))
    with pytest.raises(StreamInterrupted) as info:
        await collect(client)
    assert isinstance(info.value.error, TransportError)
    assert info.value.partial.text == "".join(emu.reply_tokens_for("hi")[:3])


async def test_stall_mid_stream_hits_the_idle_timeout(emu: Emulator, client: Client) -> None:
    emu.script("qianfan", Fault("stall", after_tokens=2))
    with pytest.raises(StreamInterrupted) as info:
        await collect(client, timeout=Timeout(idle=0.1))
    assert isinstance(info.value.error, TimeoutError) and info.value.error.phase == "idle"


# -- sentence ids, safety -----------------------------------------------------------------------------
async def test_sentence_id_anomalies_warn_and_keep_text(emu: Emulator, client: Client) -> None:
    qstate(emu).sentence_ids = [0, 1, 5, 6, 6]
    with pytest.warns(SentenceOrderWarning):
        events, completion = await collect(client)
    assert completion.text == text_of(events) == "".join(emu.reply_tokens_for("hi"))
    anomalies = completion.extra["sentence_anomalies"]
    assert anomalies[0] == {"frame": 2, "expected": 2, "sentence_id": 5}
    assert anomalies[1] == {"frame": 4, "expected": 7, "sentence_id": 6}
    assert len(anomalies) == 1 + emu.reply_tokens - 4  # every later frame repeats 6


async def test_unsafe_question(emu: Emulator, client: Client) -> None:
    messages = [{"role": "user", "content": "UNSAFE question"}]
    events, completion = await collect(client, messages)
    notice = SafetyNotice(
        clear_history=True,
        ban_round=-1,
        message=completion.safety.message if completion.safety else None,
    )
    assert notice in events
    assert completion.safety == notice and completion.text == ""
    assert completion.extra["need_clear_history"] is True and completion.extra["ban_round"] == -1
    reply = await client.chat(MODEL, messages)
    assert reply.safety is not None and reply.safety.ban_round == -1


async def test_unsafe_history_round(emu: Emulator, client: Client) -> None:
    messages = [
        {"role": "user", "content": "fine"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "UNSAFE earlier"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "now"},
    ]
    reply = await client.chat(MODEL, messages)
    assert reply.text and reply.safety is not None
    assert reply.safety.clear_history and reply.safety.ban_round == 2
    assert reply.extra["ban_round"] == 2


# -- requests ---------------------------------------------------------------------------------------
async def test_invalid_messages_are_rejected_before_sending(emu: Emulator, client: Client) -> None:
    bad = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(InvalidRequestError, match="must be odd"):
        await client.chat(MODEL, bad)
    with pytest.raises(InvalidRequestError, match="at most 2000"):
        client.stream(MODEL, [{"role": "user", "content": "x" * 2001}])
    assert requests(emu) == (0, 0)


async def test_the_emulator_applies_the_messages_rules_itself(
    emu: Emulator, client: Client
) -> None:
    await client.chat(MODEL, HI)
    token = next(iter(qstate(emu).tokens))
    url = f"{emu.url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/llama_2_7b"
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, params={"access_token": token}, json=body) as resp:
            answer = json.loads(await resp.read())
        async with session.post(url, json=body) as resp:
            missing = json.loads(await resp.read())
    assert answer["error_code"] == 336003
    assert missing["error_code"] == 100


async def test_trim_history(emu: Emulator, client: Client) -> None:
    messages = [
        {"role": "user", "content": "a" * 1200},
        {"role": "assistant", "content": "b" * 900},
        {"role": "user", "content": "c" * 10},
        {"role": "assistant", "content": "d" * 10},
        {"role": "user", "content": "question"},
    ]
    reply = await client.chat(MODEL, messages, trim_history=True)
    assert emu.stats.bodies[-1] == {"messages": messages[2:]}
    assert reply.extra["trimmed_messages"] == 2
    await client.chat(MODEL, messages)
    assert emu.stats.bodies[-1] == {"messages": messages}
