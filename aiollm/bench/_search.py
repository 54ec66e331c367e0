"""Running a capacity search: each step a measured run, watched and judged (:mod:`._capacity`).

:func:`measure` runs in the process that sends the load (every worker of a multi-process run,
each on its share); :func:`search` runs where the steps are decided, on the records of all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from ._capacity import CapacitySearch, StepTelemetry, capacity_summary, is_throttling, judge
from ._config import BenchConfig
from ._driver import Driver
from ._result import RunState, monotonic

__all__ = ["StepRunner", "measure", "search"]


class StepRunner(Protocol):
    """What the search needs of the benchmark that runs its steps."""

    config: BenchConfig

    @property
    def stopped(self) -> bool: ...

    def add_state(self, state: RunState) -> None: ...

    async def run_step(self, state: RunState) -> StepTelemetry:
        """Run the step ``state`` describes (:func:`measure`, in one or more processes)."""
        ...


def _error_budget(cfg: BenchConfig) -> float:
    """The error-rate SLO of a capacity search."""
    return next((s.limit for s in cfg.capacity_slos if s.name == "error_rate"), 0.01)


async def search(bench: StepRunner) -> dict[str, Any]:
    """Search each model's capacity (:mod:`._capacity`); returns the ``capacity`` dict."""
    cfg = bench.config
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
            return await _step(bench, model, value)

        found = await search.run(step, lambda: bench.stopped)
        found["model"] = model
        found[key] = found.pop("answer")
        found["steps"] = search.steps
        found["summary"] = capacity_summary(found, key, cfg.capacity_slos)
        answers.append(found)
    first = answers[0] if answers else {}
    capacity: dict[str, Any] = {
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
        capacity["models"] = answers
    return capacity


async def measure(
    driver: Driver,
    state: RunState,
    *,
    step: bool,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> StepTelemetry:
    """Run ``state``'s load through ``driver``; a capacity ``step`` also under watch.

    The watch samples the client's throttling cool-down, cancels what is unfinished
    ``drain_time`` after the step, and stops the step early when its errors pass twice the
    error budget of its load.
    """
    telemetry = StepTelemetry()
    if not step:
        await driver.run(state, before_start)
        return telemetry
    cfg = driver.config
    limiter = driver.client.limiter(state.model.partition("/")[0])
    value = float(state.load["request_rate"] or state.load["concurrency"] or 0)
    budget = max(3.0, 2.0 * _error_budget(cfg) * value * cfg.step_duration)
    # a cool-down left by the previous step would hold this one back: let it pass first
    with anyio.move_on_after(60.0):
        while limiter.cooling_down:
            await anyio.sleep(0.02)

    async def watch(scope: anyio.CancelScope) -> None:
        tick = 0.02
        while True:
            await anyio.sleep(tick)
            telemetry.samples += 1
            if limiter.cooling_down:
                telemetry.cooldown_s += tick
            if state.started is None:
                continue
            if monotonic() > state.started + cfg.step_duration + cfg.drain_time:
                scope.cancel()  # what is left is unfinished: the step saturated
                return
            failed = sum(
                1
                for r in state.records
                if not r.ok and (cfg.count_throttling or not is_throttling(r.error))
            )
            if failed > budget:
                telemetry.early_stop = f"stopped early: {failed} errors, past the error budget"
                scope.cancel()
                return

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, scope)
            await driver.run(state, before_start)
            tg.cancel_scope.cancel()
    return telemetry


async def _step(bench: StepRunner, model: str, value: float) -> dict[str, Any]:
    """One step of steady load at ``value``: run and watch it, then judge all its records."""
    cfg = bench.config
    state = RunState(model, cfg.step_load(value))
    bench.add_state(state)
    telemetry = await bench.run_step(state)
    state.ended = state.ended or monotonic()
    state.finished = not bench.stopped
    verdict, figures = judge(
        state,
        cfg.capacity_slos,
        count_throttling=cfg.count_throttling,
        early_stop=telemetry.early_stop,
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
        "limiter_wait_ms": _mean_ms([r.limiter_wait for r in state.records]),
        "quota_remaining": min(
            (r.quota_remaining for r in state.records if r.quota_remaining is not None),
            default=None,
        ),
    }


def _mean_ms(values: list[float | None]) -> float | None:
    """The mean of the known values, in ms (None when none is known)."""
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known) * 1000.0, 4) if known else None
