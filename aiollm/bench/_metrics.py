"""Per-request records and the per-run summary (vLLM-style figures, in milliseconds)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import APIError, ConfigurationError, StreamInterrupted, TimeoutError

__all__ = [
    "METRICS",
    "PERCENTILES",
    "SLO_METRICS",
    "RequestRecord",
    "RunSummary",
    "error_key",
    "parse_goodput",
    "percentile",
    "summarize",
]

METRICS = ("ttft", "tpot", "itl", "e2el")
"""The latency metrics every summary reports."""

PERCENTILES = (90, 95, 99)
"""The percentiles every summary reports besides the mean and the median."""

SLO_METRICS = ("ttft", "tpot", "e2el")
"""The metrics a goodput SLO may bound (milliseconds)."""


def error_key(exc: BaseException) -> str:
    """How an error is counted: its type, with the provider's code (or timeout phase).

    ``RateLimitError[18]``, ``AuthenticationError[InvalidApiKey]``, ``TimeoutError[first_byte]``,
    ``StreamInterrupted/ServerError[500]`` (the cause of an interrupted stream).
    """
    if isinstance(exc, StreamInterrupted):
        cause = exc.error if exc.error is not None else exc.__cause__
        return "StreamInterrupted" + (f"/{error_key(cause)}" if cause is not None else "")
    name = type(exc).__name__
    if isinstance(exc, APIError) and exc.code is not None:
        return f"{name}[{exc.code}]"
    if isinstance(exc, TimeoutError):
        return f"{name}[{exc.phase}]"
    return name


@dataclass(slots=True)
class RequestRecord:
    """One measured request. Times are seconds; offsets are from the moment it was sent.

    - ``start``: when it was sent, in seconds since its run began;
    - ``queued``: how long it waited for a concurrency slot before being sent;
    - ``headers``: send → response headers (the stream was opened);
    - ``delta_times``: send → each text or reasoning delta; ``ttft`` is the first of them;
    - ``reasoning_ttft`` / ``answer_ttft``: send → the first reasoning / text delta;
    - ``prompt_chars`` / ``prompt_tokens``: the prompt's size (tokens with a local tokenizer);
    - ``session`` / ``turn``: its place in a multi-turn session;
    - ``limiter_wait``: send → its first HTTP request (the client's limiter, cool-down and
      credential; the bench's own client only); ``quota_remaining``: as the response said;
    - ``e2el``: send → the end of the stream (or the failure);
    - ``output_tokens``: from the provider's usage when it reported one
      (``tokens_from_usage``), else the number of text deltas.
    """

    model: str
    index: int
    start: float = 0.0
    queued: float = 0.0
    headers: float | None = None
    delta_times: list[float] = field(default_factory=list)
    e2el: float | None = None
    input_tokens: int | None = None
    output_tokens: int = 0
    tokens_from_usage: bool = False
    output_chars: int = 0
    attempts: int = 0
    error: str | None = None
    error_message: str | None = None
    session: int | None = None
    turn: int | None = None
    prompt_chars: int = 0
    prompt_tokens: int | None = None
    reasoning_ttft: float | None = None
    answer_ttft: float | None = None
    limiter_wait: float | None = None
    quota_remaining: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the request completed without an error."""
        return self.error is None

    @property
    def chunks(self) -> int:
        """How many text deltas arrived."""
        return len(self.delta_times)

    @property
    def ttft(self) -> float | None:
        """Time to the first text delta."""
        return self.delta_times[0] if self.delta_times else None

    @property
    def itl(self) -> list[float]:
        """Gaps between consecutive text deltas (per chunk, not per token)."""
        t = self.delta_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: ``(e2el - ttft) / (output_tokens - 1)``.

        Undefined (None) below two output tokens, and for a reply that arrived as one chunk
        (not streamed: nothing was measured after the first token).
        """
        ttft = self.ttft
        if ttft is None or self.e2el is None or self.output_tokens < 2 or self.chunks < 2:
            return None
        return (self.e2el - ttft) / (self.output_tokens - 1)

    @property
    def output_tps(self) -> float | None:
        """This request's output tokens per second of its end-to-end latency."""
        if not self.e2el or not self.output_tokens:
            return None
        return self.output_tokens / self.e2el

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (milliseconds for latencies, seconds for ``start_s``)."""
        return {
            "model": self.model,
            "index": self.index,
            "ok": self.ok,
            "start_s": _round(self.start, 6),
            "queued_ms": _ms(self.queued),
            "headers_ms": _ms(self.headers),
            "ttft_ms": _ms(self.ttft),
            "tpot_ms": _ms(self.tpot),
            "e2el_ms": _ms(self.e2el),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens_from_usage": self.tokens_from_usage,
            "chunks": self.chunks,
            "output_chars": self.output_chars,
            "output_tokens_per_s": _round(self.output_tps, 3),
            "attempts": self.attempts,
            "error": self.error,
            "error_message": self.error_message,
            "session": self.session,
            "turn": self.turn,
            "prompt_chars": self.prompt_chars,
            "prompt_tokens": self.prompt_tokens,
            "reasoning_ttft_ms": _ms(self.reasoning_ttft),
            "answer_ttft_ms": _ms(self.answer_ttft),
            "limiter_wait_ms": _ms(self.limiter_wait),
            "quota_remaining": self.quota_remaining,
            "itl_ms": [_ms(x) for x in self.itl],
            "delta_ms": [_ms(x) for x in self.delta_times],
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated.

    The same definition as ``numpy.percentile``'s default; NaN for no values.
    """
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def spec_items(
    specs: Iterable[str] | Mapping[str, Any] | None, what: str, form: str
) -> list[tuple[str, Any]]:
    """``NAME:VALUE`` strings (or a mapping) as ``(name, value)`` pairs.

    A string without a colon is an error naming ``what`` it is and the ``form`` expected.
    """
    if not specs:
        return []
    if isinstance(specs, Mapping):
        return list(specs.items())
    items = []
    for spec in specs:
        name, sep, value = str(spec).partition(":")
        if not sep:
            raise ConfigurationError(f"{what} {spec!r} must be {form}")
        items.append((name, value))
    return items


def parse_goodput(specs: Iterable[str] | Mapping[str, float] | None) -> dict[str, float]:
    """SLOs in milliseconds from ``["ttft:500", "tpot:50"]`` (or a mapping); validated."""
    slos: dict[str, float] = {}
    for name, value in spec_items(specs, "goodput SLO", "METRIC:MILLISECONDS, e.g. ttft:500"):
        key = str(name).strip().lower()
        if key not in SLO_METRICS:
            raise ConfigurationError(
                f"unknown goodput metric {name!r}; use one of {', '.join(SLO_METRICS)}"
            )
        try:
            ms = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"goodput SLO for {key} must be a number of milliseconds (got {value!r})"
            ) from None
        if not ms > 0 or math.isinf(ms):
            raise ConfigurationError(f"goodput SLO for {key} must be > 0 ms (got {value!r})")
        slos[key] = ms
    return slos


