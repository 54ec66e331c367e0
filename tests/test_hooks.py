"""Hooks without OpenTelemetry: each point of a call, redacted, and a failing hook ignored."""

from __future__ import annotations

from typing import Any

import pytest

import aiollm
from aiollm.testing import Emulator
from aiollm.testing.qianfan import expire_tokens

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]


class Recorder(aiollm.Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_request(self, request: aiollm.RequestInfo) -> None:
        self.calls.append(("request", request))

    def on_response(self, response: aiollm.ResponseHead) -> None:
        self.calls.append(("response", response))

    def on_retry(self, retry: aiollm.RetryInfo) -> None:
        self.calls.append(("retry", retry))

    def on_finish(self, finish: aiollm.FinishInfo) -> None:
        self.calls.append(("finish", finish))


class Broken(aiollm.Hooks):
    def on_request(self, request: aiollm.RequestInfo) -> None:
        raise RuntimeError("a hook bug")


async def test_hooks_without_opentelemetry(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    hooks = Recorder()
    async with emu.client(hooks=[Broken(), hooks], otel=False) as c:
        await c.chat("qianfan/llama_2_7b", HI)
        expire_tokens(emu)
        hooks.calls.clear()
        async with c.stream("qianfan/llama_2_7b", HI) as stream:
            async for _ in stream:
                pass
    kinds = [k for k, _ in hooks.calls]
    assert kinds == ["request", "response", "retry", "request", "response", "finish"]
    request = hooks.calls[0][1]
    assert request.attempt == 1 and request.method == "POST"
    assert "access_token=***" in request.url
    assert not any(t in request.url for t in emu.state.qianfan.tokens)
    retry = hooks.calls[2][1]
    assert retry.reason == "token_refresh" and isinstance(retry.error, aiollm.AuthenticationError)
    finish = hooks.calls[-1][1]
    assert finish.outcome == "completed" and finish.attempts == 2 and finish.error is None
    assert finish.completion == stream.completion and finish.completion.text
    assert 0 < finish.time_to_first_chunk <= finish.duration
    assert "a hook bug" in caplog.text


async def test_hooks_see_a_retry_and_an_early_close() -> None:
    from aiollm.testing import Cadence, Fault

    hooks = Recorder()
    async with (
        Emulator(cadence=Cadence(per_token=0.02)) as emu,
        emu.client(hooks=[hooks], retry=aiollm.RetryPolicy(backoff_base=0.01)) as c,
    ):
        emu.script("openai", Fault("http", status=503, route="chat"))
        seen = 0
        async for _ in c.stream("openai/gpt-4o-mini", HI, temperature=0.5):
            seen += 1
            if seen == 2:
                break
        import gc

        import anyio

        for _ in range(5):
            await anyio.sleep(0)
            gc.collect()
    kinds = [k for k, _ in hooks.calls]
    assert kinds == ["request", "response", "retry", "request", "response", "finish"]
    retry = hooks.calls[2][1]
    assert retry.reason == "retry" and retry.attempt == 1 and retry.delay >= 0
    assert isinstance(retry.error, aiollm.ServerError)
    assert hooks.calls[1][1].status == 503 and hooks.calls[4][1].status == 200
    assert hooks.calls[0][1].headers["Authorization"] == "***"
    finish = hooks.calls[-1][1]
    assert finish.outcome == "closed" and finish.error is None and finish.attempts == 2
    assert finish.completion is not None and finish.completion.finish_reason is None


async def test_nothing_hooks_receive_holds_a_secret(emu: Emulator) -> None:
    from aiollm.testing import Fault
    from aiollm.testing.gateway import revoke_tokens

    hooks = Recorder()
    async with emu.client(hooks=[hooks], retry=aiollm.RetryPolicy(backoff_base=0.01)) as c:
        for model in ("dashscope/qwen-plus", "qianfan/llama_2_7b", "gateway/m", "openai/m"):
            await c.chat(model, HI)
        expire_tokens(emu)
        revoke_tokens(emu)
        emu.script("openai", Fault("http", status=503, route="chat"))
        for model in ("qianfan/llama_2_7b", "gateway/m", "openai/m"):
            await c.chat(model, HI)
    urls = [info.url for kind, info in hooks.calls if kind == "request"]
    assert any("accessToken=***" in url for url in urls)
    assert any("access_token=***" in url for url in urls)
    assert [kind for kind, _ in hooks.calls].count("retry") == 3
    seen = repr(hooks.calls) + "".join(str(i.error) for k, i in hooks.calls if k == "retry")
    secrets = [emu.api_key, emu.qianfan_sk, emu.gateway_secret, emu.openai_key]
    secrets += [*emu.state.qianfan.tokens, *emu.state.gateway.issued]
    for secret in secrets:
        assert secret not in seen
