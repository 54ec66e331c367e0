"""The Stream's lifecycle end to end against the emulator: iterate, break, cancel, time out, fail."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import aiollm
from aiollm import Client, RetryPolicy, Timeout
from aiollm.testing import Cadence, Emulator, Fault

pytestmark = pytest.mark.anyio

MSGS = [{"role": "user", "content": "hello"}]
MODEL = "openai/test-model"


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll ``predicate()`` until true (the server sees a disconnect a moment after the client)."""
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_async_with_and_iterate(client: Client) -> None:
    async with client.stream(MODEL, MSGS) as stream:
        events = [ev async for ev in stream]
    deltas = [ev.text for ev in events if isinstance(ev, aiollm.TextDelta)]
    assert len(deltas) == 24
    completion = stream.completion
    assert completion.text == "".join(deltas)
    assert completion.finish_reason == "stop"
    assert completion.usage == aiollm.Usage(1, 24, 25)
    assert completion.provider == "openai" and completion.model == "test-model"
    assert isinstance(events[-2], aiollm.Usage) and isinstance(events[-1], aiollm.Finish)


async def test_anext_break_and_a_second_loop_continue_one_stream(client: Client) -> None:
    async with client.stream(MODEL, MSGS) as stream:
        events = [await stream.__anext__(), await stream.__anext__()]
        async for ev in stream:
            events.append(ev)
            if len(events) == 10:
                break
        events += [ev async for ev in stream]
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
    text = "".join(ev.text for ev in events if isinstance(ev, aiollm.TextDelta))
    assert text == stream.completion.text and len(text) > 0
    assert sum(isinstance(ev, aiollm.TextDelta) for ev in events) == 24


async def test_plain_async_for_and_final(client: Client) -> None:
    texts = [ev.text async for ev in client.stream(MODEL, MSGS) if isinstance(ev, aiollm.TextDelta)]
    assert len(texts) == 24
    stream = client.stream(MODEL, MSGS)
    completion = await stream.final()
    assert completion.text == "".join(texts)
    assert stream.completion is completion


async def test_text_deltas(client: Client) -> None:
    async with client.stream(MODEL, MSGS) as stream:
        text = "".join([t async for t in stream.text_deltas()])
    assert text == stream.completion.text and text


async def test_completion_before_end_is_a_clear_error(client: Client) -> None:
    async with client.stream(MODEL, MSGS) as stream:
        with pytest.raises(aiollm.AiollmError, match="final"):
            stream.completion  # noqa: B018


async def test_chat_returns_completion(client: Client) -> None:
    reply = await client.chat(MODEL, MSGS)
    assert reply.finish_reason == "stop" and len(reply.text.split()) == 24


async def test_break_in_async_with_closes_response(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.02)
    async with client.stream(MODEL, MSGS) as stream:
        async for ev in stream:
            if isinstance(ev, aiollm.TextDelta):
                break
    await wait_for(lambda: emu.stats.disconnects == 1)
    assert emu.stats.open_streams == 0 and emu.stats.completed == 0


async def test_break_in_plain_async_for_closes_response(emu: Emulator, client: Client) -> None:
    # Slow enough that the body cannot have ended (and the stream finished) by the break,
    # however late a busy machine lets the client read.
    emu.cadence = Cadence(per_token=0.25)
    async for ev in client.stream(MODEL, MSGS):
        if isinstance(ev, aiollm.TextDelta):
            break
    gc.collect()
    await wait_for(lambda: emu.stats.disconnects == 1)
    assert emu.stats.open_streams == 0


async def test_cancelling_the_task_closes_response(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.1)  # the body cannot have ended by the cancel
    got: list[object] = []

    async def consume() -> None:
        async with client.stream(MODEL, MSGS) as stream:
            async for ev in stream:
                got.append(ev)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await wait_for(lambda: len(got) >= 2)
        tg.cancel_scope.cancel()
    await wait_for(lambda: emu.stats.disconnects == 1)
    assert emu.stats.open_streams == 0


