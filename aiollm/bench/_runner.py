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
    ReasoningDelta,
    TextDelta,
    Usage,
)
from ._compare import confidence_intervals
from ._config import BenchConfig
from ._metrics import RequestRecord, error_key
from ._progress import ProgressLine
from ._result import BenchResult, RunState, monotonic
from ._search import search
from ._selfwatch import SelfWatch, old_objects_frozen
from ._telemetry import CURRENT, BenchHooks
from ._workload import LocalTokenizer, Messages, Workload

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
        self._watch = SelfWatch()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._params: dict[str, Any] = dict(config.params)
        if config.max_tokens is not None:
            self._params.setdefault("max_tokens", config.max_tokens)
        tokenizer = LocalTokenizer(config.tokenizer) if config.tokenizer else None
        out_len = config.output_len
        if out_len is None and (config.output_len_range or config.pin_output):
            out_len = config.max_tokens
        self._workload = Workload(
            prompts=list(config.prompts) if config.prompts is not None else None,
            conversations=list(config.conversations) if config.conversations else None,
            trace=list(config.trace) if config.trace is not None else None,
            input_len=config.input_len,
            input_len_range=config.input_len_range,
            output_len=out_len,
            output_len_range=config.output_len_range,
            shared_prefix_len=config.shared_prefix_len,
            tokenizer=tokenizer,
            seed=config.seed,
        )
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
        runs = []
        for state in self._states:
            if state.started is not None:
                run = state.summary(slos)
                run.figures.update(self._watch.window(state.started, state.ended))
                runs.append(run)
        return BenchResult(
            runs=runs,
            config=self.config.describe(),
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
        if cfg.workers > 1 and self._client is None:
            from ._workers import run_workers

            return await run_workers(cfg, cfg.workers, self.date)
        async with AsyncExitStack() as stack:
            client = await self._open_client(stack)
            watch = await stack.enter_async_context(anyio.create_task_group())
            watch.start_soon(self._watch.follow)
            stack.callback(watch.cancel_scope.cancel)
            with anyio.CancelScope() as scope:
                self._scope = scope
                if cfg.find_max is not None:
                    self.capacity = await search(self, client)
                    self._scope = None
                    return self.result()
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
                                tg.start_soon(self._run_one, client, state)
                    else:
                        for state in states:
                            await self._run_one(client, state)
            self._scope = None
        return self.result()

    # -- hooks of the capacity search (:mod:`._search`) ------------------------------------------
    def add_state(self, state: RunState) -> None:
        """Count ``state`` among the benchmark's runs."""
        self._states.append(state)

    async def run_state(self, client: Client, state: RunState) -> None:
        """Warm up, then run the measured load ``state`` describes."""
        await self._run_one(client, state)

    # -- internals -----------------------------------------------------------------------------
    async def _open_client(self, stack: AsyncExitStack) -> Client:
        if self._client is not None:
            return self._client
        cfg = self.config
        limit = cfg.connection_limit()
        if cfg.uses_emulator:
            from ..testing import Cadence, Emulator, Quota

            quotas = {}
            if cfg.quota_rps is not None:
                # a bucket of a tenth of a second's requests: bursts above the rate are refused
                quota = Quota(rate=cfg.quota_rps, burst=max(1.0, cfg.quota_rps / 10))
                quotas = {model.partition("/")[0]: quota for model in cfg.model_list}
            emu = Emulator(
                cadence=Cadence(cfg.first_token, cfg.per_token),
                reply_tokens=cfg.max_tokens or 64,
                quotas=quotas,
            )
            await stack.enter_async_context(emu)
            self.emulator_url = emu.url
            client: Client = emu.client(connection_limit=limit, hooks=[BenchHooks()])
        else:
            client = Client(connection_limit=limit, hooks=[BenchHooks()])
        await stack.enter_async_context(client)
        return client

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
        try:
            with old_objects_frozen():  # after its full collection: not part of the run
                state.started = monotonic()
                limit = state.duration_limit
                deadline = state.started + limit if limit is not None else None
                async with anyio.create_task_group() as tg:
                    if self._progress is not None:
                        tg.start_soon(self._progress.follow, state)
                    if load.get("trace_speed"):
                        await self._traced(client, state, load, deadline)
                    elif load["request_rate"] is None:
                        streams, total = load["concurrency"], state.total
                        await self._fixed(client, state, streams, total, deadline, turns=cfg.turns)
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
        *,
        turns: int = 1,
    ) -> None:
        """``workers`` loops, each sending its next request when the previous one ended.

        With ``turns`` > 1 each loop runs sessions: a session's user turns in order, each
        carrying the conversation so far, ``think_time`` apart.
        """
        counter = itertools.count()
        sessions = itertools.count()
        think = self.config.think_time

        def more() -> int | None:
            index = next(counter)
            if total is not None and index >= total:
                return None
            if deadline is not None and monotonic() >= deadline:
                return None
            return index

        async def worker() -> None:
            while True:
                if turns <= 1:
                    index = more()
                    if index is None:
                        return
                    await self._request(client, state, index, 0.0)
                    continue
                session = next(sessions)
                history, users = self._workload.session(session, turns)
                for turn, user in enumerate(users):
                    index = more()
                    if index is None:
                        return
                    if turn and think > 0:
                        await anyio.sleep(think)
                    history = [*history, {"role": "user", "content": user}]
                    reply = await self._request(
                        client, state, index, 0.0, messages=history, session=session, turn=turn
                    )
                    if reply is None:
                        break  # the session cannot go on without its reply
                    history = [*history, {"role": "assistant", "content": reply}]

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
        worker, workers = self.config.shard
        seed = self.config.seed
        rng = random.Random(seed if workers == 1 else seed * 1_000_003 + worker + 1)
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

    async def _traced(
        self,
        client: Client,
        state: RunState,
        load: Mapping[str, Any],
        deadline: float | None,
    ) -> None:
        """Arrivals at the trace's times divided by ``trace_speed`` (its lengths in the prompts)."""
        trace = self._workload.trace
        assert trace is not None and state.started is not None
        speed = float(load["trace_speed"])
        cap = load["max_concurrency"]
        slots = anyio.CapacityLimiter(cap) if cap else None
        total = state.total if state.total is not None else len(trace)
        span = trace[-1].at + 1.0  # a trace replayed again starts after the last request

        async def arrive(index: int) -> None:
            if slots is None:
                await self._request(client, state, index, 0.0)
                return
            t = monotonic()
            async with slots:
                await self._request(client, state, index, monotonic() - t)

        async with anyio.create_task_group() as tg:
            for index in range(total):
                laps, i = divmod(index, len(trace))
                at = state.started + (laps * span + trace[i].at) / speed
                if deadline is not None and at >= deadline:
                    break
                wait = at - monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                tg.start_soon(arrive, index)

    async def _request(
        self,
        client: Client,
        state: RunState,
        index: int,
        queued: float,
        *,
        messages: Messages | None = None,
        session: int | None = None,
        turn: int | None = None,
    ) -> str | None:
        """Send one streamed request and record its timings (errors are recorded, not raised).

        Returns the reply's text (None when it failed).
        """
        worker, workers = self.config.shard
        if workers > 1:
            index = index * workers + worker  # its place in the whole run
        record = RequestRecord(
            model=state.model, index=index, queued=queued, session=session, turn=turn
        )
        params = self._params
        if messages is None:
            prompt = self._workload.prompt(index)
            messages = prompt.messages
            if prompt.output_len is not None:
                params = {**params, "max_tokens": prompt.output_len}
                if self.config.pin_output:
                    params["ignore_eos"] = True
                    params["min_tokens"] = prompt.output_len
        record.prompt_chars, record.prompt_tokens = self._workload.count(messages)
        texts: list[str] = []
        clock = monotonic
        times = record.delta_times
        usage: Usage | None = None
        stream = None
        state.in_flight += 1
        t0 = clock()
        token = CURRENT.set((record, t0))
        assert state.started is not None
        record.start = t0 - state.started
        try:
            stream = client.stream(
                state.model,
                messages,
                timeout=self.config.timeout,
                max_retries=self.config.effective_retries,
                **params,
            )
            async with stream:
                record.headers = clock() - t0
                async for event in stream:
                    kind = type(event)
                    if kind is TextDelta:
                        # when its bytes came off the socket, not when this task got to run
                        at = stream.read_at
                        now = (at if at is not None and at > t0 else clock()) - t0
                        times.append(now)
                        if record.answer_ttft is None:
                            record.answer_ttft = now
                        texts.append(event.text)  # type: ignore[union-attr]
                    elif kind is ReasoningDelta:
                        at = stream.read_at
                        now = (at if at is not None and at > t0 else clock()) - t0
                        times.append(now)
                        if record.reasoning_ttft is None:
                            record.reasoning_ttft = now
                    elif kind is Usage:
                        usage = event  # type: ignore[assignment]
            at = stream.read_at  # the end arrived with the last bytes read
            record.e2el = (at if at is not None and at > t0 else clock()) - t0
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
            CURRENT.reset(token)
            state.in_flight -= 1
            if stream is not None:
                record.attempts = stream.attempts
        reply = "".join(texts)
        record.output_chars = len(reply)
        if usage is not None and usage.output_tokens is not None:
            record.output_tokens = usage.output_tokens
            record.tokens_from_usage = True
        else:
            record.output_tokens = len(times)
        if usage is not None:
            record.input_tokens = usage.input_tokens
        state.records.append(record)
        return reply if record.ok else None


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
