"""``--workers N``: the load from N processes, aggregated exactly from every request's record.

How many (:func:`plan`): ``workers`` when given; else one process per
:data:`LOAD_PER_PROCESS` of the highest load the benchmark asks for, up to the cores this
process may use, and one when the load cannot be shared.

Every run (a model at a load level, or a step of a capacity search) is shared out by the
parent (:func:`share`): the concurrency, the request rate (N independent Poisson streams add up
to one of the total rate), the requests and the concurrency cap are split. Request ``i`` of
worker ``k`` is request ``i * N + k`` of the whole run, so a trace's requests keep their
recorded times and a multi-turn session stays whole in one process. The workers warm up, start
the measured part together, and send back every request's record; the parent puts them on one
clock and summarises them once (percentiles of the whole, never averages of percentiles), or
judges the step on all of them. Each process measures itself; the run reports the worst.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import AsyncExitStack
from multiprocessing.connection import Connection
from types import ModuleType, TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._capacity import StepTelemetry
from ._config import DEFAULT_REQUESTS, BenchConfig
from ._driver import Driver, open_client
from ._result import RunState, monotonic
from ._search import measure
from ._selfwatch import SelfWatch, merge_client

__all__ = ["LOAD_PER_PROCESS", "WorkerPool", "plan", "share"]

LOAD_PER_PROCESS = 32
"""The load one process sends before ``workers`` defaults to more: 32 requests in flight
(a concurrency or a concurrency cap) or 32 requests/s (a rate, a trace's mean rate, the
highest rate a capacity search may try)."""


def _cores() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _peak(config: BenchConfig) -> tuple[float, str]:
    """The highest load the benchmark asks for, and its description."""
    if config.find_max is not None:
        unit = "" if config.find_max == "concurrency" else " req/s"
        what = config.find_max.replace("_", " ")
        return config.search_limit, f"a search of the {what} up to {config.search_limit:g}{unit}"
    if config.trace is not None:
        rate = len(config.trace) * config.trace_speed / max(1.0, config.trace[-1].at)
        return rate, f"the trace's {rate:.3g} req/s"
    if config.request_rate is None:
        top = max(config.sweep or [config.concurrency])
        return top, f"concurrency {top}"
    if math.isinf(config.request_rate):
        width = config.max_concurrency or config.requests or DEFAULT_REQUESTS
        return width, f"{width} requests at once"
    return config.request_rate, f"{config.request_rate:g} req/s"


def plan(config: BenchConfig, *, own_client: bool = False) -> tuple[int, str]:
    """How many processes send the load, and why (``own_client``: a client was given)."""
    if own_client:
        return 1, "the benchmark uses the client it was given"
    if config.workers is not None:
        return config.workers, f"workers={config.workers} was given"
    if config.models_together or config.runs > 1:
        return 1, "auto: models run together and repeated runs stay in one process"
    load, what = _peak(config)
    wanted = math.ceil(load / LOAD_PER_PROCESS)
    if wanted <= 1:
        return 1, f"auto: {what} is within one process's {LOAD_PER_PROCESS}"
    cores = _cores()
    n = min(cores, wanted, min(config.widths(), default=wanted))
    if n <= 1:
        why = "one core" if cores < 2 else "a level too narrow to share"
        return 1, f"auto: {what} is above {LOAD_PER_PROCESS} per process, but {why}"
    return n, f"auto: {what} is above {LOAD_PER_PROCESS} per process; {n} of {cores} cores"


def share(load: dict[str, Any], n: int, k: int) -> dict[str, Any]:
    """Worker ``k``'s share (of ``n``) of a run's load description."""

    def part(total: int | None) -> int | None:
        return None if total is None else len(range(k, total, n))

    rate = load["request_rate"]
    return {
        **load,
        "concurrency": part(load["concurrency"]),
        "request_rate": rate if rate in (None, "inf") else float(rate) / n,
        "max_concurrency": part(load["max_concurrency"]),
        "num_requests": part(load["num_requests"]),
    }


class WorkerPool:
    """``n`` processes, each with its own client, running their share of each run on demand.

    ``settings``: the providers' settings of the embedded emulator, else each process's
    client reads the environment. ``on_fatal`` hears of a failure no retry can fix.
    """

    def __init__(
        self,
        config: BenchConfig,
        n: int,
        settings: dict[str, Any] | None,
        *,
        on_fatal: Callable[[str], None],
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._config = config
        self._n = n
        self._settings = settings
        self._on_fatal = on_fatal
        self._barrier = self._context.Barrier(n)
        self._stop = self._context.Event()
        self._conns: list[Connection] = []
        self._procs: list[Any] = []

    async def __aenter__(self) -> WorkerPool:
        for k in range(self._n):
            mine, theirs = self._context.Pipe()
            config = dataclasses.replace(self._config, shard=(k, self._n), workers=1)
            worker = _Worker(theirs, config, self._settings, self._barrier, self._stop)
            proc = self._context.Process(target=worker.main, daemon=True)
            # a worker needs nothing of the caller's script: without this, each new process
            # would import it again (running a script with no ``if __name__ == "__main__"``)
            main, sys.modules["__main__"] = sys.modules["__main__"], ModuleType("__main__")
            try:
                proc.start()
            finally:
                sys.modules["__main__"] = main
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            for conn in self._conns:
                try:
                    conn.send(None)
                except OSError:
                    pass  # the process has gone
            for proc in self._procs:
                await anyio.to_thread.run_sync(proc.join, 10.0)
                if proc.is_alive():
                    proc.terminate()
                    await anyio.to_thread.run_sync(proc.join, 5.0)
            for conn in self._conns:
                conn.close()

    def stop(self) -> None:
        """Stop every worker: the requests in flight are cancelled, what finished comes back."""
        self._stop.set()
        self._barrier.abort()

    async def run(self, state: RunState, *, step: bool) -> StepTelemetry:
        """Run ``state``'s load shared over the workers; their records are merged into it."""
        n = self._n
        for k, conn in enumerate(self._conns):
            conn.send((state.model, share(state.load, n, k), step))
        parts: list[dict[str, Any]] = []

        async def receive(k: int) -> None:
            try:
                part = await anyio.to_thread.run_sync(self._conns[k].recv)
            except (EOFError, OSError):
                part = {"stopped_by": f"worker process {k} ended before its run did"}
            if part.get("stopped_by"):
                self._on_fatal(part["stopped_by"])
            if "records" in part:
                parts.append(part)

        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for k in range(n):
                    tg.start_soon(receive, k)
        _merge(state, parts)
        state.finished = len(parts) == n and all(p["finished"] for p in parts)
        return StepTelemetry.merge(p["telemetry"] for p in parts)


