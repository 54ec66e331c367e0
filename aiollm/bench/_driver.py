"""Sending one run's requests: warm-up, then fixed concurrency, paced or traced arrivals.

A :class:`Driver` runs in every process that sends load. In a multi-process run
(``config.shard`` is ``(k, n)``) it sends its share: its request ``i`` is request ``i * n + k``
of the whole run, which fixes the prompt, the trace entry (and so the arrival time) and the
multi-turn session it belongs to.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

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
from ._config import BenchConfig
from ._metrics import RequestRecord, error_key
from ._progress import ProgressLine
from ._result import RunState, monotonic
from ._selfwatch import old_objects_frozen
from ._telemetry import CURRENT, BenchHooks
from ._workload import LocalTokenizer, Messages, Workload

if TYPE_CHECKING:
    from ..testing import Emulator

__all__ = ["FATAL_ERRORS", "Driver", "open_client", "start_emulator"]

FATAL_ERRORS = (
    ConfigurationError,
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    QuotaExceededError,
)
"""Failures no retry can fix: the first one stops the benchmark."""


async def start_emulator(config: BenchConfig, stack: AsyncExitStack) -> Emulator:
    """The embedded emulator ``config`` describes, running until ``stack`` closes."""
    from ..testing import Cadence, Emulator, Quota

    quotas = {}
    if config.quota_rps is not None:
        # a bucket of a tenth of a second's requests: bursts above the rate are refused
        quota = Quota(rate=config.quota_rps, burst=max(1.0, config.quota_rps / 10))
        quotas = {model.partition("/")[0]: quota for model in config.model_list}
    emu = Emulator(
        cadence=Cadence(config.first_token, config.per_token),
        reply_tokens=config.max_tokens or 64,
        quotas=quotas,
    )
    await stack.enter_async_context(emu)
    return emu


async def open_client(
    config: BenchConfig, stack: AsyncExitStack, settings: dict[str, Any] | None = None
) -> tuple[Client, str | None]:
    """The bench's client, open until ``stack`` closes, and the emulator's URL if it started one.

    It points at ``settings``' servers when given, else at a new embedded emulator when the
    config uses one, else at the services the environment names. Its hooks fill each
    record's quota telemetry.
    """
    url = None
    if settings is None and config.uses_emulator:
        emu = await start_emulator(config, stack)
        settings, url = emu.settings(), emu.url
    options: dict[str, Any] = {
        "connection_limit": config.connection_limit(),
        "hooks": [BenchHooks()],
        "read_times": True,  # event times are when their bytes arrived
    }
    if settings is not None:
        options.update(providers=settings, env={})
    client = await stack.enter_async_context(Client(**options))
    return client, url


async def _sleep_until(at: float) -> None:
    """Sleep until ``at`` (:func:`monotonic`); at once when it has passed."""
    wait = at - monotonic()
    if wait > 0:
        await anyio.sleep(wait)


class Driver:
    """Sends the requests of one run at a time through ``client`` and records each one.

    ``on_fatal`` is told of the first failure no retry can fix (:data:`FATAL_ERRORS`);
    ``progress`` draws the run's progress line.
    """

    def __init__(
        self,
        config: BenchConfig,
        client: Client,
        *,
        on_fatal: Callable[[str], None],
        progress: ProgressLine | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self._on_fatal = on_fatal
        self._progress = progress
        self._params: dict[str, Any] = dict(config.params)
        if config.max_tokens is not None:
            self._params.setdefault("max_tokens", config.max_tokens)
        tokenizer = LocalTokenizer(config.tokenizer) if config.tokenizer else None
        out_len = config.output_len
        if out_len is None and (config.output_len_range or config.pin_output):
            out_len = config.max_tokens
        self.workload = Workload(
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

    def _whole(self, index: int) -> int:
        """This process's request (or session) ``index`` counted in the whole run."""
        worker, workers = self.config.shard
        return index * workers + worker

    async def run(
        self, state: RunState, before_start: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Warm up, then run the measured load ``state`` describes (``before_start`` between)."""
        cfg = self.config
        load = state.load
        sends = 0 not in (load["concurrency"], load["max_concurrency"], state.total)
        if cfg.warmup and sends:
            width = load["concurrency"] or load["max_concurrency"] or cfg.warmup
            warm = RunState(state.model, load)
            warm.started = monotonic()
            await self._fixed(warm, min(cfg.warmup, width), cfg.warmup, None)
            state.warmup_failed = sum(1 for r in warm.records if not r.ok)
        with old_objects_frozen():  # its one full collection comes before the start
            if before_start is not None:
                await before_start()
            state.started = monotonic()
            limit = state.duration_limit
            deadline = state.started + limit if limit is not None else None
            try:
                async with anyio.create_task_group() as tg:
                    if self._progress is not None:
                        tg.start_soon(self._progress.follow, state)
                    if not sends:
                        pass  # an empty share of a multi-process run
                    elif load.get("trace_speed"):
                        await self._traced(state, load, deadline)
                    elif load["request_rate"] is None:
                        streams, total = load["concurrency"], state.total
                        await self._fixed(state, streams, total, deadline, turns=cfg.turns)
                    else:
                        await self._paced(state, load, limit)
                    state.finished = True
                    tg.cancel_scope.cancel()
            finally:
                state.ended = monotonic()
                if self._progress is not None:
                    self._progress.done(state, "" if state.finished else "(stopped)")

    async def _fixed(
        self,
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
            return self._whole(index)

        async def worker() -> None:
            while True:
                if turns <= 1:
                    index = more()
                    if index is None:
                        return
                    await self._request(state, index, 0.0)
                    continue
                session = self._whole(next(sessions))
                history, users = self.workload.session(session, turns)
                for turn, user in enumerate(users):
                    index = more()
                    if index is None:
                        return
                    if turn and think > 0:
                        await anyio.sleep(think)
                    history = [*history, {"role": "user", "content": user}]
                    reply = await self._request(
                        state, index, 0.0, messages=history, session=session, turn=turn
                    )
                    if reply is None:
                        break  # the session cannot go on without its reply
                    history = [*history, {"role": "assistant", "content": reply}]

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)

    async def _arrive(
        self, state: RunState, index: int, slots: anyio.CapacityLimiter | None
    ) -> None:
        """Send request ``index`` now, or when one of ``slots`` is free (the wait is recorded)."""
        if slots is None:
            await self._request(state, index, 0.0)
            return
        t = monotonic()
        async with slots:
            await self._request(state, index, monotonic() - t)

    async def _paced(
        self, state: RunState, load: Mapping[str, Any], duration: float | None
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
                    await _sleep_until(at)
                    tg.start_soon(self._request, warm, self._whole(index), 0.0)
                at = end
                await _sleep_until(at)
                state.started = at
            begun = state.started if state.started is not None else at
            deadline = begun + duration if duration is not None else None
            for index in itertools.count():
                if total is not None and index >= total:
                    break
                if index and not math.isinf(rate):
                    at += rng.gammavariate(shape, 1.0 / (rate * shape))
                elif worker and not math.isinf(rate):
                    at += worker / (rate * workers)  # the processes' arrivals interleave
                if deadline is not None and at >= deadline:
                    break
                await _sleep_until(at)
                tg.start_soon(self._arrive, state, self._whole(index), slots)

    async def _traced(
        self, state: RunState, load: Mapping[str, Any], deadline: float | None
    ) -> None:
        """Arrivals at the trace's times divided by ``trace_speed`` (its lengths in the prompts).

        In a multi-process run each process replays its share of the requests, each at its own
        recorded time from the run's common start.
        """
        trace = self.workload.trace
        assert trace is not None and state.started is not None
        speed = float(load["trace_speed"])
        cap = load["max_concurrency"]
        slots = anyio.CapacityLimiter(cap) if cap else None
        worker, workers = self.config.shard
        total = state.total
        if total is None:  # one replay: this process's share of it
            total = len(range(worker, len(trace), workers))
        span = trace[-1].at + 1.0  # a trace replayed again starts after the last request
        async with anyio.create_task_group() as tg:
            for local in range(total):
                index = self._whole(local)
                laps, i = divmod(index, len(trace))
                at = state.started + (laps * span + trace[i].at) / speed
                if deadline is not None and at >= deadline:
                    break
                await _sleep_until(at)
                tg.start_soon(self._arrive, state, index, slots)

    async def _request(
        self,
        state: RunState,
        index: int,
        queued: float,
        *,
        messages: Messages | None = None,
        session: int | None = None,
        turn: int | None = None,
    ) -> str | None:
        """Send request ``index`` of the run, streamed; record its timings (errors too).

        Returns the reply's text (None when it failed).
        """
        record = RequestRecord(
            model=state.model, index=index, queued=queued, session=session, turn=turn
        )
        params = self._params
        if messages is None:
            prompt = self.workload.prompt(index)
            messages = prompt.messages
            if prompt.output_len is not None:
                params = {**params, "max_tokens": prompt.output_len}
                if self.config.pin_output:
                    params["ignore_eos"] = True
                    params["min_tokens"] = prompt.output_len
        record.prompt_chars, record.prompt_tokens = self.workload.count(messages)
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
            stream = self.client.stream(
                state.model,
                messages,
                timeout=self.config.timeout,
                max_retries=self.config.effective_retries,
                **params,
            )

            def since_sent() -> float:
                """When the latest bytes came off the socket, not when this task got to run."""
                at = stream.read_at
                return (at if at is not None and at > t0 else clock()) - t0

            async with stream:
                record.headers = clock() - t0
                async for event in stream:
                    kind = type(event)
                    if kind is TextDelta:
                        times.append(now := since_sent())
                        if record.answer_ttft is None:
                            record.answer_ttft = now
                        texts.append(event.text)  # type: ignore[union-attr]
                    elif kind is ReasoningDelta:
                        times.append(now := since_sent())
                        if record.reasoning_ttft is None:
                            record.reasoning_ttft = now
                    elif kind is Usage:
                        usage = event  # type: ignore[assignment]
            record.e2el = since_sent()  # the end arrived with the last bytes read
        except Exception as exc:  # every failure is a figure of the run, never fatal to it
            record.e2el = clock() - t0
            record.error = error_key(exc)
            record.error_message = str(exc)[:500]
            if isinstance(exc, FATAL_ERRORS):
                self._on_fatal(f"{record.error}: {record.error_message}")
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
        if not record.ok:
            await anyio.lowlevel.checkpoint()  # a failure that took no time lets a stop through
        return reply if record.ok else None
