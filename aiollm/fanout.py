"""Bounded-concurrency helpers over many calls and streams, built on anyio task groups.

``calls`` are coroutines (``client.chat(...)``) or zero-argument callables returning awaitables
(``lambda: client.chat(...)``); callables are better for large fan-outs, since nothing is created
before a worker is free. Coroutines that never started are closed cleanly (no "never awaited"
warning) when the fan-out stops early.

Failure policy: by default the first error cancels every other call (closing their responses)
and is raised as is — not wrapped in an exception group. With ``return_exceptions=True``
(:func:`gather`, :func:`map`) errors are returned in place of results and nothing is cancelled.
Cancelling the caller cancels every child.

:func:`as_completed` and :func:`merge` are async iterators: use them as ``async for`` or, to
close everything at a point you choose, ``async with fanout.merge(...) as events``. Their
workers run in a task group hosted by one background task that the iterator owns, so breaking
out of a plain ``async for`` also cancels the children and closes every stream (when the
iterator is dropped, at once in CPython).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast, overload

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .events import Event
from .stream import Stream

__all__ = ["as_completed", "gather", "map", "merge", "race"]

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")

CallLike = Awaitable[T] | Callable[[], Awaitable[T]]


class _Calls(Generic[T]):
    """Normalises calls to thunks and closes coroutines that never started."""

    def __init__(self, calls: Iterable[CallLike[T]]) -> None:
        self.items = list(calls)
        self.started = [False] * len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def start(self, index: int) -> Awaitable[T]:
        self.started[index] = True
        item = self.items[index]
        if inspect.isawaitable(item):
            return item
        if callable(item):
            return item()
        raise TypeError(f"call {index} is neither awaitable nor a zero-argument callable: {item!r}")

    async def run_workers(
        self, worker: Callable[[TaskGroup], Coroutine[Any, Any, None]], concurrency: int | None
    ) -> None:
        """Run ``worker`` in ``concurrency`` tasks of one group; close unstarted calls after."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(_workers(concurrency, len(self))):
                    tg.start_soon(worker, tg)
        finally:
            self.close_unstarted()

    def close_unstarted(self) -> None:
        for item, started in zip(self.items, self.started, strict=True):
            if not started and inspect.iscoroutine(item):
                item.close()


def _workers(concurrency: int | None, n: int) -> int:
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 (got {concurrency})")
    return n if concurrency is None else min(concurrency, n)


async def gather(
    calls: Iterable[CallLike[T]],
    *,
    concurrency: int | None = None,
    return_exceptions: bool = False,
) -> list[T]:
    """Run ``calls`` at most ``concurrency`` at a time; results in input order.

    The first error cancels the rest and is raised, unless ``return_exceptions`` puts
    errors in the result list instead.
    """
    work = _Calls(calls)
    results: list[Any] = [None] * len(work)
    errors: list[BaseException] = []
    indexes = iter(range(len(work)))

    async def worker(tg: TaskGroup) -> None:
        for i in indexes:
            try:
                results[i] = await work.start(i)
            except Exception as exc:
                if return_exceptions:
                    results[i] = exc
                    continue
                if not errors:
                    errors.append(exc)
                tg.cancel_scope.cancel()
                return

    await work.run_workers(worker, concurrency)
    if errors:
        raise errors[0]
    return cast("list[T]", results)


async def map(
    fn: Callable[[U], Awaitable[T]],
    items: Iterable[U],
    *,
    concurrency: int | None = None,
    return_exceptions: bool = False,
) -> list[T]:
    """``[await fn(item) for item in items]``, at most ``concurrency`` at a time, in input order."""
    return await gather(
        [_bind(fn, item) for item in items],
        concurrency=concurrency,
        return_exceptions=return_exceptions,
    )


def _bind(fn: Callable[[U], Awaitable[T]], item: U) -> Callable[[], Awaitable[T]]:
    return lambda: fn(item)