async def test_caller_timeout_closes_response(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.05)
    with anyio.move_on_after(0.12) as scope:
        async for _ in client.stream(MODEL, MSGS):
            pass
    assert scope.cancelled_caught
    await wait_for(lambda: emu.stats.disconnects == 1)


async def test_idle_timeout_on_a_stall(emu: Emulator) -> None:
    emu.script("openai", Fault("stall", after_tokens=2))
    async with emu.client(timeout=Timeout(idle=0.1)) as client:
        with pytest.raises(aiollm.StreamInterrupted) as info:
            async for _ in client.stream(MODEL, MSGS):
                pass
    err = info.value.error
    assert isinstance(err, aiollm.TimeoutError) and err.phase == "idle"
    assert info.value.partial.text.count(" ") == 1  # two tokens arrived
    await wait_for(lambda: emu.stats.disconnects == 1)


async def test_first_byte_timeout_is_retried_then_raised(emu: Emulator) -> None:
    emu.cadence = Cadence(first_token=0.3)
    async with emu.client(
        timeout=Timeout(first_byte=0.05), retry=RetryPolicy(max_retries=1, backoff_base=0.01)
    ) as client:
        stream = client.stream(MODEL, MSGS)
        with pytest.raises(aiollm.TimeoutError) as info:
            await stream.final()
    assert info.value.phase == "first_byte"
    assert stream.attempts == 2
    assert emu.stats.requests["openai.chat"] == 2


async def test_total_timeout_per_call(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.02)
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await client.stream(MODEL, MSGS, timeout=0.1).final()
    assert isinstance(info.value.error, aiollm.TimeoutError)
    assert info.value.error.phase == "total"


async def test_error_before_any_event_is_raised_as_is(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("error", status=400, code="bad", message="nope"))
    with pytest.raises(aiollm.InvalidRequestError) as info:
        async for _ in client.stream(MODEL, MSGS):
            pass
    assert info.value.status == 400 and info.value.code == "bad"
    assert emu.stats.requests["openai.chat"] == 1  # 4xx is not retried


async def test_reset_mid_stream_is_stream_interrupted_with_partial(
    emu: Emulator, client: Client
) -> None:
    emu.script("openai", Fault("reset", after_tokens=5))
    seen: list[str] = []
    with pytest.raises(aiollm.StreamInterrupted) as info:
        async for ev in client.stream(MODEL, MSGS):
            if isinstance(ev, aiollm.TextDelta):
                seen.append(ev.text)
    assert info.value.partial.text == "".join(seen) and len(seen) == 5
    assert isinstance(info.value.error, aiollm.TransportError)
    assert info.value.__cause__ is info.value.error


async def test_malformed_frame_after_text(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("malformed", after_tokens=3))
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await client.stream(MODEL, MSGS).final()
    assert isinstance(info.value.error, aiollm.ProtocolError)
    assert len(info.value.partial.text.split()) == 3


async def test_malformed_first_frame_is_protocol_error(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("malformed", after_tokens=0))
    with pytest.raises(aiollm.ProtocolError):
        await client.stream(MODEL, MSGS).final()


async def test_truncated_body_is_interrupted(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("truncate", after_tokens=4))
    with pytest.raises(aiollm.StreamInterrupted) as info:
        await client.stream(MODEL, MSGS).final()
    assert isinstance(info.value.error, aiollm.ProtocolError)
    assert len(info.value.partial.text.split()) == 4


async def test_rate_limit_is_retried_after_retry_after(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("http", status=429, retry_after=0.1))
    start = anyio.current_time()
    stream = client.stream(MODEL, MSGS)
    completion = await stream.final()
    assert anyio.current_time() - start >= 0.1
    assert stream.attempts == 2 and len(completion.text.split()) == 24
    assert emu.pending_faults("openai") == 0  # the scripted 429 was served


