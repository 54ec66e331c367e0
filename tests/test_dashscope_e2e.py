"""DashScope end to end against the emulator: formats, text modes, framing, gzip, errors."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

import aiollm
from aiollm import Client, RetryPolicy, Timeout
from aiollm.events import Finish, TextDelta, Usage
from aiollm.testing import Cadence, Emulator, Fault
from aiollm.testing.dashscope import DashScopeState

pytestmark = pytest.mark.anyio

MODEL = "dashscope/qwen-turbo"
MSGS = [{"role": "user", "content": "hello"}]
REPLY = "ha ha ha ha ha ha"  # repetitive text: naive diffing of cumulative frames corrupts it
PATH = "/api/v1/services/aigc/text-generation/generation"


@pytest.fixture
async def emu() -> Any:
    async with Emulator(reply=REPLY) as emulator:
        yield emulator


@pytest.fixture
def ds(emu: Emulator) -> DashScopeState:
    return emu.state.dashscope


def drop_info(events: list[Any]) -> list[Any]:
    return [e for e in events if not isinstance(e, aiollm.ResponseInfo)]


def deltas(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


async def stream_events(client: Client, **params: Any) -> tuple[list[Any], aiollm.Completion]:
    async with client.stream(MODEL, MSGS, **params) as s:
        events = [e async for e in s]
    return events, s.completion


def last_parameters(emu: Emulator) -> dict[str, Any]:
    body = emu.stats.bodies[-1]
    params: dict[str, Any] = body.get("parameters") or {}
    return params


# -- non-streamed ---------------------------------------------------------------------------------
@pytest.mark.parametrize("result_format", [None, "text", "message"])
async def test_chat_both_formats(emu: Emulator, client: Client, result_format: str | None) -> None:
    params: dict[str, Any] = {} if result_format is None else {"result_format": result_format}
    reply = await client.chat(MODEL, MSGS, **params)
    assert reply.text == REPLY
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(1, 6, 7)
    assert reply.request_id and reply.request_id.startswith("emu-")
    assert reply.provider == "dashscope" and reply.model == "qwen-turbo"


async def test_chatyuan_prompt_without_usage_or_finish(emu: Emulator, client: Client) -> None:
    reply = await client.chat("dashscope/chatyuan-large-v2", prompt="用户：你好\n小元：")
    assert reply.text == REPLY and reply.usage is None and reply.finish_reason is None
    assert emu.stats.bodies[-1]["input"] == {"prompt": "用户：你好\n小元："}


async def test_max_tokens_gives_length(client: Client) -> None:
    reply = await client.chat(MODEL, MSGS, max_tokens=2)
    assert reply.text == "ha ha" and reply.finish_reason == "length"
    events, completion = await stream_events(client, max_tokens=3)
    assert completion.text == "ha ha ha" and events[-1] == Finish("length")


async def test_request_id_from_header_when_the_body_has_none(
    ds: dict[str, Any], client: Client
) -> None:
    ds.omit_request_id = True
    reply = await client.chat(MODEL, MSGS)
    assert reply.request_id and reply.request_id.startswith("emu-")
    _, completion = await stream_events(client)
    assert completion.request_id and completion.request_id.startswith("emu-")


# -- streamed: text modes -------------------------------------------------------------------------
@pytest.mark.parametrize("result_format", ["text", "message"])
async def test_default_asks_for_incremental(
    emu: Emulator, client: Client, result_format: str
) -> None:
    events, completion = await stream_events(client, result_format=result_format)
    assert last_parameters(emu)["incremental_output"] is True
    assert emu.state.dashscope.last_headers["X-DashScope-SSE"] == "enable"
    assert deltas(events) == ["ha", " ha", " ha", " ha", " ha", " ha"]
    assert completion.text == REPLY and completion.finish_reason == "stop"
    assert completion.usage == Usage(1, 6, 7) and completion.extra["stream_mode"] == "incremental"
    assert [e for e in events if isinstance(e, Usage)][-1] == completion.usage
    assert events[-1] == Finish("stop")


@pytest.mark.parametrize("result_format", ["text", "message"])
async def test_cumulative_when_asked(emu: Emulator, client: Client, result_format: str) -> None:
    events, completion = await stream_events(
        client, incremental_output=False, result_format=result_format
    )
    assert last_parameters(emu)["incremental_output"] is False
    assert deltas(events) == ["ha", " ha", " ha", " ha", " ha", " ha"]
    assert completion.text == REPLY and completion.extra["stream_mode"] == "cumulative"


async def test_server_that_ignores_incremental_output(ds: dict[str, Any], client: Client) -> None:
    ds.ignore_incremental = True
    events, completion = await stream_events(client)
    assert "".join(deltas(events)) == REPLY == completion.text
    assert completion.extra["stream_mode"] == "cumulative"
    # Told the truth explicitly, the codec is strict about it:
    _, completion = await stream_events(client, incremental_output=False)
    assert completion.text == REPLY


async def test_explicit_incremental_against_a_server_that_ignores_it(
    ds: dict[str, Any], client: Client
) -> None:
    ds.ignore_incremental = True
    events, completion = await stream_events(
        client, incremental_output=True, result_format="message"
    )
    assert "".join(deltas(events)) == REPLY == completion.text
    assert completion.extra["stream_mode"] == "cumulative"


async def test_no_blank_lines_give_the_same_events(ds: dict[str, Any], client: Client) -> None:
    for params in ({}, {"incremental_output": False}, {"result_format": "message"}):
        normal, _ = await stream_events(client, **params)
        ds.no_blank_lines = True
        squeezed, completion = await stream_events(client, **params)
        ds.no_blank_lines = False
        assert drop_info(squeezed) == drop_info(normal) and completion.text == REPLY


async def test_gzip(emu: Emulator, ds: dict[str, Any], client: Client) -> None:
    ds.gzip = True
    events, completion = await stream_events(client)
    assert completion.text == REPLY and events[-1] == Finish("stop")
    assert (await client.chat(MODEL, MSGS)).text == REPLY
    # The bytes on the wire really are gzip.
    headers = {"Authorization": f"Bearer {emu.api_key}", "X-DashScope-SSE": "enable"}
    body = {"model": "qwen-turbo", "input": {"messages": MSGS}}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(emu.url + PATH, json=body, headers=headers) as resp:
            raw = await resp.read()
            assert resp.headers["Content-Encoding"] == "gzip" and raw[:2] == b"\x1f\x8b"
            assert resp.headers["x-request-id"].startswith("emu-")


async def test_cadence(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(first_token=0.05, per_token=0.01)
    start = time.monotonic()
    async with client.stream(MODEL, MSGS) as s:
        first = None
        async for event in s:
            if first is None and isinstance(event, TextDelta):
                first = time.monotonic() - start
    total = time.monotonic() - start
    assert first is not None and first >= 0.05 and total >= 0.09


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (429, "Throttling.RateQuota", aiollm.RateLimitError),
        (500, "InternalError.Algo.DataInspectionFailed", aiollm.ContentFilterError),
        (400, "DataInspectionFailed", aiollm.ContentFilterError),
        (503, "ModelUnavailable", aiollm.ServerError),
        (429, "PostpaidBillOverdue", aiollm.QuotaExceededError),
    ],
)
@pytest.mark.parametrize("incremental", [True, False])
async def test_in_stream_error_after_text(
    emu: Emulator,
    client: Client,
    status: int,
    code: str,
    cls: type[aiollm.APIError],
    incremental: bool,
) -> None:
    emu.script(
        "dashscope", Fault("error", code=code, status=status, message="stop here", after_tokens=2)
    )
    got: list[str] = []
    with pytest.raises(aiollm.StreamInterrupted) as info:
        async with client.stream(MODEL, MSGS, incremental_output=incremental) as s:
            async for event in s:
                if isinstance(event, TextDelta):
                    got.append(event.text)
    err = info.value
    assert isinstance(err.error, cls) and err.__cause__ is err.error
    assert err.error.status == status and err.error.code == code
    assert err.error.request_id and err.error.request_id.startswith("emu-")
    assert err.partial.text == "ha ha" == "".join(got)
    assert err.partial.usage == Usage(1, 2, 3)
    assert emu.stats.requests["dashscope.generation"] == 1


async def test_in_stream_error_before_text_is_raised_as_is(
    emu: Emulator, ds: dict[str, Any], client: Client
) -> None:
    ds.errors_in_stream = True
    emu.script(
        "dashscope",
        Fault("error", code="InvalidParameter", status=400, message="Role must be user"),
    )
    with pytest.raises(aiollm.InvalidRequestError) as info:
        await stream_events(client)
    assert info.value.status == 400 and "Role must be user" in info.value.message


async def test_in_stream_throttle_before_text_is_retried(
    emu: Emulator, ds: dict[str, Any], client: Client
) -> None:
    ds.errors_in_stream = True
    emu.script("dashscope", Fault("error", code="Throttling.AllocationQuota", status=429))
    _, completion = await stream_events(client)
    assert completion.text == REPLY
    assert emu.stats.requests["dashscope.generation"] == 2


async def test_http_429_with_retry_after(emu: Emulator) -> None:
    emu.script(
        "dashscope", Fault("error", code="Throttling.RateQuota", status=429, retry_after=0.05)
    )
    async with emu.client(max_retries=0) as c:
        with pytest.raises(aiollm.RateLimitError) as info:
            await c.chat(MODEL, MSGS)
    err = info.value
    assert err.status == 429 and err.code == "Throttling.RateQuota" and err.retry_after == 0.05
    assert err.retryable and err.request_id and err.request_id.startswith("emu-")


async def test_http_429_is_retried_after_the_delay(emu: Emulator, client: Client) -> None:
    emu.script("dashscope", Fault("http", status=429, retry_after=0.05))
    start = time.monotonic()
    _, completion = await stream_events(client)
    assert completion.text == REPLY and time.monotonic() - start >= 0.05
    assert emu.stats.requests["dashscope.generation"] == 2


@pytest.mark.parametrize(
    ("fault", "cls", "requests"),
    [
        (Fault("error", code="Throttling.AllocationQuota", status=429, retry_after=0.01), None, 2),
        (Fault("error", code="InternalError", status=500), None, 2),
        (Fault("http", status=502), None, 2),
        (Fault("error", code="PrepaidBillOverdue", status=429), aiollm.QuotaExceededError, 1),
        (Fault("error", code="Arrearage", status=400), aiollm.QuotaExceededError, 1),
        (Fault("error", code="DataInspectionFailed", status=400), aiollm.ContentFilterError, 1),
        (Fault("error", code="AccessDenied", status=403), aiollm.PermissionDeniedError, 1),
        (Fault("error", code="ModelNotFound", status=404), aiollm.NotFoundError, 1),
        (Fault("error", code="InvalidParameter", status=400), aiollm.InvalidRequestError, 1),
    ],
)
async def test_http_errors(
    emu: Emulator, client: Client, fault: Fault, cls: type[aiollm.APIError] | None, requests: int
) -> None:
    emu.script("dashscope", fault)
    if cls is None:
        assert (await client.chat(MODEL, MSGS)).text == REPLY
    else:
        with pytest.raises(cls) as info:
            await client.chat(MODEL, MSGS)
        assert info.value.status == fault.status and info.value.code == fault.code
    assert emu.stats.requests["dashscope.generation"] == requests


async def test_invalid_key(emu: Emulator) -> None:
    settings = emu.settings()
    settings["dashscope"]["api_key"] = "sk-wrong"
    async with Client(providers=settings, env={}) as c:
        with pytest.raises(aiollm.AuthenticationError) as info:
            await c.chat(MODEL, MSGS)
    assert info.value.status == 401 and info.value.code == "InvalidApiKey"
    assert "sk-wrong" not in str(info.value)
    assert emu.stats.requests["dashscope.generation"] == 1


async def test_workspace(emu: Emulator, ds: dict[str, Any]) -> None:
    ds.workspace = "ws_1"
    async with emu.client() as c:
        with pytest.raises(aiollm.PermissionDeniedError):
            await c.chat(MODEL, MSGS)
    settings = emu.settings()
    settings["dashscope"]["workspace"] = "ws_1"
    async with Client(providers=settings, env={}) as c:
        assert (await c.chat(MODEL, MSGS)).text == REPLY
    assert ds.last_headers["X-DashScope-WorkSpace"] == "ws_1"


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("reset", aiollm.TransportError),
        ("malformed", aiollm.ProtocolError),
        ("truncate", aiollm.ProtocolError),
    ],
)
@pytest.mark.parametrize("params", [{}, {"incremental_output": False}])
async def test_broken_streams_keep_the_partial_text(
    emu: Emulator, client: Client, kind: str, cls: type[Exception], params: dict[str, Any]
) -> None:
    emu.script("dashscope", Fault(kind, after_tokens=3))  # type: ignore[arg-type]
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await stream_events(client, **params)
    assert isinstance(info.value.error, cls)
    assert info.value.partial.text == "ha ha ha"
    assert info.value.partial.finish_reason is None


async def test_stall_hits_the_idle_timeout(emu: Emulator, client: Client) -> None:
    emu.script("dashscope", Fault("stall", after_tokens=2))
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await stream_events(client, timeout=Timeout(idle=0.1))
    assert isinstance(info.value.error, aiollm.TimeoutError) and info.value.error.phase == "idle"
    assert info.value.partial.text == "ha ha"


async def test_many_concurrent_streams(emu: Emulator) -> None:
    import anyio

    results: list[str] = []

    async def one(c: Client, i: int) -> None:
        params: dict[str, Any] = {"incremental_output": False} if i % 2 else {}
        _, completion = await stream_events(c, **params)
        results.append(completion.text)

    async with emu.client(retry=RetryPolicy(backoff_base=0.01)) as c:
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, c, i)
    assert results == [REPLY] * 40