def meets_slos(record: RequestRecord, slos: Mapping[str, float]) -> bool:
    """Whether a completed request meets every SLO (an undefined TPOT meets its SLO)."""
    if not record.ok:
        return False
    for key, limit_ms in slos.items():
        value = getattr(record, key)
        if value is None:
            if key == "tpot":
                continue
            return False
        if value * 1000.0 > limit_ms:
            return False
    return True


@dataclass
class RunSummary:
    """The figures of one model under one load level.

    ``figures`` holds the vLLM-style flat keys (``completed``, ``failed``,
    ``request_throughput``, ``output_throughput``, ``mean_ttft_ms``, ``median_ttft_ms``,
    ``p99_ttft_ms`` …); :meth:`to_dict` adds the load description and the error breakdown.
    """

    model: str
    load: dict[str, Any]
    duration: float
    records: list[RequestRecord]
    figures: dict[str, Any]
    errors: dict[str, int]
    goodput_slos: dict[str, float]
    interrupted: bool = False
    cancelled: int = 0
    warmup_failed: int = 0
    started_at: float = 0.0
    """When the measured part began (``time.perf_counter``; request ``start`` s count from it)."""

    def __getitem__(self, key: str) -> Any:
        return self.figures[key]

    @property
    def completed(self) -> int:
        """Requests that finished without an error."""
        return int(self.figures["completed"])

    @property
    def failed(self) -> int:
        """Requests that ended with an error."""
        return int(self.figures["failed"])

    @property
    def label(self) -> str:
        """``model @ load`` for tables and plots."""
        return f"{self.model} @ {describe_load(self.load)}"

    def to_dict(self) -> dict[str, Any]:
        """One flat, JSON-ready dict (vLLM-style keys plus load, errors and notes)."""
        out: dict[str, Any] = {"model": self.model, **self.load}
        out["duration"] = round(self.duration, 6)
        out.update(self.figures)
        out["errors"] = dict(self.errors)
        out["cancelled"] = self.cancelled
        out["warmup_failed"] = self.warmup_failed
        out["interrupted"] = self.interrupted
        if self.goodput_slos:
            out["goodput_slos_ms"] = dict(self.goodput_slos)
        return out