async def test_server_errors_exhaust_retries(emu: Emulator) -> None:
    emu.script("openai", *[Fault("http", status=503)] * 3)
    async with emu.client(retry=RetryPolicy(max_retries=2, backoff_base=0.01)) as client:
        stream = client.stream(MODEL, MSGS)
        with pytest.raises(aiollm.ServerError):
            await stream.final()
    assert stream.attempts == 3


async def test_max_retries_zero_turns_retries_off(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("http", status=503))
    stream = client.stream(MODEL, MSGS, max_retries=0)
    with pytest.raises(aiollm.ServerError):
        await stream.final()
    assert stream.attempts == 1


async def test_no_retry_after_text_reached_the_caller(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("error", code="server_error", message="boom", after_tokens=2))
    with pytest.raises(aiollm.StreamInterrupted):
        await client.stream(MODEL, MSGS).final()
    assert emu.stats.requests["openai.chat"] == 1


async def test_connection_refused_is_transport_error() -> None:
    async with anyio.create_task_group():
        pass
    async with Client(
        providers={"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret-123456"}},
        env={},
        max_retries=0,
    ) as client:
        with pytest.raises(aiollm.TransportError) as info:
            await client.chat(MODEL, MSGS)
    assert "sk-secret-123456" not in str(info.value) and "sk-secret-123456" not in repr(info.value)


async def test_injected_session_is_not_closed(emu: Emulator) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with emu.client(session=session) as client:
            await client.chat(MODEL, MSGS)
        assert not session.closed
        async with session.get(f"{emu.url}/nowhere") as resp:
            assert resp.status == 404


async def test_connection_is_reused_after_a_complete_stream(emu: Emulator, client: Client) -> None:
    connector = client._transport.session.connector
    assert connector is not None
    for _ in range(3):
        await client.stream(MODEL, MSGS).final()
        # The connection goes back when the body's end arrives (maybe a moment later).
        await wait_for(lambda: not connector._acquired)
    # One idle, pooled connection: each finished stream gave it back, the next one took it.
    assert sum(len(v) for v in connector._conns.values()) == 1


async def test_missing_credential_names_the_variable() -> None:
    async with Client(env={}) as client:
        with pytest.raises(aiollm.ConfigurationError, match="OPENAI_API_KEY"):
            await client.chat(MODEL, MSGS)


async def test_stream_needs_input(client: Client) -> None:
    with pytest.raises(aiollm.ConfigurationError):
        client.stream(MODEL)


async def test_closed_client_refuses_calls(emu: Emulator) -> None:
    client = emu.client()
    await client.aclose()
    with pytest.raises(aiollm.TransportError, match="closed"):
        await client.chat(MODEL, MSGS)


