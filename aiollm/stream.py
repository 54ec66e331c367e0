"""``Stream``: one call's attempts driven over the transport, its events as one async iterator.

Use it as ``async with client.stream(...) as s: async for ev in s`` (the response is closed
when the block exits), or as a plain ``async for ev in client.stream(...)`` (closed when the
loop ends or fails, or — after ``break`` — when the stream object is dropped). Cancelling the
task, a timeout and an error close the response immediately.

Each attempt: acquire the limiter's slot, get a credential, build the request, open it, and
feed the body to the provider's sans-IO :class:`~aiollm.providers.ResponseDecoder`. One retry
loop (:meth:`Stream._failed`) decides, only while nothing has reached the caller: a token the
service rejected is refreshed once, other retryable errors follow the client's
:class:`~aiollm.RetryPolicy`, and a rate limit cools the provider down. Once an event was
delivered, a failure ends the stream with :class:`~aiollm.StreamInterrupted` carrying the
partial :class:`~aiollm.Completion` (the original error is ``__cause__`` and ``.error``).

:attr:`Stream.partial` is the completion of what has arrived so far, at any time: after
``break``, after leaving ``async with`` early, or after a failure.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from itertools import chain
from typing import TYPE_CHECKING

import anyio

from .errors import AiollmError, AuthenticationError, RateLimitError, StreamInterrupted
from .events import Completion, Event, ResponseInfo, TextDelta, Usage, fold

if TYPE_CHECKING:
    from .auth import TokenSource
    from .limits import Lease, ProviderLimiter, RetryPolicy
    from .providers import Prepared, Provider, ResponseDecoder
    from .transport import Response, Timeout, Transport

__all__ = ["State", "Stream"]

log = logging.getLogger("aiollm.stream")


class State(enum.Enum):
    """Where a :class:`Stream` is in its life."""

    NEW = "new"
    """No response is open: the next attempt is still to be sent."""
    OPEN = "open"
    """A response is being read."""
    FINISHED = "finished"
    """The exchange ended normally; :attr:`Stream.completion` is ready."""
    FAILED = "failed"
    """The exchange ended with an error (raised to the caller)."""
    CLOSED = "closed"
    """The caller closed the stream before it finished (:attr:`Stream.partial` has what came)."""


class Stream:
    """One call's response as an async iterator of :data:`~aiollm.events.Event`."""

    def __init__(
        self,
        transport: Transport,
        provider: Provider,
        prepared: Prepared,
        *,
        auth: TokenSource,
        timeout: Timeout,
        extra_headers: Mapping[str, str] | None,
        retry: RetryPolicy,
        limiter: ProviderLimiter,
    ) -> None:
        self._transport = transport
        self._provider = provider
        self._prepared = prepared
        self._auth = auth
        self._timeout = timeout
        self._extra_headers = extra_headers
        self._retry = retry
        self._limiter = limiter
        self.state = State.NEW
        self._lease: Lease | None = None
        self._resp: Response | None = None
        self._decoder: ResponseDecoder | None = None
        self._credential: str | None = None
        self._error: AiollmError | None = None
        self._refreshed = False
        self._retries = 0
        self._slept = 0.0
        self._pending: Iterator[Event] = iter(())
        self._batches: list[list[Event]] = []
        """Every event delivered, as decoded (folded into the completion when asked)."""
        self._delivered = False
        self._completion: Completion | None = None
        self.attempts = 0
        """How many HTTP requests this stream has sent (retries included)."""

    # -- public API ---------------------------------------------------------------------
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
        if self.state is not State.FINISHED:
            raise AiollmError(
                f"the stream has not finished ({self.state.value}): iterate it to the end or "
                "use `await stream.final()`; `stream.partial` has what arrived",
                provider=self.provider,
            )
        if self._completion is None:
            self._completion = self.partial
        return self._completion

    @property
    def partial(self) -> Completion:
        """The completion of the events that have arrived so far (all of them once finished)."""
        events: Iterator[Event] = chain.from_iterable(self._batches)
        decoder = self._decoder
        if decoder is not None and self.state is not State.FINISHED:
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
        try:
            await self._advance(open_only=True)
        except BaseException:
            self._close(State.CLOSED)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        # An async generator: cheaper per event than a call of __anext__ (no coroutine each).
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            for event in self._pending:
                yield event
            if not await self._advance():
                return

    async def __anext__(self) -> Event:
        for event in self._pending:
            return event
        while await self._advance():
            for event in self._pending:
                return event
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close the response and release the connection and the concurrency slot."""
        self._close(State.CLOSED)

    def __del__(self) -> None:
        # A plain `async for` that breaks drops the stream: close the socket then.
        if getattr(self, "_resp", None) is not None or getattr(self, "_lease", None) is not None:
            self._close(State.CLOSED)

    def __repr__(self) -> str:
        return f"<Stream {self.provider}/{self.model} {self.state.value}>"

    # -- the driver ---------------------------------------------------------------------
    async def _advance(self, *, open_only: bool = False) -> bool:
        """Queue the next events (True), or False once the stream is over; raise its error."""
        while True:
            state = self.state
            if state is State.OPEN:
                if open_only:
                    return True
                resp, decoder = self._resp, self._decoder
                assert resp is not None and decoder is not None
                try:
                    chunk = await resp.next_chunk()
                    events = decoder.feed(chunk) if chunk else decoder.end()
                except AiollmError as exc:
                    await self._failed(exc)
                    continue
                except BaseException:
                    self._close(State.CLOSED)  # cancelled, or a bug: never leave it open
                    raise
                delivered = self._deliver(events)
                if decoder.error is not None:
                    if not delivered:
                        await self._failed(decoder.error)
                        continue
                    self._fail(decoder.error)  # raised after these events
                elif decoder.finished or not chunk:
                    self._finish()
                if events:
                    return True
            elif state is State.NEW:
                try:
                    await self._open()
                except AiollmError as exc:
                    await self._failed(exc)
                except BaseException:
                    self._close(State.CLOSED)
                    raise
            elif state is State.FINISHED:
                return False
            elif state is State.FAILED:
                self._raise()
            else:
                raise AiollmError(
                    "the stream was closed before it finished; `stream.partial` has what arrived",
                    provider=self.provider,
                )

    async def _open(self) -> None:
        """One attempt: slot, credential, request, response head, decoder."""
        provider = self._provider
        if self._lease is None:
            self._lease = await self._limiter.acquire()
        elif self.attempts:
            await self._limiter.pace()
        self._credential = None
        credential = await self._auth.get(self._transport)
        request = provider.build_request(self._prepared, credential)
        # The request is about to be sent: the service may now reject the credential.
        self.attempts += 1
        self._credential = credential
        resp = await self._transport.open(
            request,
            timeout=self._timeout,
            provider=provider.name,
            extra_headers=self._extra_headers,
        )
        # The response head arrived: the provider builds this response's decoder from it.
        self._resp = resp
        self._decoder = provider.decoder(self._prepared, resp.status, resp.headers)
        self.state = State.OPEN

    def _deliver(self, events: list[Event]) -> bool:
        """Queue events for the caller; True once anything but response facts reached it."""
        if events:
            self._pending = iter(events)
            self._batches.append(events)
            if not self._delivered:
                self._delivered = any(type(event) is not ResponseInfo for event in events)
        return self._delivered

    async def _failed(self, exc: AiollmError) -> None:
        """The one retry loop: try again if nothing reached the caller and ``exc`` allows it."""
        self._drop_response()
        self._provider.failed(self._prepared, exc)
        if isinstance(exc, RateLimitError):
            self._limiter.throttled(exc.retry_after)
        if not self._delivered and self.state is not State.CLOSED:
            rejected = self._credential if isinstance(exc, AuthenticationError) else None
            if rejected is not None and self._auth.refreshable and not self._refreshed:
                # Refresh once when the service rejected a token we sent; a failure to get
                # one in the first place (bad AK/SK) cannot be helped by fetching again.
                self._refreshed = True
                self._auth.invalidate(rejected)
                log.debug("%s: token rejected, refreshing once", self.provider)
                self._new_attempt()
                return
            self._retries += 1
            delay = self._retry.delay(exc, self._retries, self._slept)
            if delay is not None:
                # The attempt failed and will be retried.
                log.debug(
                    "%s: attempt %d failed (%s); retrying in %.2fs",
                    self.provider,
                    self._retries,
                    exc,
                    delay,
                )
                self._new_attempt()
                self._slept += delay
                if not isinstance(exc, RateLimitError):  # the limiter's cool-down waits
                    await anyio.sleep(delay)
                return
        self._fail(exc)

    def _new_attempt(self) -> None:
        self._decoder = None
        self._pending = iter(())
        self._batches = []
        self.state = State.NEW

    def _fail(self, exc: AiollmError) -> None:
        self._error = exc
        self._close(State.FAILED)

    def _raise(self) -> None:
        exc = self._error
        assert exc is not None
        if self._delivered and not isinstance(exc, StreamInterrupted):
            partial = self.partial
            raise StreamInterrupted(
                f"the stream broke off after {len(partial.text)} characters: {exc}",
                partial=partial,
                error=exc,
                provider=self.provider,
            ) from exc
        raise exc

    def _finish(self) -> None:
        """The exchange is over: the connection goes back, the limiter settles."""
        self.state = State.FINISHED
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.finish()  # it gives the connection back itself
        usage = next(
            (e for batch in reversed(self._batches) for e in reversed(batch) if type(e) is Usage),
            None,
        )
        if isinstance(usage, Usage):
            self._limiter.settle_tokens(usage.total_tokens)
        self._limiter.succeeded()
        self._release()

    def _drop_response(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.close()

    def _release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def _close(self, state: State) -> None:
        self._drop_response()
        self._release()
        if self.state is State.NEW or self.state is State.OPEN:
            self.state = state
