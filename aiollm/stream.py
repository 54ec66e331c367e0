"""``Stream``: one call's attempts over the transport, its events as one async iterator.

An attempt (:meth:`Stream._open`): limiter slot, credential, request, response head, and the
body fed to the provider's sans-IO decoder. One retry loop (:meth:`Stream._failed`) decides,
only while nothing reached the caller; after that a failure raises
:class:`~aiollm.StreamInterrupted` with ``.partial``. See ``docs/architecture.md``.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from itertools import chain
from typing import TYPE_CHECKING

import anyio

from ._redact import scrub_exception
from .errors import (
    AiollmError,
    APIError,
    AuthenticationError,
    ProtocolError,
    RateLimitError,
    StreamInterrupted,
)
from .events import Completion, Event, ResponseInfo, TextDelta, Usage, fold
from .hooks import CallObserver

if TYPE_CHECKING:
    from .auth import TokenSource
    from .hooks import Outcome
    from .limits import Lease, ProviderLimiter, RetryPolicy
    from .providers import HTTPRequest, Prepared, Provider, ResponseDecoder
    from .transport import Response, Timeout, Transport

__all__ = ["State", "Stream"]

log = logging.getLogger("aiollm.stream")


class State(enum.Enum):
    """Where a :class:`Stream` is: ``NEW`` (an attempt is to be sent), ``OPEN`` (a response is
    being read), ``FINISHED`` (:attr:`Stream.completion` is ready), ``FAILED`` (its error was
    raised) or ``CLOSED`` (closed before it finished; :attr:`Stream.partial` has what came)."""

    NEW = "new"
    OPEN = "open"
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"


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
        observe: Callable[[], CallObserver | None] = lambda: None,
    ) -> None:
        self._transport, self._provider, self._prepared = transport, provider, prepared
        self._auth, self._retry, self._limiter = auth, retry, limiter
        self._timeout, self._headers = timeout, extra_headers
        self._observe: Callable[[], CallObserver | None] | None = observe
        self._obs = _UNOBSERVED  # the call's hooks / OpenTelemetry, made at its first attempt
        self._deadline = math.inf  # the call's total timeout (anyio's clock), set at its start
        self._request: HTTPRequest | None = None
        self.state = State.NEW
        self.attempts = 0  # HTTP requests sent, retries included
        self._lease: Lease | None = None
        self._resp: Response | None = None
        self._decoder: ResponseDecoder | None = None
        self._credential: str | None = None
        self._error: AiollmError | None = None
        self._refreshed, self._retries, self._slept = False, 0, 0.0
        self._pending: Iterator[Event] = iter(())
        self._batches: list[list[Event]] = []  # every event delivered, folded when asked
        self._delivered = False
        self._completion: Completion | None = None

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
        self._completion = self._completion or self.partial
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
        except BaseException as exc:
            self._close(State.CLOSED, exc)
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
            if state is State.FINISHED:
                return False
            if state is State.FAILED:
                self._raise()
            if state is State.CLOSED:
                raise AiollmError(
                    "the stream was closed before it finished; `stream.partial` has what arrived",
                    provider=self.provider,
                )
            if state is State.OPEN and open_only:
                return True
            resp, decoder = self._resp, self._decoder
            try:
                if state is State.NEW or resp is None or decoder is None:
                    await self._open()
                    continue
                chunk = await resp.next_chunk()
                events = decoder.feed(chunk) if chunk else decoder.end()
            except AiollmError as exc:
                if isinstance(exc, APIError) and decoder is not None and decoder.status >= 300:
                    assert self._request is not None
                    exc = self._provider.explain(exc, self._request)  # what to check
                await self._failed(exc)
                continue
            except Exception as exc:  # e.g. an error body or token answer nested too deep
                await self._failed(_typed(exc, self.provider))
                continue
            except BaseException as exc:
                self._close(State.CLOSED, exc)  # cancelled, or a bug: never leave it open
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
        """One attempt: slot, credential, request, response head, decoder."""
        provider, limiter, obs = self._provider, self._limiter, self._obs
        if self._observe is not None:  # the call starts: its observer and its deadline
            obs = self._obs = self._observe() or _UNOBSERVED
            self._observe = None
            total = self._timeout.total
            self._deadline = math.inf if total is None else anyio.current_time() + total
        cooling, started = limiter.cooling_down, time.monotonic()
        if self._lease is None:
            estimate = limiter.estimate(self._prepared.call)
            self._lease = await limiter.acquire(estimate, self._deadline)
        elif self.attempts:
            await limiter.pace(self._deadline)
        obs.waited(time.monotonic() - started, cooling)
        self._credential = None
        fetches, started = getattr(self._auth, "fetches", None), time.monotonic()
        credential = await self._auth.get(self._transport)
        if getattr(self._auth, "fetches", None) != fetches:
            obs.token_fetched(time.monotonic() - started)
        request = self._request = provider.build_request(self._prepared, credential)
        # The request is about to be sent: the service may now reject the credential.
        self.attempts += 1
        self._credential = credential
        added = obs.request(request, self.attempts)
        headers = {**(self._headers or {}), **added} if added else self._headers
        timeout = self._timeout.within(self._deadline - anyio.current_time())
        resp = await self._transport.open(
            request, timeout=timeout, provider=provider.name, extra_headers=headers
        )
        # The response head arrived: the provider builds this response's decoder from it.
        limiter.observe(resp.headers)
        obs.response(resp.status, resp.headers)
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
            self._obs.chunk(events)
        return self._delivered

    async def _failed(self, exc: AiollmError) -> None:
        """The one retry loop: try again if nothing reached the caller and ``exc`` allows it."""
        scrub_exception(exc, self._secrets())  # an error holds no secret the client sent
        self._drop_response()
        self._provider.failed(self._prepared, exc)
        if isinstance(exc, RateLimitError) and exc.status is not None:  # the server's answer
            self._limiter.throttled(exc.retry_after, self._retry.max_retry_after)
        if not self._delivered and self.state is not State.CLOSED:
            rejected = self._credential if isinstance(exc, AuthenticationError) else None
            if rejected is not None and self._auth.refreshable and not self._refreshed:
                # Refresh once when the service rejected a token we sent; a failure to get
                # one in the first place (bad AK/SK) cannot be helped by fetching again.
                self._refreshed = True
                self._auth.invalidate(rejected)
                log.debug("%s: token rejected, refreshing once", self.provider)
                self._obs.retry(exc, self.attempts, 0.0, True)
                self._new_attempt()
                return
            self._retries += 1
            remaining = self._deadline - anyio.current_time()
            delay = self._retry.delay(exc, self._retries, self._slept, remaining)
            if delay is not None:
                # The attempt failed and will be retried.
                log.debug("%s: attempt failed (%s); retry in %.2fs", self.provider, exc, delay)
                self._obs.retry(exc, self.attempts, delay, False)
                self._new_attempt()
                self._slept += delay
                if not isinstance(exc, RateLimitError):  # the limiter's cool-down waits
                    await anyio.sleep(delay)
                return
        self._fail(exc)

    def _new_attempt(self) -> None:
        self._decoder, self._pending, self._batches = None, iter(()), []
        self.state = State.NEW

    def _fail(self, exc: AiollmError) -> None:
        self._error = exc
        self._close(State.FAILED)

    def _secrets(self) -> tuple[str, ...]:
        secrets = self._transport.secrets
        return (*secrets, self._credential) if self._credential else secrets

    def _raise(self) -> None:
        exc = self._error
        assert exc is not None
        scrub_exception(exc, self._secrets())
        if self._delivered and not isinstance(exc, StreamInterrupted):
            partial = self.partial
            message = f"the stream broke off after {len(partial.text)} characters: {exc}"
            raise StreamInterrupted(
                message, partial=partial, error=exc, provider=self.provider
            ) from exc
        raise exc

    def _finish(self) -> None:
        """The exchange is over: the limiter settles; connection and slot go back at its end."""
        self.state = State.FINISHED
        lease, self._lease = self._lease, None
        if lease is not None:
            usage = next(
                (e for b in reversed(self._batches) for e in b[::-1] if type(e) is Usage), None
            )
            if isinstance(usage, Usage):
                lease.settle(usage.total_tokens)
        resp, self._resp = self._resp, None
        if resp is not None:  # it gives the connection back itself, and the slot at the end
            resp.finish(lease.release if lease is not None else None)
        elif lease is not None:
            lease.release()
        self._limiter.succeeded()
        self._close(State.FINISHED)

    def _drop_response(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.close()

    def _close(self, state: State, exc: BaseException | None = None) -> None:
        self._drop_response()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
        if self.state is State.NEW or self.state is State.OPEN:
            self.state = state
        obs, self._obs = self._obs, _UNOBSERVED
        if obs is not _UNOBSERVED:  # the call ended: its observer hears it once
            error = self._error if self._error is not None else exc
            outcome: Outcome = "completed" if self.state is State.FINISHED else "closed"
            if isinstance(error, anyio.get_cancelled_exc_class()):
                outcome = "cancelled"
            elif error is not None:
                outcome = "error"
            obs.end(outcome, self._completion_or_none(), error)

    def _completion_or_none(self) -> Completion | None:
        try:
            return self.completion if self.state is State.FINISHED else self.partial
        except Exception:  # the completion of a broken response: observe the end anyway
            return None


def _typed(exc: Exception, provider: str) -> ProtocolError:
    """A bare exception from an error path, as the typed error the caller gets."""
    message = f"could not decode the response ({type(exc).__name__}: {exc})"
    error = ProtocolError(message, provider=provider)
    error.__cause__ = exc
    return error


_UNOBSERVED = CallObserver()
"""The observer of a call no one observes (every point does nothing)."""