async def test_a_codec_bug_surfaces_as_protocol_error(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiollm.providers.openai import OpenAIDecoder

    def broken(self: OpenAIDecoder, items: object, out: object) -> None:
        raise KeyError("choices")

    monkeypatch.setattr(OpenAIDecoder, "frames", broken)
    with pytest.raises(aiollm.ProtocolError, match="KeyError") as info:
        await client.stream(MODEL, MSGS).final()
    assert isinstance(info.value.__cause__, KeyError)


async def test_user_fixture_serves_every_provider(aiollm_emulator: Emulator) -> None:
    assert aiollm_emulator.url.startswith("http://127.0.0.1:")
    async with aiollm_emulator.client() as client:
        assert (await client.chat(MODEL, MSGS)).text


@pytest.mark.parametrize("model", ["openai/m", "qianfan/ernie-speed", "dashscope/qwen-turbo"])
async def test_finished_streams_reuse_one_connection(emu: Emulator, model: str) -> None:
    import aiohttp

    created: list[object] = []

    async def on_create(*args: object) -> None:
        created.append(args)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with emu.client(session=session) as client:
            for _ in range(20):
                completion = await client.stream(model, MSGS).final()
                assert completion.text
    assert len(created) <= 2  # one, plus the token request's for qianfan


@contextlib.asynccontextmanager
async def serve_chat(handler: Any) -> AsyncIterator[str]:
    """A one-route OpenAI-style server around ``handler``; yields its base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


FRAMES = (
    b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


async def test_a_body_that_ends_a_moment_after_its_last_frame_keeps_its_connection() -> None:
    import aiohttp
    from aiohttp import web

    ended = anyio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        nonlocal ended
        ended = anyio.Event()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(FRAMES)
        await anyio.sleep(0.3)  # the end of the body comes in a later packet
        await resp.write_eof()
        ended.set()
        return resp

    created: list[object] = []

    async def on_create(*args: object) -> None:
        created.append(args)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    async with serve_chat(chat) as url:
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            settings = {"openai": {"base_url": url, "api_key": "k"}}
            async with aiollm.Client(providers=settings, env={}, session=session) as client:
                connector = session.connector
                assert connector is not None
                for _ in range(5):
                    completion = await client.stream("openai/m", MSGS).final()
                    assert completion.text == "hi"
                    assert not ended.is_set()  # the stream did not wait for the body's end
                    await ended.wait()
                    with anyio.fail_after(5):  # the connection goes back to the pool
                        while connector._acquired:
                            await anyio.sleep(0.005)
    assert len(created) == 1


async def test_a_body_left_open_after_the_last_frame_ends_promptly_and_is_closed_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiohttp import web

    import aiollm._response

    monkeypatch.setattr(aiollm._response, "FINISH_GRACE", 0.05)
    left = anyio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(FRAMES)
        # The body stays open until the client leaves.
        while request.transport is not None and not request.transport.is_closing():
            await anyio.sleep(0.01)
        left.set()
        return resp

    async with serve_chat(chat) as url:
        async with aiollm.Client(
            providers={"openai": {"base_url": url, "api_key": "k"}}, env={}
        ) as client:
            with anyio.fail_after(10):
                completion = await client.stream("openai/m", MSGS).final()
            assert completion.text == "hi" and completion.finish_reason == "stop"
            # Nothing waited for the body's end: the connection is still held, the body open...
            connector = client._transport.session.connector
            assert connector is not None and len(connector._acquired) == 1
            assert not left.is_set()
            with anyio.fail_after(10):
                await left.wait()  # ...and the connection was closed after the grace


async def test_a_stream_left_early_still_gives_what_arrived(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.01)
    seen: list[str] = []
    async with client.stream(MODEL, MSGS) as stream:
        async for ev in stream:
            if isinstance(ev, aiollm.TextDelta):
                seen.append(ev.text)
                if len(seen) == 3:
                    break
    assert stream.state is aiollm.State.CLOSED
    partial = stream.partial
    assert partial.text == "".join(seen) and partial.finish_reason is None
    assert partial.request_id  # the response's facts arrived before its text
    with pytest.raises(aiollm.AiollmError, match=r"stream\.partial"):
        _ = stream.completion
    with pytest.raises(aiollm.AiollmError, match="closed before it finished"):
        await stream.__anext__()


async def test_partial_during_and_after_a_complete_stream(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.005)
    events: list[aiollm.Event] = []
    async with client.stream(MODEL, MSGS) as stream:
        while not any(isinstance(e, aiollm.TextDelta) for e in events):
            events.append(await stream.__anext__())
        assert stream.partial.text == events[-1].text  # type: ignore[union-attr]
        assert stream.state is aiollm.State.OPEN
        events += [ev async for ev in stream]
    completion = stream.completion
    assert stream.state is aiollm.State.FINISHED and stream.partial == completion
    # the completion is the fold of the events the caller saw
    assert aiollm.fold(events, provider="openai", model="test-model") == completion
