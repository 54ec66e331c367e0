"""What to benchmark and under which load: :class:`BenchConfig`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import ConfigurationError
from ._capacity import SLO, CapacitySearch, parse_slos
from ._metrics import parse_goodput
from ._workload import LocalTokenizer, Messages, TraceEntry

__all__ = ["DEFAULT_REQUESTS", "EMULATOR_MODELS", "BenchConfig"]

DEFAULT_REQUESTS = 50
"""Requests per model and load level when neither ``requests`` nor ``duration`` is given."""

EMULATOR_MODELS = (
    "openai/gpt-4o-mini",
    "dashscope/qwen-turbo",
    "qianfan/ernie-speed-128k",
    "gateway/llama-2-7b-chat",
)
"""The models benchmarked against the embedded emulator when none are named."""


@dataclass
class BenchConfig:
    """What to benchmark and under which load.

    Load: ``concurrency`` workers each sending one request after another, or — with
    ``request_rate`` (requests/s; ``math.inf`` sends them all at once) — arrivals with gamma
    distributed gaps (``burstiness`` 1.0 is a Poisson process, lower is burstier), optionally
    capped at ``max_concurrency`` in flight. ``requests`` and/or ``duration`` (seconds) bound
    each run (default :data:`DEFAULT_REQUESTS` requests); ``warmup`` requests before each run
    are not counted (default 1: the connection, the credential and the code path are ready
    before the first measured request; ``warmup`` at least the concurrency opens every
    connection first). ``sweep`` repeats the run at each concurrency level (with a request rate:
    at each ``max_concurrency``).

    Workload: ``models`` (``provider/model``, several side by side; each runs in turn unless
    ``models_together``), ``prompts`` (message lists, used round robin) or synthetic prompts of
    about ``input_len`` tokens, ``max_tokens``, extra provider ``params``, a per-request
    ``timeout`` (seconds, total). ``goodput``: SLOs in ms, e.g. ``{"ttft": 500, "tpot": 50}``.

    With no ``models`` (or ``emulator=True``) the embedded emulator serves the requests with a
    cadence of ``first_token`` seconds to the first token and ``per_token`` after that, and,
    with ``quota_rps``, answers HTTP 429 above that many requests per second.

    Capacity search (``find_max``: ``"request_rate"`` or ``"concurrency"``): steps of
    ``step_duration`` seconds from ``search_start`` up to ``search_limit``, judged against
    ``slos`` (e.g. ``["ttft_p99:2000", "error_rate:0.01"]``; throttling answers count as
    errors unless ``count_throttling`` is off), to within ``resolution`` (relative), the
    deciding steps run ``repeats`` times. Requests still unfinished ``drain`` seconds after a
    step stopped sending are cancelled and count as failures. Retries are off in a search
    unless ``max_retries`` is given, so every throttling answer is seen.

    More workloads: ``conversations`` (e.g. from a ShareGPT file) give single-turn prompts,
    or with ``turns`` > 1 multi-turn sessions: each worker sends a session's user turns in
    order, carrying the replies as history, ``think_time`` seconds apart. ``trace``: arrival
    times and lengths replayed at ``trace_speed`` times the recorded speed. ``input_len_range``
    and ``output_len_range`` spread the synthetic lengths uniformly (0.5: ±50 %);
    ``output_len`` sets each request's ``max_tokens`` (default ``max_tokens``) and
    ``pin_output`` asks the server to produce exactly that many (``ignore_eos`` and
    ``min_tokens``, honoured by vLLM-style servers). ``shared_prefix_len``: one common
    system prompt of that many tokens before every request. ``tokenizer``: a local
    ``tokenizer.json`` making every length exact in tokens.

    ``runs``: repeat each run that many times; the result gives each figure's mean and 95 %
    confidence interval. ``workers``: run the load from that many processes, aggregated
    exactly from every request's record (default None: one per 32 requests in flight or
    requests/s of the highest load, up to the cores; see :mod:`aiollm.bench._workers`).

    ``ramp``: seconds over which a paced load rises from nothing to its rate before the
    measured part begins (the requests sent meanwhile are not counted).
    """

    models: Sequence[str] = ()
    concurrency: int = 10
    requests: int | None = None
    duration: float | None = None
    request_rate: float | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    sweep: Sequence[int] = ()
    warmup: int = 1
    prompts: Sequence[Messages] | None = None
    input_len: int = 32
    max_tokens: int | None = 64
    params: Mapping[str, Any] = field(default_factory=dict)
    goodput: Mapping[str, float] | Sequence[str] | None = None
    timeout: float | None = None
    max_retries: int | None = None
    seed: int = 0
    models_together: bool = False
    emulator: bool | None = None
    first_token: float = 0.2
    per_token: float = 0.01
    quota_rps: float | None = None
    find_max: str | None = None
    slos: Mapping[str, float] | Sequence[str] | None = None
    count_throttling: bool = True
    step_duration: float = 30.0
    search_start: float = 1.0
    search_limit: float = 1024.0
    resolution: float = 0.1
    repeats: int = 2
    drain: float | None = None
    ramp: float = 0.0
    conversations: Sequence[Messages] | None = None
    turns: int = 1
    think_time: float = 0.0
    trace: Sequence[TraceEntry] | None = None
    trace_speed: float = 1.0
    input_len_range: float = 0.0
    output_len: int | None = None
    output_len_range: float = 0.0
    pin_output: bool = False
    shared_prefix_len: int = 0
    tokenizer: str | None = None
    workers: int | None = None
    runs: int = 1
    shard: tuple[int, int] = (0, 1)
    """This process's part of a multi-process run: (worker, workers); set by the workers."""
    goodput_slos: dict[str, float] = field(init=False, repr=False, default_factory=dict)
    """The parsed ``goodput`` SLOs in ms (set from ``goodput``)."""
    capacity_slos: list[SLO] = field(init=False, repr=False, default_factory=list)
    """The parsed capacity ``slos`` (an ``error_rate`` budget of 0.01 unless given)."""

    def __post_init__(self) -> None:
        self.goodput_slos = parse_goodput(self.goodput)
        self.capacity_slos = parse_slos(self.slos)
        self.validate()

    @property
    def uses_emulator(self) -> bool:
        """Whether the embedded emulator serves this benchmark."""
        return self.emulator if self.emulator is not None else not self.models

    @property
    def model_list(self) -> list[str]:
        """The models to benchmark (the emulator's defaults when none were named)."""
        if self.models:
            return list(dict.fromkeys(self.models))
        return list(EMULATOR_MODELS)

    def validate(self) -> None:
        """Raise :class:`~aiollm.ConfigurationError` for a setting that cannot work."""

        def positive_int(name: str, value: int | None, *, zero: bool = False) -> None:
            if value is None:
                return
            if not isinstance(value, int) or value < (0 if zero else 1):
                raise ConfigurationError(
                    f"{name} must be an integer >= {0 if zero else 1} (got {value!r})"
                )

        positive_int("concurrency", self.concurrency)
        positive_int("requests", self.requests)
        positive_int("max_concurrency", self.max_concurrency)
        positive_int("warmup", self.warmup, zero=True)
        positive_int("input_len", self.input_len)
        positive_int("max_tokens", self.max_tokens)
        positive_int("max_retries", self.max_retries, zero=True)
        for level in self.sweep:
            positive_int("every sweep level", level)
        if self.duration is not None and not self.duration > 0:
            raise ConfigurationError(f"duration must be > 0 seconds (got {self.duration!r})")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ConfigurationError(
                f"request_rate must be > 0 requests/s, or inf (got {self.request_rate!r})"
            )
        if self.request_rate is not None and math.isinf(self.request_rate):
            if self.requests is None and self.duration is not None:
                raise ConfigurationError(
                    "an unpaced request rate (inf) needs a number of requests, not a duration"
                )
        if not self.burstiness > 0:
            raise ConfigurationError(f"burstiness must be > 0 (got {self.burstiness!r})")
        if self.first_token < 0 or self.per_token < 0:
            raise ConfigurationError("the emulator's first_token and per_token must be >= 0")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds (got {self.timeout!r})")
        if self.find_max not in (None, "request_rate", "concurrency"):
            raise ConfigurationError(
                f"find_max must be 'request_rate' or 'concurrency' (got {self.find_max!r})"
            )
        if self.find_max is not None:
            if not self.step_duration > 0:
                raise ConfigurationError("step_duration must be > 0 seconds")
            if self.drain is not None and not self.drain > 0:
                raise ConfigurationError("drain must be > 0 seconds")
            if self.sweep:
                raise ConfigurationError("a capacity search chooses its own loads: no sweep")
            CapacitySearch(
                start=self.search_start,
                limit=self.search_limit,
                resolution=self.resolution,
                repeats=self.repeats,
                integer=self.find_max == "concurrency",
            )
        if self.tokenizer is not None:
            LocalTokenizer(self.tokenizer)  # a clear error now, not at the first request
        positive_int("turns", self.turns)
        positive_int("workers", self.workers)
        positive_int("runs", self.runs)
        if self.runs > 1 and (self.find_max or (self.workers or 1) > 1):
            raise ConfigurationError("repeated runs go with fixed loads in one process")
        if self.workers is not None and self.workers > 1:
            if self.models_together:
                raise ConfigurationError("--workers runs the models one after another")
            if min(self.widths(), default=self.workers) < self.workers:
                raise ConfigurationError(
                    f"every concurrency must be at least the workers ({self.workers})"
                )
        positive_int("output_len", self.output_len)
        positive_int("shared_prefix_len", self.shared_prefix_len, zero=True)
        for name in ("input_len_range", "output_len_range"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be in [0, 1) (got {getattr(self, name)!r})")
        if self.think_time < 0:
            raise ConfigurationError(f"think_time must be >= 0 (got {self.think_time!r})")
        if not self.trace_speed > 0 or math.isinf(self.trace_speed):
            raise ConfigurationError(f"trace_speed must be > 0 (got {self.trace_speed!r})")
        if self.trace is not None and not self.trace:
            raise ConfigurationError("the trace is empty")
        if self.conversations is not None and not self.conversations:
            raise ConfigurationError("conversations is empty")
        if self.turns > 1 and (self.request_rate is not None or self.trace is not None):
            raise ConfigurationError("multi-turn sessions run at a fixed concurrency")
        if self.trace is not None and (self.request_rate is not None or self.find_max):
            raise ConfigurationError("a trace sets its own arrival times: no request rate")
        if self.pin_output and self.output_len is None and self.max_tokens is None:
            raise ConfigurationError("pin_output needs an output length (output_len or max_tokens)")
        if self.ramp < 0:
            raise ConfigurationError(f"ramp must be >= 0 seconds (got {self.ramp!r})")
        if self.quota_rps is not None and not self.quota_rps > 0:
            raise ConfigurationError(f"quota_rps must be > 0 (got {self.quota_rps!r})")
        if self.prompts is not None and not self.prompts:
            raise ConfigurationError("prompts is empty")
        if not self.models and self.emulator is False:
            raise ConfigurationError("name at least one model (provider/model) to benchmark")
        for model in self.models:
            provider, sep, name = model.partition("/")
            if not (provider and sep and name):
                raise ConfigurationError(
                    f"model {model!r} must be '<provider>/<model>', e.g. 'qianfan/llama_2_7b'"
                )

    def levels(self) -> list[dict[str, Any]]:
        """The load levels, one run per model each (a description dict per level)."""
        total = self.requests
        if total is None and self.duration is None:
            total = len(self.trace) if self.trace is not None else DEFAULT_REQUESTS
        base: dict[str, Any] = {"num_requests": total, "duration_limit": self.duration}
        out: list[dict[str, Any]] = []
        caps: Sequence[int | None] = list(self.sweep) or [self.max_concurrency]
        if self.trace is not None:
            for cap in caps:
                out.append(
                    {
                        "concurrency": None,
                        "request_rate": None,
                        "burstiness": None,
                        "max_concurrency": cap,
                        "trace_speed": self.trace_speed,
                        **base,
                    }
                )
        elif self.request_rate is None:
            for n in self.sweep or [self.concurrency]:
                out.append(
                    {
                        "concurrency": n,
                        "request_rate": None,
                        "burstiness": None,
                        "max_concurrency": None,
                        **base,
                    }
                )
        else:
            rate: float | str = "inf" if math.isinf(self.request_rate) else self.request_rate
            for cap in caps:
                out.append(
                    {
                        "concurrency": None,
                        "request_rate": rate,
                        "burstiness": self.burstiness,
                        "max_concurrency": cap,
                        **base,
                    }
                )
        return out

    def widths(self) -> list[int]:
        """Every concurrency and concurrency cap of the runs (each process needs one of each)."""
        widths = list(self.sweep)
        if self.request_rate is None and self.trace is None and self.find_max is None:
            widths.append(self.concurrency)
        if self.max_concurrency:
            widths.append(self.max_concurrency)
        return widths

    def connection_limit(self) -> int:
        """Enough pooled connections for the widest level (0 = unlimited)."""
        if self.find_max == "concurrency":
            return max(256, int(self.search_limit) + 8)
        if self.find_max == "request_rate":
            return max(256, self.max_concurrency + 8) if self.max_concurrency else 0
        widths = [lv["concurrency"] or lv["max_concurrency"] for lv in self.levels()]
        if any(w is None for w in widths):
            return 0
        widest = max(int(w) for w in widths)
        if self.models_together:
            widest *= len(self.model_list)
        return max(256, widest + 8)

    def describe(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return {
            "models": self.model_list,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "duration": self.duration,
            "request_rate": (
                "inf"
                if self.request_rate is not None and math.isinf(self.request_rate)
                else self.request_rate
            ),
            "burstiness": self.burstiness,
            "max_concurrency": self.max_concurrency,
            "sweep": list(self.sweep),
            "warmup": self.warmup,
            "prompts": "file" if self.prompts is not None else f"synthetic:{self.input_len}",
            "max_tokens": self.max_tokens,
            "params": dict(self.params),
            "goodput_slos_ms": dict(self.goodput_slos),
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "seed": self.seed,
            "models_together": self.models_together,
            "emulator": (
                {
                    "first_token": self.first_token,
                    "per_token": self.per_token,
                    "quota_rps": self.quota_rps,
                }
                if self.uses_emulator
                else None
            ),
            "ramp": self.ramp,
            "find_max": self.find_max,
            "workers": self.workers,
            "runs": self.runs,
            "workload": {
                "source": (
                    "trace"
                    if self.trace is not None
                    else "conversations"
                    if self.conversations is not None
                    else "prompts"
                    if self.prompts is not None
                    else "synthetic"
                ),
                "turns": self.turns,
                "think_time": self.think_time,
                "trace_speed": self.trace_speed if self.trace is not None else None,
                "input_len": self.input_len,
                "input_len_range": self.input_len_range,
                "output_len": self.output_len,
                "output_len_range": self.output_len_range,
                "pin_output": self.pin_output,
                "shared_prefix_len": self.shared_prefix_len,
                "lengths_in": "tokens" if self.tokenizer else "words (synthetic), characters",
                "tokenizer": self.tokenizer,
            },
        }

    def step_load(self, value: float) -> dict[str, Any]:
        """The load description of one capacity-search step at ``value``."""
        base: dict[str, Any] = {"num_requests": None, "duration_limit": self.step_duration}
        if self.find_max == "concurrency":
            return {
                "concurrency": int(value),
                "request_rate": None,
                "burstiness": None,
                "max_concurrency": None,
                **base,
            }
        return {
            "concurrency": None,
            "request_rate": value,
            "burstiness": self.burstiness,
            "max_concurrency": self.max_concurrency,
            **base,
        }

    @property
    def effective_retries(self) -> int | None:
        """Retries per request: as given, else none in a capacity search (else the client's)."""
        if self.max_retries is not None:
            return self.max_retries
        return 0 if self.find_max is not None else None

    @property
    def drain_time(self) -> float:
        """Seconds a step waits for its requests after it stopped sending."""
        if self.drain is not None:
            return self.drain
        return max(2.0, min(60.0, self.step_duration))
