"""``Stream``: one call's attempts (:meth:`Stream._open`), its events as one async iterator.

One retry loop (:meth:`Stream._failed`), only while nothing reached the caller; after that a
failure raises :class:`~aiollm.StreamInterrupted`. See ``docs/architecture.md``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from itertools import chain
from typing import TYPE_CHECKING

import anyio

from ._attempts import UNOBSERVED, Attempts
from ._redact import scrub_exception
from .errors import (
    AiollmError,
    APIError,
    ProtocolError,
    StreamInterrupted,
)
from .events import Completion, Event, ResponseInfo, TextDelta, Usage, fold

if TYPE_CHECKING:
    from .providers import Prepared, Provider, ResponseDecoder
    from .transport import Response

__all__ = ["State", "Stream"]


class State(enum.Enum):
    """Where a :class:`Stream` is: ``NEW`` (an attempt is to be sent), ``OPEN`` (a response is
    being read), ``FINISHED`` (:attr:`Stream.completion` is ready), ``FAILED`` (its error was
    raised) or ``CLOSED`` (closed before it finished; :attr:`Stream.partial` has what came)."""

    NEW = "new"
    OPEN = "open"
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"


# Module names for the members: looking one up on the enum class costs a __getattr__ hook.
_NEW, _OPEN, _FINISHED, _FAILED, _CLOSED = State


class Stream:
    """One call's response as an async iterator of :data:`~aiollm.events.Event`."""

    def __init__(self, provider: Provider, prepared: Prepared, attempts: Attempts) -> None:
        self._provider, self._prepared, self._call = provider, prepared, attempts
        self.state = _NEW
        self.read_at: float | None = None
        """When the bytes of the events being delivered were read (``time.perf_counter``), if
        the client was made with ``read_times=True``; else None."""
        self._resp: Response | None = None
        self._decoder: ResponseDecoder | None = None
        self._error: AiollmError | None = None
        self._entered, self._loops = False, 0
        self._pending: Iterator[Event] = iter(())
        self._batches: list[list[Event]] = []  # every event delivered, folded when asked
        self._delivered = False
        self._completion: Completion | None = None

    # -- public API ---------------------------------------------------------------------
    @property
    def attempts(self) -> int:
        """How many HTTP requests this stream has sent (retries included)."""
        return self._call.count

    @property
    def provider(self) -> str:
        """The provider name (``dashscope``, ``qianfan``, ``gateway``, ``openai``)."""
        return self._provider.name

    @property
    def model(self) -> str:
        """The model (the part of the model string after ``provider/``)."""
        return self._prepared.call.model

    @property
    def completion(self) -> Completion:
        """The aggregated result, once the stream has finished (see :meth:`final`)."""
        if self.state is not _FINISHED:
            why = f"the stream is {self.state.value}: `await stream.final()`, or `stream.partial`"
            raise AiollmError(why, provider=self.provider)
        self._completion = self._completion or self.partial
        return self._completion

    @property
    def partial(self) -> Completion:
        """The completion of the events that have arrived so far (all of them once finished)."""
        events: Iterator[Event] = chain.from_iterable(self._batches)
        decoder = self._decoder
        if decoder is not None and self.state is not _FINISHED:
            events = chain(events, decoder.abort())  # e.g. a running usage total
        return fold(events, provider=self.provider, model=self.model)

    async def final(self) -> Completion:
        """Consume the rest of the stream and return the aggregated :class:`Completion`."""
        async for _ in self:
            pass
        return self.completion

    async def text_deltas(self) -> AsyncIterator[str]:
        """Only the text, as it arrives."""
        async for event in self:
            if type(event) is TextDelta:
                yield event.text

    async def __aenter__(self) -> Stream:
        self._entered = True  # closed when the block exits, not when a loop over it does
        try:
            await self._advance(open_only=True)
        except BaseException as exc:
            self._close(_CLOSED, exc)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        # An async generator: cheaper per event than a call of __anext__ (no coroutine each).
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        self._loops += 1
        try:
            while True:
                for event in self._pending:
                    yield event
                if not await self._advance():
                    return
        finally:
            self._loops -= 1
            if not self._loops and not self._entered and self.state is _OPEN:
                self._close(_CLOSED)  # a plain `async for` left early: close it now

    async def __anext__(self) -> Event:
        for event in self._pending:
            return event
        while await self._advance():
            for event in self._pending:
                return event
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close the response and release the connection and the concurrency slot."""
        self._close(_CLOSED)

    def __del__(self) -> None:
        # A plain `async for` that breaks drops the stream: close the socket then.
        lease = getattr(getattr(self, "_call", None), "lease", None)
        if getattr(self, "_resp", None) is not None or lease is not None:
            self._close(_CLOSED)

    def __repr__(self) -> str:
        return f"<Stream {self.provider}/{self.model} {self.state.value}>"

    # -- the driver ---------------------------------------------------------------------
    async def _advance(self, *, open_only: bool = False) -> bool:
        """Queue the next events (True), or False once the stream is over; raise its error."""
        while True:
            state = self.state
            if state is _FINISHED:
                return False
            if state is _FAILED:
                self._raise()
            if state is _CLOSED:
                raise AiollmError(
                    "the stream was closed before it finished; `stream.partial` has what arrived",
                    provider=self.provider,
                )
            if state is _OPEN and open_only:
                return True
            resp, decoder = self._resp, self._decoder
            try:
                if state is _NEW or resp is None or decoder is None:
                    await self._open()
                    continue
                chunk = await resp.next_chunk()
                self.read_at = resp.read_at
                events = decoder.feed(chunk) if chunk else decoder.end()
            except AiollmError as exc:
                if isinstance(exc, APIError) and decoder is not None and decoder.status >= 300:
                    exc = self._call.explain(exc)  # what to check
                await self._failed(exc)
                continue
            except Exception as exc:  # e.g. an error body or token answer nested too deep
                await self._failed(ProtocolError.wrapping(exc, self.provider))
                continue
            except BaseException as exc:
                self._close(_CLOSED, exc)  # cancelled, or a bug: never leave it open
                raise
            delivered = self._deliver(events)
            if events and (len(events) > 1 or type(events[0]) is not ResponseInfo):
                resp.event_arrived()  # the idle timeout counts from here (not from bytes)
            if decoder.error is not None:
                if not delivered:
                    await self._failed(decoder.error)
                    continue
                self._fail(decoder.error)  # raised after these events
            elif decoder.finished or not chunk:
                self._finish()
            if events:
                return True

    async def _open(self) -> None:
        """One attempt (see :class:`~aiollm._attempts.Attempts`); a decoder for its response."""
        resp = self._resp = await self._call.open()
        self._decoder = self._provider.decoder(self._prepared, resp.status, resp.headers)
        self.state = _OPEN

    def _deliver(self, events: list[Event]) -> bool:
        """Queue events for the caller; True once anything but response facts reached it."""
        if events:
            self._pending = iter(events)
            self._batches.append(events)
            if not self._delivered:
                for event in events:
                    if type(event) is not ResponseInfo:
                        self._delivered = True
                        break
            self._call.obs.chunk(events)
        return self._delivered

    async def _failed(self, exc: AiollmError) -> None:
        """The one retry loop: try again if nothing reached the caller and ``exc`` allows it."""
        self._drop_response()
        may_retry = not self._delivered and self.state is not _CLOSED
        delay = self._call.retry_delay(exc, may_retry=may_retry)
        if delay is None:
            self._fail(exc)
            return
        self._new_attempt()
        if delay:
            await anyio.sleep(delay)

    def _new_attempt(self) -> None:
        self._decoder, self._pending, self._batches = None, iter(()), []
        self.state = _NEW

    def _fail(self, exc: AiollmError) -> None:
        self._error = exc
        self._close(_FAILED)

    def _raise(self) -> None:
        exc = self._error
        assert exc is not None
        scrub_exception(exc, self._call.secrets())
        if self._delivered and not isinstance(exc, StreamInterrupted):
            partial = self.partial
            message = f"the stream broke off after {len(partial.text)} characters: {exc}"
            raise StreamInterrupted(
                message, partial=partial, error=exc, provider=self.provider
            ) from exc
        raise exc

    def _finish(self) -> None:
        """The exchange is over: the limiter settles; connection and slot go back at its end."""
        self.state = _FINISHED
        resp, self._resp = self._resp, None
        self._call.finished(resp, self._usage())
        self._close(_FINISHED)

    def _usage(self) -> Usage | None:
        """The last usage delivered (the one that counts)."""
        for batch in reversed(self._batches):
            for event in reversed(batch):
                if type(event) is Usage:
                    return event
        return None

    def _drop_response(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.close()

    def _close(self, state: State, exc: BaseException | None = None) -> None:
        if self._resp is not None:
            self._drop_response()
        call = self._call
        if call.lease is not None:
            call.release()
        if self.state is _NEW or self.state is _OPEN:
            self.state = state
        if call.obs is not UNOBSERVED:  # its observer hears of the end, once
            error = self._error if self._error is not None else exc
            call.ended(self.state is _FINISHED, lambda: self.partial, error)
