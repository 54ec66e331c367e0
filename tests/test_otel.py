"""OpenTelemetry spans and metrics against the emulator: one ended span per call, whatever way it
ends, metrics whose counts and token sums match, and no secret in anything exported."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import aiollm
from aiollm import Client, RetryPolicy, StreamInterrupted, Timeout, Usage
from aiollm.otel import DURATION_BUCKETS, NAMES, TOKEN_BUCKETS, configured_providers
from aiollm.testing import Cadence, Emulator, Fault
from aiollm.testing.qianfan import expire_tokens

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def ended(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def one_span(self) -> ReadableSpan:
        spans = self.ended()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` (histograms: count, sum, attributes)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def count(self, name: str, **attrs: Any) -> int:
        return sum(
            p.count
            for p in self.points(name)
            if all(p.attributes.get(k.replace("_", ".", 1)) == v for k, v in attrs.items())
        )

    def exported(self) -> str:
        """Everything exported, as text."""
        spans = "\n".join(s.to_json() for s in self.ended())
        data = self.reader.get_metrics_data()
        return spans + (data.to_json() if data is not None else "")


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
async def oclient(emu: Emulator, otel: Otel) -> AsyncIterator[Client]:
    async with emu.client(
        retry=RetryPolicy(backoff_base=0.01, backoff_max=0.05),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    ) as c:
        yield c


async def settle() -> None:
    """Let a dropped stream be finalized (asyncio closes an abandoned async generator later)."""
    for _ in range(5):
        await anyio.sleep(0)
        gc.collect()


DURATION = NAMES["metric.duration"]
TOKENS = NAMES["metric.token_usage"]
TTFC = NAMES["metric.time_to_first_chunk"]
TPOC = NAMES["metric.time_per_output_chunk"]


async def test_completed_stream(emu: Emulator, oclient: Client, otel: Otel) -> None:
    async with oclient.stream(
        "dashscope/qwen-plus", HI, temperature=0.3, top_p=0.9, max_tokens=50
    ) as stream:
        events = [e async for e in stream]
    completion = stream.completion
    span = otel.one_span()
    attrs = span.attributes or {}
    assert span.name == "chat qwen-plus" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "alibaba.dashscope"
    assert attrs["gen_ai.request.model"] == "qwen-plus"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.request.temperature"] == 0.3
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.response.id"] == completion.request_id
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == emu.port
    assert attrs["aiollm.outcome"] == "completed" and attrs["aiollm.attempts"] == 1
    ttfc = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttfc, float) and 0 < ttfc <= (span.end_time - span.start_time) / 1e9  # type: ignore[operator]
    usage = completion.usage
    assert usage is not None and usage.input_tokens and usage.output_tokens
    assert attrs["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    assert "error.type" not in attrs
    # metrics
    assert otel.count(DURATION) == 1 and otel.count(TTFC) == 1
    (duration,) = otel.points(DURATION)
    assert duration.explicit_bounds == tuple(DURATION_BUCKETS)
    assert duration.attributes["gen_ai.provider.name"] == "alibaba.dashscope"
    assert duration.attributes["server.port"] == emu.port
    assert "error.type" not in duration.attributes
    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points(TOKENS)}
    assert tokens["input"].sum == usage.input_tokens and tokens["input"].count == 1
    assert tokens["output"].sum == usage.output_tokens
    assert tokens["output"].explicit_bounds == tuple(TOKEN_BUCKETS)
    assert sum(1 for e in events if isinstance(e, aiollm.TextDelta)) >= 2
    # one per delivered batch after the first
    assert otel.count(TPOC) == len(stream._batches) - 1


async def test_non_streamed_chat_has_no_chunk_metrics(oclient: Client, otel: Otel) -> None:
    await oclient.chat("openai/gpt-4o-mini", HI)
    span = otel.one_span()
    assert (span.attributes or {})["gen_ai.request.stream"] is False
    assert (span.attributes or {})["gen_ai.provider.name"] == "openai"
    assert (span.attributes or {})["gen_ai.response.model"] == "gpt-4o-mini"
    (duration,) = otel.points(DURATION)
    assert duration.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert otel.count(DURATION) == 1
    assert otel.count(TTFC) == 0 and otel.count(TPOC) == 0


@pytest.mark.parametrize("style", ["async with", "plain for"])
async def test_break_after_two_events(otel: Otel, style: str) -> None:
    seen = 0
    async with (
        Emulator(cadence=Cadence(per_token=0.02)) as emu,
        emu.client(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider) as c,
    ):
        if style == "async with":
            async with c.stream("openai/gpt-4o-mini", HI) as stream:
                async for _ in stream:
                    seen += 1
                    if seen == 2:
                        break
        else:
            async for _ in c.stream("openai/gpt-4o-mini", HI):
                seen += 1
                if seen == 2:
                    break
            await settle()
        span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["aiollm.outcome"] == "closed"
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in attrs
    assert otel.count(DURATION) == 1 and otel.count(TTFC) == 1


async def test_cancelled_task(otel: Otel) -> None:
    async with (
        Emulator(cadence=Cadence(per_token=0.05)) as emu,
        emu.client(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider) as c,
    ):
        seen: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async with c.stream("qianfan/llama_2_7b", HI) as stream:
                    async for event in stream:
                        seen.append(event)
                        if len(seen) == 2:
                            tg.cancel_scope.cancel()

            tg.start_soon(consume)
    assert len(seen) == 2
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["aiollm.outcome"] == "cancelled"
    assert attrs["error.type"] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR
    assert otel.count(DURATION, error_type="CancelledError") == 1


async def test_timeout(emu: Emulator, oclient: Client, otel: Otel) -> None:
    emu.script("dashscope", Fault("stall", after_tokens=2))
    with pytest.raises(StreamInterrupted):
        async with oclient.stream("dashscope/qwen-plus", HI, timeout=Timeout(idle=0.1)) as s:
            async for _ in s:
                pass
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["aiollm.outcome"] == "error" and attrs["error.type"] == "TimeoutError"
    assert span.status.status_code is StatusCode.ERROR
    assert "idle timeout" in (span.status.description or "")
    assert otel.count(DURATION, error_type="TimeoutError") == 1
    assert otel.count(TTFC) == 1


async def test_retried_429_then_success(emu: Emulator, oclient: Client, otel: Otel) -> None:
    emu.script("openai", Fault("http", status=429, retry_after=0.05, route="chat"))
    async with oclient.stream("openai/gpt-4o-mini", HI) as stream:
        async for _ in stream:
            pass
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["aiollm.outcome"] == "completed" and attrs["aiollm.attempts"] == 2
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in attrs
    retries = [e for e in span.events if e.name == "aiollm.retry"]
    assert len(retries) == 1
    assert retries[0].attributes == {
        "error.type": "RateLimitError",
        "aiollm.retry.attempt": 1,
        "http.response.status_code": 429,
        "aiollm.retry.delay": pytest.approx(retries[0].attributes["aiollm.retry.delay"]),  # type: ignore[index]
    }
    assert retries[0].attributes["aiollm.retry.delay"] >= 0.05  # type: ignore[index, operator]
    waits = [e for e in span.events if e.name == "aiollm.limits.wait"]
    assert len(waits) == 1 and waits[0].attributes["aiollm.wait.cooldown"] is True  # type: ignore[index]
    assert waits[0].attributes["aiollm.wait.seconds"] > 0.01  # type: ignore[index, operator]
    assert otel.count(DURATION) == 1 and otel.count(TTFC) == 1
    usage = stream.completion.usage
    assert usage is not None
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in otel.points(TOKENS)}
    assert tokens == {"input": usage.input_tokens, "output": usage.output_tokens}


async def test_qianfan_token_refresh(emu: Emulator, oclient: Client, otel: Otel) -> None:
    await oclient.chat("qianfan/llama_2_7b", HI)
    first = otel.one_span()
    assert [e.name for e in first.events] == ["aiollm.auth.token_fetch"]
    otel.spans.clear()
    expire_tokens(emu)
    async with oclient.stream("qianfan/llama_2_7b", HI) as stream:
        async for _ in stream:
            pass
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["gen_ai.provider.name"] == "baidu.qianfan"
    assert attrs["aiollm.outcome"] == "completed" and attrs["aiollm.attempts"] == 2
    names = [e.name for e in span.events]
    assert names == ["aiollm.auth.token_refresh", "aiollm.auth.token_fetch"]
    refresh = span.events[0].attributes or {}
    assert refresh["error.type"] == "AuthenticationError"
    assert otel.count(DURATION) == 2


async def test_mid_stream_error(emu: Emulator, oclient: Client, otel: Otel) -> None:
    emu.script("dashscope", Fault("error", code="InternalError", status=500, after_tokens=2))
    with pytest.raises(StreamInterrupted) as info:
        async with oclient.stream("dashscope/qwen-plus", HI) as stream:
            async for _ in stream:
                pass
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["aiollm.outcome"] == "error"
    assert attrs["error.type"] == type(info.value.error).__qualname__ == "ServerError"
    assert span.status.status_code is StatusCode.ERROR
    assert "gen_ai.response.finish_reasons" not in attrs
    assert otel.count(DURATION, error_type="ServerError") == 1
    assert otel.count(DURATION) == 1


async def test_failed_before_any_event(emu: Emulator, oclient: Client, otel: Otel) -> None:
    emu.script("openai", Fault("http", status=400, route="chat"))
    with pytest.raises(aiollm.InvalidRequestError):
        await oclient.chat("openai/gpt-4o-mini", HI)
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["error.type"] == "InvalidRequestError" and attrs["aiollm.attempts"] == 1
    assert attrs["http.response.status_code"] == 400
    assert otel.count(TTFC) == 0


async def test_no_secret_in_anything_exported(
    emu: Emulator, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    async with emu.client(
        retry=RetryPolicy(backoff_base=0.01),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        propagate_trace=True,
    ) as c:
        for model in (
            "dashscope/qwen-plus",
            "qianfan/llama_2_7b",
            "gateway/chat-model",
            "openai/gpt-4o-mini",
        ):
            await c.chat(model, HI)
            async with c.stream(model, HI) as stream:
                async for _ in stream:
                    pass
        expire_tokens(emu)
        emu.script("openai", Fault("http", status=503, route="chat"))
        emu.script("dashscope", Fault("error", code="InternalError", status=500, after_tokens=2))
        await c.chat("qianfan/llama_2_7b", HI)
        await c.chat("openai/gpt-4o-mini", HI)
        with pytest.raises(StreamInterrupted):
            await c.stream("dashscope/qwen-plus", HI).final()
    secrets = [
        emu.api_key,
        emu.qianfan_ak,
        emu.qianfan_sk,
        emu.gateway_appid,
        emu.gateway_secret,
        emu.openai_key,
        *emu.state.qianfan.tokens,
    ]
    secrets += emu.state.gateway.issued
    exported = otel.exported()
    spans = otel.ended()
    assert len(spans) == 11 and otel.count(DURATION) == 11
    # every call's tokens are counted once, by type, and match its span
    for kind in ("input", "output"):
        points = [p for p in otel.points(TOKENS) if p.attributes["gen_ai.token.type"] == kind]
        counted = [(s.attributes or {}).get(f"gen_ai.usage.{kind}_tokens") for s in spans]
        assert sum(p.count for p in points) == sum(1 for n in counted if n is not None) >= 9
        assert sum(p.sum for p in points) == sum(n for n in counted if isinstance(n, int))
    assert "gen_ai.output.messages" in exported
    for secret in secrets:
        assert secret not in exported


async def test_content_capture(
    emu: Emulator, otel: Otel, oclient: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    async with emu.client(tracer_provider=otel.tracer_provider) as c:
        await c.chat("qianfan/llama_2_7b", HI, system="be brief")
        system = otel.one_span().attributes or {}
        otel.spans.clear()
        reply = await c.chat("openai/gpt-4o-mini", [{"role": "user", "content": "你好"}])
    assert json.loads(str(system["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "be brief"}
    ]
    attrs = otel.one_span().attributes or {}
    assert "gen_ai.system_instructions" not in attrs
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "你好"}]}
    ]
    assert json.loads(str(attrs["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": reply.text}],
            "finish_reason": "stop",
        }
    ]


async def test_content_as_event_with_latest_conventions(
    emu: Emulator, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http, gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    async with emu.client(tracer_provider=otel.tracer_provider) as c:
        await c.chat("openai/gpt-4o-mini", HI)
    span = otel.one_span()
    assert "gen_ai.input.messages" not in (span.attributes or {})
    (details,) = [e for e in span.events if e.name == "gen_ai.client.inference.operation.details"]
    assert "gen_ai.input.messages" in (details.attributes or {})
    assert "gen_ai.output.messages" in (details.attributes or {})


async def test_event_only_needs_the_latest_conventions(
    emu: Emulator, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    async with emu.client(tracer_provider=otel.tracer_provider) as c:
        await c.chat("openai/gpt-4o-mini", HI)
    span = otel.one_span()
    assert not span.events and "gen_ai.input.messages" not in (span.attributes or {})


@pytest.mark.parametrize("how", ["argument", "env"])
async def test_switched_off(emu: Emulator, otel: Otel, how: str) -> None:
    kwargs: dict[str, Any] = (
        {"otel": False} if how == "argument" else {"env": {"AIOLLM_OTEL": "off"}}
    )
    async with emu.client(
        tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, **kwargs
    ) as c:
        await c.chat("openai/gpt-4o-mini", HI)
        assert c._observe(c.provider("openai"), _call()) is None
    assert otel.ended() == [] and otel.count(DURATION) == 0


def _call() -> Any:
    from aiollm.providers import Call

    return Call(op="chat", model="m", stream=True)


async def test_unconfigured_global_providers_cost_nothing(emu: Emulator) -> None:
    assert configured_providers() is None  # the tests never set the global providers
    async with emu.client() as c:
        assert c._observe(c.provider("openai"), _call()) is None
        await c.chat("openai/gpt-4o-mini", HI)


def test_import_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, aiollm; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'aiollm.otel'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_traceparent_sent_when_turned_on(otel: Otel) -> None:
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = {"openai": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k-1234"}}
        for propagate in (False, True):
            async with Client(
                providers=settings,
                env={},
                tracer_provider=otel.tracer_provider,
                propagate_trace=propagate,
            ) as c:
                await c.chat("openai/m", HI)
    finally:
        await runner.cleanup()
    assert seen[0] is None
    span = otel.ended()[-1]
    trace_id = format(span.context.trace_id, "032x")
    span_id = format(span.context.span_id, "016x")
    assert seen[1] is not None and seen[1].startswith(f"00-{trace_id}-{span_id}-")


async def test_hooks_and_spans_together(emu: Emulator, otel: Otel) -> None:
    from test_hooks import Recorder

    hooks = Recorder()
    emu.script("openai", Fault("http", status=503, route="chat"))
    async with emu.client(
        hooks=[hooks],
        tracer_provider=otel.tracer_provider,
        retry=RetryPolicy(backoff_base=0.01, backoff_max=0.02),
    ) as c:
        with pytest.raises(StreamInterrupted):
            emu.script("openai", Fault("reset", after_tokens=2, route="chat"))
            async with c.stream("openai/gpt-4o-mini", HI) as stream:
                async for _ in stream:
                    pass
    finishes = [info for kind, info in hooks.calls if kind == "finish"]
    assert len(finishes) == 1 and finishes[0].outcome == "error"
    assert [kind for kind, _ in hooks.calls].count("retry") == 1
    attrs = otel.one_span().attributes or {}
    assert attrs["error.type"] == type(finishes[0].error).__qualname__
    assert isinstance(finishes[0].completion.usage, Usage | None)


def test_reasoning_tool_calls_and_token_details(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiollm.events import Completion, ToolCall
    from aiollm.otel import Telemetry
    from aiollm.providers import Call

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")
    telemetry = Telemetry(otel.tracer_provider, otel.meter_provider)
    call = Call(op="chat", model="deepseek-r1", stream=True, messages=HI, params={"stop": "END"})
    observer = telemetry.observe("dashscope", call)
    observer.chunk([])
    observer.chunk([])
    completion = Completion(
        text="",
        reasoning="think",
        tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"city":"Hangzhou"}')],
        finish_reason="tool_calls",
        usage=Usage(input_tokens=10, output_tokens=7, reasoning_tokens=5, cached_tokens=4),
    )
    observer.end("completed", completion, None)
    observer.end("completed", completion, None)  # a second end changes nothing
    span = otel.one_span()
    attrs = span.attributes or {}
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 5
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4
    (message,) = json.loads(str(attrs["gen_ai.output.messages"]))
    assert message["parts"] == [
        {"type": "reasoning", "content": "think"},
        {"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {"city": "Hangzhou"}},
    ]
    assert message["finish_reason"] == "tool_calls"
    assert [e.name for e in span.events] == ["gen_ai.client.inference.operation.details"]
    assert otel.count(DURATION) == 1 and otel.count(TTFC) == 1 and otel.count(TPOC) == 1
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in otel.points(TOKENS)}
    assert tokens == {"input": 10, "output": 7}


BENCH_ARGS = ["--requests", "2", "--concurrency", "1", "--otel", "console", "--no-progress"]
BENCH_ARGS += ["--first-token", "0.01", "--per-token", "0.001"]


def test_bench_exports_the_runs_spans() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aiollm", "bench", *BENCH_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for model in ("qwen-turbo", "ernie-speed-128k", "gpt-4o-mini"):
        assert out.stderr.count(f'"name": "chat {model}"') >= 2
    assert "gen_ai.client.operation.duration" in out.stderr
    assert '"service.name": "aiollm-bench"' in out.stderr
    for secret in (Emulator.api_key, Emulator.qianfan_sk, Emulator.gateway_secret):
        assert secret not in out.stderr + out.stdout


def test_input_messages_with_tool_calls_and_results() -> None:
    from aiollm.otel import _messages
    from aiollm.providers import Call

    call = Call(
        op="chat",
        model="m",
        stream=False,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    )
    assert _messages(call) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "weather?"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "w", "arguments": "{}"}],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "c1", "response": "sunny"}],
        },
    ]
