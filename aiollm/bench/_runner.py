"""Load generation: fixed concurrency or paced arrivals, warm-up, sweeps, stop with partial results."""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import random
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio

from .. import (
    AuthenticationError,
    Client,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    TextDelta,
    Usage,
)
from ._capacity import CapacitySearch, StepTelemetry, capacity_summary, is_throttling, judge
from ._config import BenchConfig
from ._metrics import RequestRecord, error_key
from ._progress import ProgressLine
from ._result import BenchResult, RunState, monotonic
from ._workload import Messages, synthetic_prompt

__all__ = ["FATAL_ERRORS", "Benchmark", "run"]

FATAL_ERRORS = (
    ConfigurationError,
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    QuotaExceededError,
)
"""Failures no retry can fix: the first one stops the benchmark."""


class Benchmark:
    """A benchmark that can be stopped: ``await Benchmark(config).run()``.

    ``client``: your own :class:`~aiollm.Client` (not closed here); by default one is made
    (pointed at the embedded emulator when the config uses it). ``progress``: a stream for
    the progress line (``True``: stderr; by default nothing is printed). :meth:`stop` ends the
    benchmark early: requests in flight are cancelled and not counted, and :meth:`run`
    returns what had finished. :meth:`result` gives the figures so far at any time.

    A request that fails for a reason no retry can fix (:data:`FATAL_ERRORS`: a missing or
    rejected key, no permission, an unknown model, an exhausted quota) stops the benchmark
    at once; :attr:`stopped_by` says why.
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
        if progress is None or progress is False:
            self._progress: ProgressLine | None = None
        else:
            self._progress = ProgressLine(sys.stderr if progress is True else progress)
        self.stopped_by: str | None = None
        """The error that stopped the benchmark (one no retry can fix), else None."""
        self.capacity: dict[str, Any] | None = None
        """The answer and steps of a capacity search (``find_max``), once it ran."""
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
            stopped_by=self.stopped_by,
            capacity=self.capacity,
        )

    async def run(self) -> BenchResult:
        """Run every level for every model; returns the result (partial after :meth:`stop`)."""
        cfg = self.config
        async with AsyncExitStack() as stack:
            client = await self._open_client(stack)
            with anyio.CancelScope() as scope:
                self._scope = scope
                if cfg.find_max is not None:
                    await self._search(client)
                    self._scope = None
                    return self.result()
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

    # -- capacity search ------------------------------------------------------------------------
    async def _search(self, client: Client) -> None:
        """Search each model's capacity (:mod:`._capacity`); the answer goes to :attr:`capacity`."""
        cfg = self.config
        integer = cfg.find_max == "concurrency"
        key = "max_concurrency" if integer else "max_request_rate"
        answers: list[dict[str, Any]] = []
        for model in cfg.model_list:
            search = CapacitySearch(
                start=cfg.search_start,
                limit=cfg.search_limit,
                resolution=cfg.resolution,
                repeats=cfg.repeats,
                integer=integer,
            )

            async def step(value: float, model: str = model) -> dict[str, Any]:
                return await self._step(client, model, value)

            found = await search.run(step, lambda: self._stopped)
            found["model"] = model
            found[key] = found.pop("answer")
            found["steps"] = search.steps
            found["summary"] = capacity_summary(found, key, cfg.capacity_slos)
            answers.append(found)
        first = answers[0] if answers else {}
        self.capacity = {
            "search": cfg.find_max,
            "unit": "concurrent requests" if integer else "requests/s",
            "slos": {slo.name: slo.limit for slo in cfg.capacity_slos},
            "count_throttling": cfg.count_throttling,
            "step_duration": cfg.step_duration,
            "drain": cfg.drain_time,
            "ramp": cfg.ramp,
            "max_retries": cfg.effective_retries,
            **first,
        }
        if len(answers) > 1:
            self.capacity["models"] = answers

    async def _step(self, client: Client, model: str, value: float) -> dict[str, Any]:
        """One step of steady load at ``value``: run, watch, judge."""
        cfg = self.config
        state = RunState(model, cfg.step_load(value))
        self._states.append(state)
        limiter = client.limiter(model.partition("/")[0])
        telemetry = StepTelemetry()
        early = ""
        budget = max(3.0, 2.0 * _error_budget(cfg) * value * cfg.step_duration)
        # a cool-down left by the previous step would hold this one back: let it pass first
        with anyio.move_on_after(60.0):
            while limiter.cooling_down:
                await anyio.sleep(0.02)

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal early
            tick = 0.02
            while True:
                await anyio.sleep(tick)
                telemetry.samples += 1
                if limiter.cooling_down:
                    telemetry.cooldown_s += tick
                if state.started is None:
                    continue
                now = monotonic()
                if now > state.started + cfg.step_duration + cfg.drain_time:
                    scope.cancel()  # what is left is unfinished: the step saturated
                    return
                failed = sum(
                    1
                    for r in state.records
                    if not r.ok and (cfg.count_throttling or not is_throttling(r.error))
                )
                if failed > budget:
                    early = f"stopped early: {failed} errors, past the error budget"
                    scope.cancel()
                    return

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, scope)
                await self._run_one(client, state)
                tg.cancel_scope.cancel()
        state.ended = state.ended or monotonic()
        state.finished = not self._stopped
        verdict, figures = judge(
            state, cfg.capacity_slos, count_throttling=cfg.count_throttling, early_stop=early
        )
        summary = state.summary(cfg.goodput_slos)
        f = summary.figures
        return {
            "load": value,
            ("concurrency" if cfg.find_max == "concurrency" else "request_rate"): value,
            "duration": round(summary.duration, 4),
            "verdict": verdict.verdict,
            "reason": verdict.reason,
            "slo_values": verdict.values,
            **figures,
            "request_throughput": f["request_throughput"],
            "output_throughput": f["output_throughput"],
            "median_ttft_ms": f["median_ttft_ms"],
            "p99_ttft_ms": f["p99_ttft_ms"],
            "median_tpot_ms": f["median_tpot_ms"],
            "p95_tpot_ms": f["p95_tpot_ms"],
            "p99_e2el_ms": f["p99_e2el_ms"],
            "cooldown_s": round(telemetry.cooldown_s, 3),
            "limiter_wait_ms": None,
            "quota_remaining": None,
        }

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
            if cfg.quota_rps is not None:
                emu.app.middlewares.append(quota_middleware(cfg.quota_rps))
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
        limit = state.duration_limit
        deadline = state.started + limit if limit is not None else None
        try:
            async with anyio.create_task_group() as tg:
                if self._progress is not None:
                    tg.start_soon(self._progress.follow, state)
                if load["request_rate"] is None:
                    await self._fixed(client, state, load["concurrency"], state.total, deadline)
                else:
                    await self._paced(client, state, load, limit)
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
        duration: float | None,
    ) -> None:
        """Arrivals at ``request_rate`` with gamma gaps (shape ``burstiness``), optionally capped.

        With a ``ramp``, the rate first rises linearly from nothing over that many seconds;
        those requests are not counted, and the measured part (``duration``) begins after it.
        """
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
            ramp = self.config.ramp
            if ramp > 0 and not math.isinf(rate):
                warm = RunState(state.model, dict(load))
                warm.started = at
                end = at + ramp
                for index in itertools.count():
                    level = max(0.05, (at - warm.started) / ramp)
                    at += rng.gammavariate(shape, 1.0 / (rate * level * shape))
                    if at >= end:
                        break
                    wait = at - monotonic()
                    if wait > 0:
                        await anyio.sleep(wait)
                    tg.start_soon(self._request, client, warm, index, 0.0)
                at = end
                wait = at - monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                state.started = at
            begun = state.started if state.started is not None else at
            deadline = begun + duration if duration is not None else None
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
                max_retries=self.config.effective_retries,
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
            if isinstance(exc, FATAL_ERRORS) and self.stopped_by is None:
                self.stopped_by = f"{record.error}: {record.error_message}"
                self.stop()
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


