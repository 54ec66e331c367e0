"""OpenTelemetry spans and metrics for every call, per the GenAI semantic conventions.

Needs ``pip install 'aiollm-client[otel]'`` (``opentelemetry-api``; the SDK and exporters are yours).
A :class:`~aiollm.Client` reports through the global tracer and meter providers once the
application has set them, or through ``Client(tracer_provider=..., meter_provider=...)``;
``Client(otel=False)`` or ``AIOLLM_OTEL=off`` turns it off. ``import aiollm`` never imports
this module: the client imports it when a call starts and OpenTelemetry is in use.

Each call is one CLIENT span, ``{operation} {model}``, started when the call's first request is
prepared and ended exactly once: when the stream ends, fails, is closed, cancelled or dropped.
Waits in the provider's limits or cool-down, token fetches, retries and token refreshes are
span events on it. Every name used is in :data:`NAMES` (the README has the table).

``OTEL_SEMCONV_STABILITY_OPT_IN`` is read as the OpenTelemetry contrib GenAI instrumentations
read it: a comma-separated list; with ``gen_ai_latest_experimental`` in it, the names of
:data:`LATEST` replace those of :data:`NAMES` and ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
takes the modes ``NO_CONTENT``, ``SPAN_ONLY``, ``EVENT_ONLY``, ``SPAN_AND_EVENT``; without it,
that variable is ``true`` or ``false``. Message content is never recorded by default.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._otel_export import export_spans
from ._redact import redact_text
from .hooks import CallObserver, Outcome

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from .events import Completion, Event
    from .providers._base import Call, HTTPRequest

__all__ = [
    "LATEST",
    "NAMES",
    "PROVIDER_NAMES",
    "SpanObserver",
    "Telemetry",
    "configured_providers",
    "export_spans",
]

# Every name aiollm records, in one place: key -> name (semantic conventions unless aiollm.*).
NAMES: dict[str, str] = {
    # span and metric attributes
    "operation": "gen_ai.operation.name",
    "provider": "gen_ai.provider.name",
    "request.model": "gen_ai.request.model",
    "request.stream": "gen_ai.request.stream",
    "request.temperature": "gen_ai.request.temperature",
    "request.top_p": "gen_ai.request.top_p",
    "request.top_k": "gen_ai.request.top_k",
    "request.max_tokens": "gen_ai.request.max_tokens",
    "request.presence_penalty": "gen_ai.request.presence_penalty",
    "request.frequency_penalty": "gen_ai.request.frequency_penalty",
    "request.seed": "gen_ai.request.seed",
    "request.stop_sequences": "gen_ai.request.stop_sequences",
    "request.choice_count": "gen_ai.request.choice.count",
    "response.id": "gen_ai.response.id",
    "response.model": "gen_ai.response.model",
    "response.finish_reasons": "gen_ai.response.finish_reasons",
    "response.time_to_first_chunk": "gen_ai.response.time_to_first_chunk",
    "usage.input_tokens": "gen_ai.usage.input_tokens",
    "usage.output_tokens": "gen_ai.usage.output_tokens",
    "usage.reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "usage.cached_tokens": "gen_ai.usage.cache_read.input_tokens",
    "token.type": "gen_ai.token.type",
    "input.messages": "gen_ai.input.messages",
    "system_instructions": "gen_ai.system_instructions",
    "output.messages": "gen_ai.output.messages",
    "server.address": "server.address",
    "server.port": "server.port",
    "error.type": "error.type",
    "http.status": "http.response.status_code",
    "attempts": "aiollm.attempts",
    "outcome": "aiollm.outcome",
    "wait.seconds": "aiollm.wait.seconds",
    "wait.cooldown": "aiollm.wait.cooldown",
    "retry.attempt": "aiollm.retry.attempt",
    "retry.delay": "aiollm.retry.delay",
    # metrics
    "metric.duration": "gen_ai.client.operation.duration",
    "metric.token_usage": "gen_ai.client.token.usage",
    "metric.time_to_first_chunk": "gen_ai.client.operation.time_to_first_chunk",
    "metric.time_per_output_chunk": "gen_ai.client.operation.time_per_output_chunk",
    # span events
    "event.wait": "aiollm.limits.wait",
    "event.token_fetch": "aiollm.auth.token_fetch",
    "event.retry": "aiollm.retry",
    "event.token_refresh": "aiollm.auth.token_refresh",
    "event.details": "gen_ai.client.inference.operation.details",
}

LATEST: dict[str, str] = {}
"""Names that differ under ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``.

