"""Load generation: fixed concurrency or paced arrivals, warm-up, sweeps, stop with partial results."""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import random
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio

from ..client import Client
from ..errors import ConfigurationError
from ..events import TextDelta, Usage
from ..providers import split_model
from ._metrics import RequestRecord, RunSummary, describe_load, error_key, parse_goodput, summarize
from ._progress import ProgressLine, monotonic
from ._workload import Messages, synthetic_prompt

__all__ = [
    "DEFAULT_REQUESTS",
    "EMULATOR_MODELS",
    "BenchConfig",
    "BenchResult",
    "Benchmark",
    "RunState",
    "run",
]

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
    are not counted. ``sweep`` repeats the run at each concurrency level (with a request rate:
    at each ``max_concurrency``).

    Workload: ``models`` (``provider/model``, several side by side; each runs in turn unless
    ``models_together``), ``prompts`` (message lists, used round robin) or synthetic prompts of
    about ``input_len`` tokens, ``max_tokens``, extra provider ``params``, a per-request
    ``timeout`` (seconds, total). ``goodput``: SLOs in ms, e.g. ``{"ttft": 500, "tpot": 50}``.

    With no ``models`` (or ``emulator=True``) the embedded emulator serves the requests with a
    cadence of ``first_token`` seconds to the first token and ``per_token`` after that.
    """

    models: Sequence[str] = ()
    concurrency: int = 10
    requests: int | None = None
    duration: float | None = None
    request_rate: float | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    sweep: Sequence[int] = ()
    warmup: int = 0
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
    goodput_slos: dict[str, float] = field(init=False, repr=False, default_factory=dict)
    """The parsed ``goodput`` SLOs in ms (set from ``goodput``)."""

    def __post_init__(self) -> None:
        self.goodput_slos = parse_goodput(self.goodput)
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
        if self.prompts is not None and not self.prompts:
            raise ConfigurationError("prompts is empty")
        if not self.models and self.emulator is False:
            raise ConfigurationError("name at least one model (provider/model) to benchmark")
        for model in self.models:
            split_model(model)

    def levels(self) -> list[dict[str, Any]]:
        """The load levels, one run per model each (a description dict per level)."""
        total = self.requests
        if total is None and self.duration is None:
            total = DEFAULT_REQUESTS
        base: dict[str, Any] = {"num_requests": total, "duration_limit": self.duration}
        out: list[dict[str, Any]] = []
        if self.request_rate is None:
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
            caps: Sequence[int | None] = self.sweep or [self.max_concurrency]
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

    def connection_limit(self) -> int:
        """Enough pooled connections for the widest level (0 = unlimited)."""
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
                {"first_token": self.first_token, "per_token": self.per_token}
                if self.uses_emulator
                else None
            ),
        }


class RunState:
    """One model under one load level while it runs: the records so far and live counters."""

    def __init__(self, model: str, load: dict[str, Any]) -> None:
        self.model = model
        self.load = load
        self.label = f"{model} @ {describe_load(load)}"
        self.total: int | None = load.get("num_requests")
        self.duration_limit: float | None = load.get("duration_limit")
        self.records: list[RequestRecord] = []
        self.started: float | None = None
        self.ended: float | None = None
        self.finished = False
        self.in_flight = 0
        self.cancelled = 0
        self.warmup_failed = 0

    def elapsed(self) -> float:
        """Seconds since the measured part of the run began."""
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else monotonic()) - self.started

    def summary(self, slos: Mapping[str, float]) -> RunSummary:
        """The run's figures (partial when it was stopped)."""
        return summarize(
            self.model,
            dict(self.load),
            list(self.records),
            self.elapsed(),
            goodput_slos=slos,
            interrupted=not self.finished,
            cancelled=self.cancelled,
            warmup_failed=self.warmup_failed,
        )


@dataclass
class BenchResult:
    """Every run's summary (records included), the configuration and how the benchmark ended."""

    runs: list[RunSummary]
    config: dict[str, Any]
    interrupted: bool = False
    emulator_url: str | None = None
    date: str = ""

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        """One run: a flat vLLM-style dict; several runs: a list of them."""
        from ._report import result_json

        return result_json(self)

    def table(self) -> str:
        """The printed report."""
        from ._report import render_table

        return render_table(self)

    def write_json(self, path: str) -> None:
        """Write :meth:`to_json` to ``path``."""
        from ._report import write_json

        write_json(self, path)

    def write_jsonl(self, path: str) -> None:
        """One JSON line per request (every run), with its timings in ms."""
        from ._report import write_jsonl

        write_jsonl(self, path)

    def write_csv(self, path: str) -> None:
        """One CSV row per request (every run), scalar columns only."""
        from ._report import write_csv

        write_csv(self, path)

    def plot(self, path: str) -> None:
        """Latency distributions and throughput over time as an image (needs matplotlib)."""
        from ._report import plot

        plot(self, path)