def _error_budget(cfg: BenchConfig) -> float:
    """The error-rate SLO of a capacity search."""
    return next((s.limit for s in cfg.capacity_slos if s.name == "error_rate"), 0.01)


def quota_middleware(rps: float) -> Any:
    """An aiohttp middleware answering HTTP 429 above ``rps`` requests per second.

    A token bucket refilled at ``rps`` holding at most two requests, so bursts above the
    rate are refused at once, with ``retry-after-ms`` saying when the next one is free;
    token endpoints are not limited.
    """
    from aiohttp import web

    bucket = {"level": 2.0, "at": monotonic()}

    @web.middleware
    async def quota(request: web.Request, handler: Any) -> Any:
        if "token" in request.path.lower() or request.method != "POST":
            return await handler(request)
        now = monotonic()
        level = min(2.0, bucket["level"] + (now - bucket["at"]) * rps)
        bucket["at"] = now
        if level < 1.0:
            bucket["level"] = level
            wait_ms = (1.0 - level) / rps * 1000.0
            body = b'{"error": {"message": "rate limit exceeded", "type": "rate_limit", '
            body += b'"code": "rate_limit_exceeded"}}'
            headers = {"Content-Type": "application/json", "retry-after-ms": f"{wait_ms:.0f}"}
            return web.Response(status=429, body=body, headers=headers)
        bucket["level"] = level - 1.0
        return await handler(request)

    return quota
