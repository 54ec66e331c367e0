"""The benchmark: its runs (load levels of each model, or a capacity search), stopped at will.

Each run is sent by a :class:`~._driver.Driver` in this process, or shared over worker
processes (:mod:`._workers`) when the load is high or ``workers`` asks for it.
"""

from __future__ import annotations

import datetime as _dt
import sys
from contextlib import AsyncExitStack
from typing import Any, TextIO

import anyio

from .. import Client, ConfigurationError
from ._capacity import StepTelemetry
from ._compare import confidence_intervals
from ._config import BenchConfig
from ._driver import FATAL_ERRORS, Driver, open_client, start_emulator
from ._progress import ProgressLine
from ._result import BenchResult, RunState
from ._search import measure, search
from ._selfwatch import SelfWatch
from ._workers import WorkerPool, plan

__all__ = ["FATAL_ERRORS", "Benchmark", "run"]


class Benchmark:
    """A benchmark that can be stopped: ``await Benchmark(config).run()``.

    ``client``: your own :class:`~aiollm.Client` (not closed here; the load then runs in this
    process); by default one is made (pointed at the embedded emulator when the config uses
    it), or, when the load is high or ``workers`` asks for it, one in each worker process
    (:attr:`processes`). ``progress``: a stream for the progress line (``True``: stderr; by
    default nothing is printed; with worker processes, a line as each run ends). :meth:`stop`
    ends the benchmark early: requests in flight are cancelled and not counted, and :meth:`run`
    returns what had finished. :meth:`result` gives the figures so far at any time (with
    worker processes, of the runs that ended).

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
        self.processes, self.processes_reason = plan(config, own_client=client is not None)
        """How many processes send the load, and why (see :func:`~._workers.plan`)."""
        self._states: list[RunState] = []
        self._watch = SelfWatch()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._driver: Driver | None = None
        self._pool: WorkerPool | None = None
        self.emulator_url: str | None = None
        self.date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop now: cancel the requests in flight (not counted) and keep what finished."""
        self._stopped = True
        if self._pool is not None:
            self._pool.stop()  # the workers stop; what they finished comes back
        elif self._scope is not None:
            self._scope.cancel()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    def _fatal(self, reason: str) -> None:
        """A failure no retry can fix: the first one stops the benchmark."""
        if self.stopped_by is None:
            self.stopped_by = reason
            self.stop()

    def result(self) -> BenchResult:
        """Every run so far (the one in progress, if any, partially)."""
        slos = self.config.goodput_slos
        runs = []
        for state in self._states:
            if state.started is not None:
                run = state.summary(slos)
                run.figures.update(state.client or self._watch.window(state.started, state.ended))
                run.figures["client_processes_reason"] = self.processes_reason
                runs.append(run)
        return BenchResult(
            runs=runs,
            config={**self.config.describe(), "workers": self.processes},
            interrupted=self._stopped or any(not s.finished for s in self._states),
            emulator_url=self.emulator_url,
            date=self.date,
            stopped_by=self.stopped_by,
            capacity=self.capacity,
            extra=(
                {"confidence_intervals": confidence_intervals(runs)} if self.config.runs > 1 else {}
            ),
        )

    async def run(self) -> BenchResult:
        """Run every level for every model; returns the result (partial after :meth:`stop`)."""
        cfg = self.config
        async with AsyncExitStack() as stack:
            await self._open(stack)
            with anyio.CancelScope() as scope:
                self._scope = scope
                if cfg.find_max is not None:
                    self.capacity = await search(self)
                    self.capacity["client_processes"] = self.processes
                    self.capacity["client_processes_reason"] = self.processes_reason
                else:
                    await self._run_levels()
            self._scope = None
        return self.result()

    # -- hooks of the capacity search (:mod:`._search`) ------------------------------------------
    def add_state(self, state: RunState) -> None:
        """Count ``state`` among the benchmark's runs."""
        self._states.append(state)

    async def run_step(self, state: RunState) -> StepTelemetry:
        """Run the capacity step ``state`` describes, watched (in each process)."""
        return await self._measure(state, step=True)

    # -- internals -----------------------------------------------------------------------------
    async def _open(self, stack: AsyncExitStack) -> None:
        """Start what sends the load: this process's client, or the worker processes."""
        cfg = self.config
        if self.processes > 1:
            settings = None
            if cfg.uses_emulator:
                emu = await start_emulator(cfg, stack)
                settings, self.emulator_url = emu.settings(), emu.url
            self._pool = WorkerPool(cfg, self.processes, settings, on_fatal=self._fatal)
            await stack.enter_async_context(self._pool)
            return
        client = self._client
        if client is None:
            client, self.emulator_url = await open_client(cfg, stack)
        self._driver = Driver(cfg, client, on_fatal=self._fatal, progress=self._progress)
        watch = await stack.enter_async_context(anyio.create_task_group())
        watch.start_soon(self._watch.follow)
        stack.callback(watch.cancel_scope.cancel)

    async def _run_levels(self) -> None:
        """Each load level for each model (each repeat), one after another or models together."""
        cfg = self.config
        for load in cfg.levels():
            if self._stopped:
                break
            if cfg.runs > 1:
                states = [
                    RunState(model, {**load, "repeat": rep})
                    for rep in range(cfg.runs)
                    for model in cfg.model_list
                ]
            else:
                states = [RunState(model, load) for model in cfg.model_list]
            self._states.extend(states)
            if cfg.models_together:
                async with anyio.create_task_group() as tg:
                    for state in states:
                        tg.start_soon(self._measure, state)
            else:
                for state in states:
                    await self._measure(state)

    async def _measure(self, state: RunState, *, step: bool = False) -> StepTelemetry:
        """Warm up, then run the load ``state`` describes, here or shared over the workers."""
        if self._stopped:
            return StepTelemetry()
        if self._pool is None:
            assert self._driver is not None
            return await measure(self._driver, state, step=step)
        telemetry = await self._pool.run(state, step=step)
        if self._progress is not None:
            self._progress.done(state, "" if state.finished else "(stopped)")
        return telemetry


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