Empty while the conventions' latest names are the ones above; a rename (such as the
``gen_ai.client.inference.*`` metrics) goes here first, then into :data:`NAMES`."""

PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai",
    "dashscope": "alibaba.dashscope",
    "qianfan": "baidu.qianfan",
    "gateway": "aiollm.gateway",
}
"""``gen_ai.provider.name`` of each aiollm provider (``openai`` is the conventions' own value)."""

OPERATION_NAMES = {"chat": "chat", "complete": "text_completion", "embed": "embeddings"}

_PARAMS = {
    "temperature": "request.temperature",
    "top_p": "request.top_p",
    "top_k": "request.top_k",
    "max_tokens": "request.max_tokens",
    "max_output_tokens": "request.max_tokens",
    "presence_penalty": "request.presence_penalty",
    "frequency_penalty": "request.frequency_penalty",
    "seed": "request.seed",
    "stop": "request.stop_sequences",
    "n": "request.choice_count",
}

# The conventions' bucket boundaries: the durations' (seconds) and the token counts'.
DURATION_BUCKETS = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
]  # fmt: skip
TOKEN_BUCKETS = [
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
]  # fmt: skip

WAIT_EVENT_MIN = 0.001
"""Waits in the limits shorter than this (seconds) make no span event."""

STABILITY_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _latest_experimental(env: Mapping[str, str]) -> bool:
    opt_in = env.get(STABILITY_ENV, "")
    return "gen_ai_latest_experimental" in {part.strip() for part in opt_in.split(",")}


def capture_mode(env: Mapping[str, str], latest: bool) -> tuple[bool, bool]:
    """``(on the span, as an event)``: where message content is recorded (both off by default)."""
    value = env.get(CAPTURE_ENV, "").strip().lower()
    if value == "true":
        return True, False
    if latest:
        return {
            "span_only": (True, False),
            "event_only": (False, True),
            "span_and_event": (True, True),
        }.get(value, (False, False))
    return False, False


def configured_providers() -> tuple[TracerProvider, MeterProvider] | None:
    """The global providers, or None while the application has set neither."""
    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    no_tracing = isinstance(tracer_provider, ProxyTracerProvider | NoOpTracerProvider)
    no_metrics = isinstance(meter_provider, NoOpMeterProvider) or (
        type(meter_provider).__name__ == "_ProxyMeterProvider"
    )
    if no_tracing and no_metrics:
        return None
    return tracer_provider, meter_provider