class Benchmark:
    """A benchmark that can be stopped: ``await Benchmark(config).run()``.

    ``client``: your own :class:`~aiollm.Client` (not closed here); by default one is made
    (pointed at the embedded emulator when the config uses it). ``progress``: a stream for
    the progress line (default stderr; ``False`` for none). :meth:`stop` ends the benchmark
    early: requests in flight are cancelled and not counted, and :meth:`run` returns what
    had finished. :meth:`result` gives the figures so far at any time.
    """

    def __init__(
        self,
        config: BenchConfig,
        *,
        client: Client | None = None,
        progress: TextIO | bool | None = None,
    ) -> None:
        self.config = config
        self._client = client
        if progress is False:
            self._progress: ProgressLine | None = None
        else:
            out = sys.stderr if progress in (None, True) else progress
            assert not isinstance(out, bool)
            self._progress = ProgressLine(out)
        self._states: list[RunState] = []
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._params: dict[str, Any] = dict(config.params)
        if config.max_tokens is not None:
            self._params.setdefault("max_tokens", config.max_tokens)
        self._prompts = list(config.prompts) if config.prompts is not None else None
        self.emulator_url: str | None = None
        self.date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop now: cancel the requests in flight (not counted) and keep what finished."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    def result(self) -> BenchResult:
        """Every run so far (the one in progress, if any, partially)."""
        slos = self.config.goodput_slos
        runs = [s.summary(slos) for s in self._states if s.started is not None]
        return BenchResult(
            runs=runs,
            config=self.config.describe(),
            interrupted=self._stopped or any(not s.finished for s in self._states),
            emulator_url=self.emulator_url,
            date=self.date,
        )

    async def run(self) -> BenchResult:
        """Run every level for every model; returns the result (partial after :meth:`stop`)."""
        cfg = self.config
        async with AsyncExitStack() as stack:
            client = await self._open_client(stack)
            with anyio.CancelScope() as scope:
                self._scope = scope
                for load in cfg.levels():
                    if self._stopped:
                        break
                    states = [RunState(model, load) for model in cfg.model_list]
                    self._states.extend(states)
                    if cfg.models_together:
                        async with anyio.create_task_group() as tg:
                            for state in states:
                                tg.start_soon(self._run_one, client, state)
                    else:
                        for state in states:
                            await self._run_one(client, state)
            self._scope = None
        return self.result()

    # -- internals -----------------------------------------------------------------------------
    async def _open_client(self, stack: AsyncExitStack) -> Client:
        if self._client is not None:
            return self._client
        cfg = self.config
        limit = cfg.connection_limit()
        if cfg.uses_emulator:
            from ..testing import Cadence, Emulator

            emu = Emulator(
                cadence=Cadence(cfg.first_token, cfg.per_token),
                reply_tokens=cfg.max_tokens or 64,
            )
            await stack.enter_async_context(emu)
            self.emulator_url = emu.url
            client: Client = emu.client(connection_limit=limit)
        else:
            client = Client(connection_limit=limit)
        await stack.enter_async_context(client)
        return client

    def _prompt(self, index: int) -> Messages:
        if self._prompts is not None:
            return self._prompts[index % len(self._prompts)]
        return synthetic_prompt(index, self.config.input_len, self.config.seed)

    async def _run_one(self, client: Client, state: RunState) -> None:
        """Warm up, then run the measured load of one model at one level."""
        cfg = self.config
        load = state.load
        if self._stopped:
            return
        width = load["concurrency"] or load["max_concurrency"] or cfg.warmup
        if cfg.warmup:
            warm = RunState(state.model, load)
            warm.started = monotonic()
            await self._fixed(client, warm, min(cfg.warmup, width or 1), cfg.warmup, None)
            state.warmup_failed = sum(1 for r in warm.records if not r.ok)
        state.started = monotonic()
        deadline = state.started + cfg.duration if cfg.duration is not None else None
        try:
            async with anyio.create_task_group() as tg:
                if self._progress is not None:
                    tg.start_soon(self._progress.follow, state)
                if load["request_rate"] is None:
                    await self._fixed(client, state, load["concurrency"], state.total, deadline)
                else:
                    await self._paced(client, state, load, deadline)
                state.finished = True
                tg.cancel_scope.cancel()
        finally:
            state.ended = monotonic()
            if self._progress is not None:
                self._progress.done(state, "" if state.finished else "(stopped)")

    async def _fixed(
        self,
        client: Client,
        state: RunState,
        workers: int,
        total: int | None,
        deadline: float | None,
    ) -> None:
        """``workers`` loops, each sending its next request when the previous one ended."""
        counter = itertools.count()

        async def worker() -> None:
            for index in counter:
                if total is not None and index >= total:
                    return
                if deadline is not None and monotonic() >= deadline:
                    return
                await self._request(client, state, index, 0.0)

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)

    async def _paced(
        self,
        client: Client,
        state: RunState,
        load: Mapping[str, Any],
        deadline: float | None,
    ) -> None:
        """Arrivals at ``request_rate`` with gamma gaps (shape ``burstiness``), optionally capped."""
        rate = math.inf if load["request_rate"] == "inf" else float(load["request_rate"])
        shape = float(load["burstiness"] or 1.0)
        cap = load["max_concurrency"]
        total: int | None = state.total
        rng = random.Random(self.config.seed)
        slots = anyio.CapacityLimiter(cap) if cap else None

        async def arrive(index: int) -> None:
            if slots is None:
                await self._request(client, state, index, 0.0)
                return
            t = monotonic()
            async with slots:
                await self._request(client, state, index, monotonic() - t)

        async with anyio.create_task_group() as tg:
            at = monotonic()
            for index in itertools.count():
                if total is not None and index >= total:
                    break
                if index and not math.isinf(rate):
                    at += rng.gammavariate(shape, 1.0 / (rate * shape))
                if deadline is not None and at >= deadline:
                    break
                wait = at - monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                tg.start_soon(arrive, index)

    async def _request(self, client: Client, state: RunState, index: int, queued: float) -> None:
        """Send one streamed request and record its timings (errors are recorded, not raised)."""
        record = RequestRecord(model=state.model, index=index, queued=queued)
        clock = monotonic
        times = record.delta_times
        usage: Usage | None = None
        chars = 0
        stream = None
        state.in_flight += 1
        t0 = clock()
        assert state.started is not None
        record.start = t0 - state.started
        try:
            stream = client.stream(
                state.model,
                self._prompt(index),
                timeout=self.config.timeout,
                max_retries=self.config.max_retries,
                **self._params,
            )
            async with stream:
                record.headers = clock() - t0
                async for event in stream:
                    kind = type(event)
                    if kind is TextDelta:
                        times.append(clock() - t0)
                        chars += len(event.text)  # type: ignore[union-attr]
                    elif kind is Usage:
                        usage = event  # type: ignore[assignment]
            record.e2el = clock() - t0
        except Exception as exc:  # every failure is a figure of the run, never fatal to it
            record.e2el = clock() - t0
            record.error = error_key(exc)
            record.error_message = str(exc)[:500]
        except BaseException:
            state.cancelled += 1
            raise
        finally:
            state.in_flight -= 1
            if stream is not None:
                record.attempts = stream.attempts
        record.output_chars = chars
        if usage is not None and usage.output_tokens is not None:
            record.output_tokens = usage.output_tokens
            record.tokens_from_usage = True
        else:
            record.output_tokens = len(times)
        if usage is not None:
            record.input_tokens = usage.input_tokens
        state.records.append(record)


async def run(
    config: BenchConfig | None = None,
    *,
    client: Client | None = None,
    progress: TextIO | bool | None = False,
    **settings: Any,
) -> BenchResult:
    """Run a benchmark and return its result: ``await aiollm.bench.run(models=[...], concurrency=8)``.

    Pass a :class:`BenchConfig` or its fields as keyword arguments. No progress line by
    default (``progress=True`` draws one on stderr).
    """
    if config is None:
        config = BenchConfig(**settings)
    elif settings:
        raise ConfigurationError("pass either a BenchConfig or its fields, not both")
    return await Benchmark(config, client=client, progress=progress).run()