async def race(calls: Iterable[CallLike[T]], *, stagger: float | None = None) -> T:
    """The first call to succeed wins; the others are cancelled and their responses closed.

    With ``stagger``, call ``i`` starts ``i * stagger`` seconds after the first unless one has
    already succeeded (hedged requests). If every call fails, the first error is raised.
    """
    work = _Calls(calls)
    if not len(work):
        raise ValueError("race() needs at least one call")
    winner: list[T] = []
    errors: list[BaseException] = []

    async def runner(i: int, tg: TaskGroup) -> None:
        if stagger:
            await anyio.sleep(i * stagger)
        try:
            result = await work.start(i)
        except Exception as exc:
            errors.append(exc)
            return
        if not winner:
            winner.append(result)
            tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(work)):
                tg.start_soon(runner, i, tg)
    finally:
        work.close_unstarted()
    if winner:
        return winner[0]
    raise errors[0]


class _Hosted(Generic[T]):
    """An async iterator fed by workers in a task group hosted by one owned background task."""

    def __init__(self, produce: Callable[[MemoryObjectSendStream[Any]], Awaitable[None]]) -> None:
        self._produce = produce
        self._send, self._receive = anyio.create_memory_object_stream[Any](0)
        self._host: asyncio.Task[None] | None = None
        self._done = False

    def __aiter__(self) -> _Hosted[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        if self._host is None:
            # The host must not reference this iterator, or dropping it could not cancel the host.
            self._host = asyncio.get_running_loop().create_task(_host(self._produce, self._send))
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            await self.aclose()
            raise StopAsyncIteration from None
        except BaseException:
            self._cancel()
            raise
        if isinstance(item, _Failure):
            await self.aclose()
            raise item.error
        return cast(T, item)

    def _cancel(self) -> None:
        self._done = True
        if self._host is not None and not self._host.done():
            self._host.cancel()
        self._receive.close()

    async def aclose(self) -> None:
        """Cancel every worker and wait until they (and their responses) are closed."""
        self._cancel()
        if self._host is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait({self._host})

    async def __aenter__(self) -> _Hosted[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A plain `async for` that breaks drops the iterator: cancel the workers then.
        host = getattr(self, "_host", None)
        if host is not None and not host.done():
            host.cancel()
        receive = getattr(self, "_receive", None)
        if receive is not None:
            receive.close()
        send = getattr(self, "_send", None)
        if send is not None and host is None:
            send.close()


async def _host(
    produce: Callable[[MemoryObjectSendStream[Any]], Awaitable[None]],
    send: MemoryObjectSendStream[Any],
) -> None:
    async with send:
        try:
            await produce(send)
        except Exception as exc:  # a call's error arrives as _Failure; this one is unexpected
            try:
                await send.send(_Failure(exc))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def as_completed(calls: Iterable[CallLike[T]], *, concurrency: int | None = None) -> _Hosted[T]:
    """Results of ``calls`` in completion order, at most ``concurrency`` running at a time.

    The first error is raised from the iterator after cancelling the other calls.
    """
    work = _Calls(calls)
    indexes = iter(range(len(work)))

    async def produce(send: MemoryObjectSendStream[Any]) -> None:
        async def worker(tg: TaskGroup) -> None:
            for i in indexes:
                try:
                    result: Any = await work.start(i)
                except Exception as exc:
                    result = _Failure(exc)
                await send.send(result)
                if isinstance(result, _Failure):
                    tg.cancel_scope.cancel()
                    return

        await work.run_workers(worker, concurrency)

    return _Hosted(produce)


@overload
def merge(streams: Mapping[K, Stream]) -> _Hosted[tuple[K, Event]]: ...
@overload
def merge(streams: Sequence[Stream]) -> _Hosted[tuple[int, Event]]: ...
def merge(streams: Mapping[K, Stream] | Sequence[Stream]) -> _Hosted[tuple[Any, Event]]:
    """One async iterator of ``(key, event)`` over several un-entered streams.

    Keys are the mapping's keys, or the indexes of a list. Every stream is opened, read
    concurrently and closed by the merge; breaking out (or an error in any stream, raised
    as is) closes them all.
    """
    pairs: list[tuple[Any, Stream]] = (
        list(streams.items()) if isinstance(streams, Mapping) else list(enumerate(streams))
    )

    async def produce(send: MemoryObjectSendStream[Any]) -> None:
        async def pump(key: Any, stream: Stream, tg: TaskGroup) -> None:
            try:
                async with stream:
                    async for event in stream:
                        await send.send((key, event))
            except Exception as exc:
                await send.send(_Failure(exc))
                tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                for key, stream in pairs:
                    tg.start_soon(pump, key, stream, tg)
        finally:
            for _, stream in pairs:
                await stream.aclose()

    return _Hosted(produce)