class Telemetry:
    """The tracer, the four histograms and the settings, shared by a client's calls."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        propagate: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        from . import __version__

        env = os.environ if env is None else env
        self.latest = _latest_experimental(env)
        self.names = {**NAMES, **LATEST} if self.latest else NAMES
        self.capture_span, self.capture_event = capture_mode(env, self.latest)
        self.propagator = TraceContextTextMapPropagator() if propagate else None
        n = self.names
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(
            "aiollm", __version__
        )
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("aiollm", __version__)
        self.duration = meter.create_histogram(
            n["metric.duration"],
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            n["metric.token_usage"],
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            n["metric.time_to_first_chunk"],
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.time_per_output_chunk = meter.create_histogram(
            n["metric.time_per_output_chunk"],
            unit="s",
            description="Time per output chunk after the first one of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def observe(self, provider: str, call: Call) -> SpanObserver:
        """Start the span of one call."""
        return SpanObserver(self, provider, call)


def _messages(call: Call) -> list[dict[str, Any]]:
    """The call's input in the conventions' structured message form."""
    if call.messages is None:
        text = call.prompt if call.prompt is not None else call.input
        texts = text if isinstance(text, list) else [text or ""]
        return [{"role": "user", "parts": [{"type": "text", "content": t} for t in texts]}]
    out = []
    for message in call.messages:
        role = str(message.get("role", "user"))
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        parts: list[dict[str, Any]] = []
        if role == "tool":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": message.get("tool_call_id"),
                    "response": content,
                }
            )
        elif content is not None:
            parts.append({"type": "text", "content": content})
        for tool_call in message.get("tool_calls") or ():
            if not isinstance(tool_call, dict):
                continue
            function = tool_call.get("function") or {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": tool_call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
        out.append({"role": role, "parts": parts})
    return out


def _output_message(completion: Completion, outcome: str) -> dict[str, Any]:
    """The reply in the conventions' structured form: reasoning, text and tool-call parts."""
    parts: list[dict[str, Any]] = []
    if completion.reasoning:
        parts.append({"type": "reasoning", "content": completion.reasoning})
    if completion.text or not parts:
        parts.append({"type": "text", "content": completion.text})
    for call in completion.tool_calls:
        try:
            arguments: Any = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            arguments = call.arguments
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": arguments}
        )
    return {
        "role": "assistant",
        "parts": parts,
        "finish_reason": completion.finish_reason or outcome,
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_type(error: BaseException) -> str:
    """``error.type``: the exception's class name (``RateLimitError``, ``CancelledError`` …)."""
    return type(error).__qualname__


class SpanObserver(CallObserver):
    """One call's span and metrics."""

    def __init__(self, telemetry: Telemetry, provider: str, call: Call) -> None:
        self._t = telemetry
        n = self._n = telemetry.names
        self._call = call
        self._streaming = call.stream and call.op != "embed"
        op = OPERATION_NAMES.get(call.op, call.op)
        self._metric_attrs: dict[str, Any] = {
            n["operation"]: op,
            n["provider"]: PROVIDER_NAMES.get(provider, provider),
            n["request.model"]: call.model,
        }
        attrs: dict[str, Any] = dict(self._metric_attrs)
        if call.op != "embed":
            attrs[n["request.stream"]] = call.stream
        for param, key in _PARAMS.items():
            value = call.params.get(param)
            if value is None or isinstance(value, bool):
                continue
            if key == "request.stop_sequences":
                value = [value] if isinstance(value, str) else [str(v) for v in value]
            elif not isinstance(value, int | float | str):
                continue
            attrs[n[key]] = value
        if telemetry.capture_span or telemetry.capture_event:
            self._input = _dumps(_messages(call))
            if telemetry.capture_span:
                attrs[n["input.messages"]] = self._input
                system = call.params.get("system")  # given apart from the messages
                if isinstance(system, str):
                    attrs[n["system_instructions"]] = _dumps([{"type": "text", "content": system}])
        self._span = telemetry.tracer.start_span(
            f"{op} {call.model}", kind=SpanKind.CLIENT, attributes=attrs
        )
        self._start = self._last = time.monotonic()
        self._first: float | None = None
        self._attempts = 0
        self._status: int | None = None
        self._secrets: tuple[str, ...] = ()
        self._ended = False

    # -- the call's points ----------------------------------------------------------------
    def waited(self, seconds: float, cooldown: bool) -> None:
        if seconds >= WAIT_EVENT_MIN:
            n = self._n
            self._span.add_event(
                n["event.wait"], {n["wait.seconds"]: seconds, n["wait.cooldown"]: cooldown}
            )

    def token_fetched(self, seconds: float) -> None:
        self._span.add_event(self._n["event.token_fetch"], {self._n["wait.seconds"]: seconds})

    def request(self, request: HTTPRequest, attempt: int) -> Mapping[str, str] | None:
        self._attempts = attempt
        self._secrets = request.secrets
        if attempt == 1:
            parts = urlsplit(request.url)
            if parts.hostname:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                n = self._n
                address: dict[str, Any] = {
                    n["server.address"]: parts.hostname,
                    n["server.port"]: port,
                }
                self._metric_attrs.update(address)
                self._span.set_attributes(address)
        propagator = self._t.propagator
        if propagator is None:
            return None
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def response(self, status: int, headers: Mapping[str, str]) -> None:
        self._status = status

    def retry(self, error: BaseException, attempt: int, delay: float, refresh: bool) -> None:
        n = self._n
        attrs: dict[str, Any] = {n["error.type"]: error_type(error), n["retry.attempt"]: attempt}
        status = getattr(error, "status", None)
        if isinstance(status, int):
            attrs[n["http.status"]] = status
        if refresh:
            self._span.add_event(n["event.token_refresh"], attrs)
        else:
            attrs[n["retry.delay"]] = delay
            self._span.add_event(n["event.retry"], attrs)

    def chunk(self, events: list[Event]) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now - self._start
            if self._streaming:
                self._t.time_to_first_chunk.record(self._first, self._metric_attrs)
        elif self._streaming:
            self._t.time_per_output_chunk.record(now - self._last, self._metric_attrs)
        self._last = now

    def end(
        self, outcome: Outcome, completion: Completion | None, error: BaseException | None
    ) -> None:
        if self._ended:
            return
        self._ended = True
        t, n, span = self._t, self._n, self._span
        duration = time.monotonic() - self._start
        attrs: dict[str, Any] = {n["attempts"]: self._attempts, n["outcome"]: outcome}
        if self._status is not None:
            attrs[n["http.status"]] = self._status
        if self._first is not None and self._streaming:
            attrs[n["response.time_to_first_chunk"]] = self._first
        usage = None
        if completion is not None:
            usage = completion.usage
            if completion.request_id:
                attrs[n["response.id"]] = completion.request_id
            response_model = completion.extra.get("response_model")
            if isinstance(response_model, str):
                attrs[n["response.model"]] = response_model
                self._metric_attrs[n["response.model"]] = response_model
            if completion.finish_reason:
                attrs[n["response.finish_reasons"]] = [completion.finish_reason]
        tokens: dict[str, int] = {}
        if usage is not None:
            for key, value in (
                ("usage.input_tokens", usage.input_tokens),
                ("usage.output_tokens", usage.output_tokens),
                ("usage.reasoning_tokens", usage.reasoning_tokens),
                ("usage.cached_tokens", usage.cached_tokens),
            ):
                if value is not None:
                    attrs[n[key]] = value
            if usage.input_tokens is not None:
                tokens["input"] = usage.input_tokens
            if usage.output_tokens is not None:
                tokens["output"] = usage.output_tokens
        metric_attrs = self._metric_attrs
        if error is not None:
            kind = error_type(error)
            attrs[n["error.type"]] = kind
            metric_attrs = {**metric_attrs, n["error.type"]: kind}
            span.set_status(StatusCode.ERROR, redact_text(str(error), self._secrets)[:500])
        if completion is not None and (t.capture_span or t.capture_event):
            output = _dumps([_output_message(completion, outcome)])
            if t.capture_span:
                attrs[n["output.messages"]] = output
            if t.capture_event:
                span.add_event(
                    n["event.details"],
                    {n["input.messages"]: self._input, n["output.messages"]: output},
                )
        span.set_attributes(attrs)
        t.duration.record(duration, metric_attrs)
        for kind, value in tokens.items():
            t.token_usage.record(value, {**self._metric_attrs, n["token.type"]: kind})
        span.end()