def _merge(state: RunState, parts: list[dict[str, Any]]) -> None:
    """The workers' shares of one run as one: records on one clock, counts summed."""
    begun = [p for p in parts if p["started"] is not None]
    if begun:
        state.started = min(p["started"] for p in begun)
        state.ended = max(p["ended"] for p in begun)
        for part in begun:
            shift = part["started"] - state.started
            for rec in part["records"]:
                rec.start += shift
                state.records.append(rec)
        state.records.sort(key=lambda r: r.start)
    state.cancelled = sum(p["cancelled"] for p in parts)
    state.warmup_failed = sum(p["warmup_failed"] for p in parts)
    state.client = merge_client(p["client"] for p in begun)


def _pass(barrier: Any) -> bool:
    """Wait until every worker is ready; False when the barrier was broken (stopping)."""
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        return False
    return True


@dataclasses.dataclass
class _Worker:
    """A worker process's end: its pipe, its config, and the barrier and stop flag of all."""

    conn: Connection
    config: BenchConfig
    settings: dict[str, Any] | None
    barrier: Any
    stop: Any

    def main(self) -> None:
        """The process: run each share the parent sends, until it sends None."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops us
        anyio.run(self.serve)

    async def serve(self) -> None:
        """Open a client, then run each job: a run's share, its records sent back."""
        current = anyio.CancelScope()
        fatal: list[str] = []

        def on_fatal(text: str) -> None:
            fatal.append(text)
            current.cancel()

        async def follow_stop() -> None:
            while not self.stop.is_set():
                await anyio.sleep(0.02)
            current.cancel()

        async def start_together() -> None:
            if not await anyio.to_thread.run_sync(_pass, self.barrier):
                current.cancel()
                await anyio.lowlevel.checkpoint()

        async with AsyncExitStack() as stack:
            client, _ = await open_client(self.config, stack, self.settings)
            watch = SelfWatch()
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(watch.follow)
            tg.start_soon(follow_stop)
            stack.callback(tg.cancel_scope.cancel)
            driver = Driver(self.config, client, on_fatal=on_fatal)
            while True:
                try:
                    job = await anyio.to_thread.run_sync(self.conn.recv)
                except EOFError:
                    return  # the parent has gone
                if job is None:
                    return
                model, load, step = job
                state = RunState(model, load)
                telemetry = StepTelemetry()
                error = None
                with anyio.CancelScope() as current:
                    if self.stop.is_set() or fatal:
                        current.cancel()
                    try:
                        telemetry = await measure(
                            driver, state, step=step, before_start=start_together
                        )
                    except Exception as exc:  # reported to the parent, which stops the others
                        worker = self.config.shard[0]
                        error = f"worker process {worker}: {type(exc).__name__}: {exc}"
                state.ended = state.ended or monotonic()
                self.conn.send(
                    {
                        "records": state.records,
                        "started": state.started,
                        "ended": state.ended,
                        "cancelled": state.cancelled,
                        "warmup_failed": state.warmup_failed,
                        "finished": state.finished,
                        "client": watch.window(state.started, state.ended),
                        "telemetry": telemetry,
                        "stopped_by": fatal[0] if fatal else error,
                    }
                )