def describe_load(load: Mapping[str, Any]) -> str:
    """A short description of a load level, e.g. ``concurrency 4`` or ``5 req/s, max 8``."""
    rate = load.get("request_rate")
    if rate is None and not load.get("trace_speed"):
        return f"concurrency {load.get('concurrency')}"
    text = "unpaced" if rate == "inf" else f"{rate or 0:g} req/s"
    burst = load.get("burstiness")
    if rate != "inf" and burst not in (None, 1, 1.0):
        text += f" (burstiness {burst:g})"
    if load.get("trace_speed"):
        text = f"trace replay x{load['trace_speed']:g}"
    cap = load.get("max_concurrency")
    if cap:
        text += f", max {cap}"
    return text


def _stats(prefix: str, values: list[float], out: dict[str, Any]) -> None:
    values = sorted(values)
    ms = [v * 1000.0 for v in values]
    n = len(ms)
    if n:
        mean = math.fsum(ms) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in ms) / n)
    else:
        mean = std = math.nan
    out[f"mean_{prefix}_ms"] = _clean(mean)
    out[f"median_{prefix}_ms"] = _clean(percentile(ms, 50))
    out[f"std_{prefix}_ms"] = _clean(std)
    for q in PERCENTILES:
        out[f"p{q}_{prefix}_ms"] = _clean(percentile(ms, q))


def _clean(value: float) -> float | None:
    """NaN (no samples) becomes None so the JSON stays valid."""
    return None if math.isnan(value) else round(value, 4)


def summarize(
    model: str,
    load: dict[str, Any],
    records: list[RequestRecord],
    duration: float,
    *,
    goodput_slos: Mapping[str, float] | None = None,
    interrupted: bool = False,
    cancelled: int = 0,
    warmup_failed: int = 0,
    started_at: float = 0.0,
) -> RunSummary:
    """Aggregate one run's records into a :class:`RunSummary`."""
    slos = dict(goodput_slos or {})
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    duration = max(duration, 1e-9)
    out_tokens = sum(r.output_tokens for r in done)
    in_tokens = sum(r.input_tokens or 0 for r in done)
    chunks = sum(r.chunks for r in done)
    figures: dict[str, Any] = {
        "completed": len(done),
        "failed": len(failed),
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": round(len(done) / duration, 4),
        "output_throughput": round(out_tokens / duration, 4),
        "total_token_throughput": round((in_tokens + out_tokens) / duration, 4),
        "request_goodput": (
            round(sum(1 for r in done if meets_slos(r, slos)) / duration, 4) if slos else None
        ),
        "mean_tokens_per_chunk": round(out_tokens / chunks, 4) if chunks else None,
        "output_tokens_from_usage": all(r.tokens_from_usage for r in done) if done else None,
        "mean_queued_ms": (
            round(math.fsum(r.queued for r in records) / len(records) * 1000.0, 4)
            if records
            else None
        ),
    }
    ttfts = [t for r in done if (t := r.ttft) is not None]
    tpots = [t for r in done if (t := r.tpot) is not None]
    itls = [gap for r in done for gap in r.itl]
    e2els = [t for r in done if (t := r.e2el) is not None]
    for prefix, values in zip(METRICS, (ttfts, tpots, itls, e2els), strict=True):
        _stats(prefix, values, figures)
    # reasoning models: the first reasoning token and the first answer token, apart
    for prefix in ("reasoning_ttft", "answer_ttft"):
        _stats(prefix, [t for r in done if (t := getattr(r, prefix)) is not None], figures)
    figures["mean_prompt_chars"] = (
        round(math.fsum(r.prompt_chars for r in records) / len(records), 2) if records else None
    )
    counted = [r.prompt_tokens for r in records if r.prompt_tokens is not None]
    figures["mean_prompt_tokens"] = round(math.fsum(counted) / len(counted), 2) if counted else None
    errors = dict(Counter(r.error for r in failed if r.error is not None).most_common())
    return RunSummary(
        model=model,
        load=load,
        duration=duration,
        records=records,
        figures=figures,
        errors=errors,
        goodput_slos=slos,
        interrupted=interrupted,
        cancelled=cancelled,
        warmup_failed=warmup_failed,
        started_at=started_at,
    )
