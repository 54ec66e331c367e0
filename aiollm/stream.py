"""``Stream``: transport → framing → codec → one async iterator of uniform events.

Use it as ``async with client.stream(...) as s: async for ev in s`` (the response is closed
when the block exits), or as a plain ``async for ev in client.stream(...)`` (closed when the
loop ends or fails, or — after ``break`` — when the stream object is dropped: asyncio finalizes
the abandoned loop's iterator at its next turn, and the stream goes with it). Cancelling the
task, a timeout and an error close the response immediately.

Retries happen inside the stream and only while nothing has reached the caller: a token
rejected by the service is refreshed once, and retryable errors follow the client's
:class:`~aiollm.RetryPolicy`. Once an event was delivered, a failure ends the stream with
:class:`~aiollm.StreamInterrupted` carrying the partial :class:`~aiollm.Completion`, with the
original error as ``__cause__`` and ``.error``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio

from ._redact import scrub_exception
from .errors import (
    AiollmError,
    AuthenticationError,
    ProtocolError,
    RateLimitError,
    StreamInterrupted,
)
from .events import Completion, Event, Finish, SafetyNotice, TextDelta, Usage
from .framing import BodyKind, JSONFramer, SSEDecoder, sniff_body
from .transport import MAX_ERROR_BODY, Response, Timeout

if TYPE_CHECKING:
    from .client import Client
    from .hooks import CallObserver, Outcome
    from .limits import Lease, ProviderLimiter, RetryPolicy
    from .providers._base import Call, Codec, Provider

__all__ = ["Stream"]

log = logging.getLogger("aiollm.stream")


class Stream:
    """One call's response as an async iterator of :data:`~aiollm.events.Event`."""

    def __init__(
        self,
        client: Client,
        provider: Provider,
        call: Call,
        *,
        timeout: Timeout,
        extra_headers: Mapping[str, str] | None,
        retry: RetryPolicy,
        limiter: ProviderLimiter,
    ) -> None:
        self._client = client
        self._provider = provider
        self._call = call
        self._timeout = timeout
        self._extra_headers = extra_headers
        self._retry = retry
        self._limiter = limiter
        self._lease: Lease | None = None
        self._resp: Response | None = None
        self._codec: Codec | None = None
        self._credential: str | None = None
        self._framer: SSEDecoder | JSONFramer | None = None
        self._other: bytearray | None = None
        """The body so far, when it is neither an event stream nor JSON (an error page)."""
        self._pending: Iterator[Event] = iter(())
        self._error: AiollmError | None = None
        self._delivered = False
        self._finished = False
        self._closed = False
        self._auth_refreshed = False
        self._attempt = 0
        self._slept = 0.0
        self._deadline: float | None = None
        """When the call's ``total`` timeout runs out (anyio's clock), set on the first attempt."""
        self._batches: list[list[Event]] = []
        """Every event delivered, as decoded (the completion is built from them when asked)."""
        self._completion: Completion | None = None
        self.attempts = 0
        """How many HTTP requests this stream has sent (retries included)."""
        # observe: the call's hooks / OpenTelemetry observer (see aiollm.hooks), made at the
        # first attempt; _observed_end makes its end() happen exactly once.
        self._obs: CallObserver | None = None
        self._observed = False
        self._observed_end = False

    # -- public API ---------------------------------------------------------------------
    @property
    def provider(self) -> str:
        """The provider name (``dashscope``, ``qianfan``, ``gateway``, ``openai``)."""
        return self._provider.name

    @property
    def model(self) -> str:
        """The model (the part of the model string after ``provider/``)."""
        return self._call.model

    @property
    def completion(self) -> Completion:
        """The aggregated result, once the stream has ended (see :meth:`final`)."""
        if self._completion is None:
            if not self._finished:
                raise AiollmError(
                    "the stream has not finished: iterate it to the end or use "
                    "`await stream.final()`",
                    provider=self.provider,
                )
            self._completion = self._build_completion()
        return self._completion

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
            await self._ensure_open()
        except BaseException as exc:
            self._close_now(exc)
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
            try:
                event = await self._next_slow()
            except StopAsyncIteration:
                return
            yield event

    async def __anext__(self) -> Event:
        for event in self._pending:  # the hot path: events already decoded
            return event
        return await self._next_slow()

    async def _next_slow(self) -> Event:
        while True:
            for event in self._pending:
                return event
            if self._error is not None:
                self._raise_error()
            if self._finished:
                self._close_now()
                raise StopAsyncIteration
            if self._closed:
                raise AiollmError(
                    "the stream was closed before it finished", provider=self.provider
                )
            try:
                await self._step()
            except AiollmError as exc:
                await self._failed(exc)
            except Exception as exc:  # a bare error from an error path: typed here
                await self._failed(self._decode_failure(exc))
            except BaseException as exc:
                # Cancellation or an unexpected bug: never leave the response open.
                self._close_now(exc)
                raise

    async def aclose(self) -> None:
        """Close the response and release the connection and the concurrency slot."""
        self._close_now()

    def __del__(self) -> None:
        # A plain `async for` that breaks drops the stream: close the socket then.
        if not getattr(self, "_closed", True):
            self._close_now()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "finished" if self._finished else "open"
        return f"<Stream {self.provider}/{self.model} {state}>"

    # -- internals ------------------------------------------------------------------------
    def _close_now(self, exc: BaseException | None = None) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        self._closed = True
        if self._obs is not None and not self._observed_end:
            self._observe_end(exc)

    # observe: the end of an observed call (completed, failed, closed early or cancelled)
    def _observe_end(self, exc: BaseException | None) -> None:
        obs = self._obs
        assert obs is not None
        self._observed_end = True
        error = self._error if self._error is not None else exc
        outcome: Outcome
        if self._finished and error is None:
            outcome = "completed"
        elif error is None:
            outcome = "closed"
        elif isinstance(error, anyio.get_cancelled_exc_class()):
            outcome = "cancelled"
        else:
            outcome = "error"
        try:
            completion: Completion | None = self._build_completion()
        except Exception:  # the completion of a broken response: observe the end anyway
            completion = None
        if outcome == "completed":
            self._completion = completion
        obs.end(outcome, completion, error)

    async def _ensure_open(self) -> None:
        if self._resp is not None or self._finished:
            return
        while True:
            try:
                await self._open()
                return
            except AiollmError as exc:
                await self._failed(exc)
            except Exception as exc:  # e.g. an error body or token answer nested too deep
                await self._failed(self._decode_failure(exc))
            if self._error is not None:
                self._raise_error()

    async def _open(self) -> None:
        if self._closed:
            raise AiollmError("the stream is closed", provider=self.provider)
        provider = self._provider
        if not self._observed:  # observe: one observer per call, from its first attempt
            self._observed = True
            self._obs = self._client._observe(provider, self._call)
        obs = self._obs
        if obs is not None:
            cooling, started = self._limiter.cooling_down, time.monotonic()
        deadline = self._call_deadline()
        if self._lease is None:
            estimate = self._limiter.estimate(self._call)
            self._lease = await self._limiter.acquire(estimate, deadline)
        elif self.attempts:
            await self._limiter.pace(deadline)
        transport = self._client._transport
        self._credential = None
        if obs is not None:
            obs.waited(time.monotonic() - started, cooling)
            fetches, started = getattr(provider.auth, "fetches", None), time.monotonic()
        credential = await provider.auth.get(transport)
        request = provider.build_request(self._call, credential)
        self.attempts += 1
        self._credential = credential  # sent: the service may now reject it
        extra_headers = self._extra_headers
        if obs is not None:
            if getattr(provider.auth, "fetches", None) != fetches:
                obs.token_fetched(time.monotonic() - started)
            added = obs.request(request, self.attempts)
            if added:
                extra_headers = {**(extra_headers or {}), **added}
        resp = await transport.open(
            request,
            timeout=self._attempt_timeout(deadline),
            provider=provider.name,
            extra_headers=extra_headers,
        )
        self._limiter.observe(resp.headers)
        if obs is not None:
            obs.response(resp.status, resp.headers)
        codec = self._codec = provider.new_codec(self._call)
        codec.on_response(resp.status, resp.headers)
        if resp.status >= 300:
            try:
                body = await resp.read(MAX_ERROR_BODY)
            finally:
                resp.close()
            raise provider.explain(codec.http_error(resp.status, resp.headers, body), request)
        self._resp = resp
        self._framer = None
        self._other = None

    def _call_deadline(self) -> float:
        """The deadline of the whole call: every attempt and every wait between them."""
        if self._deadline is None:
            total = self._timeout.total
            self._deadline = math.inf if total is None else anyio.current_time() + total
        return self._deadline

    def _attempt_timeout(self, deadline: float) -> Timeout:
        """This attempt's timeouts: ``total`` is what is left of the call's."""
        if deadline == math.inf:
            return self._timeout
        return replace(self._timeout, total=max(0.0, deadline - anyio.current_time()))

    async def _step(self) -> None:
        """Read one chunk and queue the events it completes."""
        if self._resp is None:
            await self._open()
        resp = self._resp
        codec = self._codec
        assert resp is not None and codec is not None
        chunk = await resp.next_chunk()
        framer = self._framer
        if framer is None and self._other is None:
            kind = sniff_body(resp.content_type, chunk[:64])
            if kind is BodyKind.SSE:
                framer = self._framer = SSEDecoder(
                    data_line_events=self._provider.sse_data_line_events,
                    json_line_events=self._provider.sse_json_line_events,
                    raw_data=True,
                )
            elif kind is BodyKind.JSON:
                framer = self._framer = JSONFramer()
            else:
                self._other = bytearray()
        out: list[Event] = []
        ended = False
        try:
            if framer is None:
                assert self._other is not None
                if chunk:
                    self._other += chunk
                    if len(self._other) > MAX_ERROR_BODY:
                        raise ProtocolError(
                            f"unrecognised {resp.content_type or 'untyped'} body over "
                            f"{MAX_ERROR_BODY} bytes",
                            provider=self.provider,
                        )
                    return
                out += codec.on_other(bytes(self._other), resp.content_type)
            else:
                if isinstance(framer, SSEDecoder):
                    codec.on_sse_batch(framer.feed_raw(chunk) if chunk else framer.close(), out)
                else:
                    on_json = codec.on_json
                    for doc in framer.feed(chunk) if chunk else framer.close():
                        out += on_json(doc)
                        if codec.done:
                            break
                if chunk and not codec.done:
                    self._deliver(out)
                    return
            out += codec.on_end()
            ended = True
        except Exception as exc:
            error = exc if isinstance(exc, AiollmError) else self._decode_failure(exc)
            self._deliver(out)
            if out:
                # Deliver what decoded cleanly first, then raise.
                self._error = error
                self._close_now()
                return
            raise error from error.__cause__
        self._deliver(out)
        if ended:
            self._finish_body()

    def _decode_failure(self, exc: Exception) -> ProtocolError:
        """A codec must only raise typed errors: never let a bare KeyError reach the caller."""
        error = ProtocolError(
            f"could not decode the response ({type(exc).__name__}: {exc})", provider=self.provider
        )
        error.__cause__ = exc
        return error

    def _deliver(self, events: list[Event]) -> None:
        """Queue decoded events for the caller (and keep them for the completion)."""
        if not events:
            return
        # They reach the caller before anything else can fail: no retry after this point.
        self._delivered = True
        self._pending = iter(events)
        self._batches.append(events)
        if self._obs is not None:
            self._obs.chunk(events)

    def _last(self, kind: type[Usage] | type[Finish] | type[SafetyNotice]) -> Event | None:
        """The last delivered event of type ``kind`` (found from the end: they come last)."""
        for events in reversed(self._batches):
            for event in reversed(events):
                if type(event) is kind:
                    return event
        return None

    def _finish_body(self) -> None:
        self._finished = True
        lease, self._lease = self._lease, None
        if lease is not None:
            usage = self._last(Usage)
            if isinstance(usage, Usage):
                lease.settle(usage.total_tokens)
        if self._resp is not None:
            # It gives the connection back itself, and the lease when the exchange is over.
            self._resp.finish(lease.release if lease is not None else None)
            self._resp = None
        elif lease is not None:
            lease.release()
        self._limiter.succeeded()
        if self._obs is not None and not self._observed_end:
            self._observe_end(None)

    def _build_completion(self) -> Completion:
        codec = self._codec
        texts: list[str] = []
        usage: Usage | None = None
        finish: Finish | None = None
        safety: SafetyNotice | None = None
        for events in self._batches:
            for event in events:
                if type(event) is TextDelta:
                    texts.append(event.text)
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, Finish):
                    finish = event
                elif isinstance(event, SafetyNotice):
                    safety = event
        if usage is None and codec is not None:
            usage = codec.partial_usage()
        return Completion(
            text="".join(texts),
            finish_reason=finish.reason if finish is not None else None,
            usage=usage,
            request_id=codec.request_id if codec else None,
            provider=self._provider.name,
            model=self._call.model,
            safety=safety,
            extra=dict(codec.extra) if codec else {},
        )

    def _reset_attempt(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        self._codec = None
        self._framer = None
        self._other = None
        self._pending = iter(())
        self._batches = []

    async def _failed(self, exc: AiollmError) -> None:
        """Retry if nothing reached the caller and the error allows it; else record it."""
        scrub_exception(exc, self._secrets())
        if isinstance(exc, RateLimitError) and exc.status is not None:  # the server's answer
            self._limiter.throttled(exc.retry_after, self._retry.max_retry_after)
        if not self._delivered and not self._closed:
            # Refresh once when the service rejected a token we sent; a failure to obtain
            # a token in the first place (bad AK/SK) cannot be helped by fetching again.
            rejected = self._credential if isinstance(exc, AuthenticationError) else None
            auth = self._provider.auth
            if rejected is not None and auth.refreshable and not self._auth_refreshed:
                self._auth_refreshed = True
                auth.invalidate(rejected)
                log.debug("%s: token rejected, refreshing once", self.provider)
                if self._obs is not None:
                    self._obs.retry(exc, self.attempts, 0.0, True)
                self._reset_attempt()
                return
            self._attempt += 1
            remaining = self._call_deadline() - anyio.current_time()
            delay = self._retry.delay(exc, self._attempt, self._slept, remaining)
            if delay is not None:
                log.debug(
                    "%s: attempt %d failed (%s); retrying in %.2fs",
                    self.provider,
                    self._attempt,
                    exc,
                    delay,
                )
                if self._obs is not None:
                    self._obs.retry(exc, self.attempts, delay, False)
                self._reset_attempt()
                self._slept += delay
                if not isinstance(exc, RateLimitError):
                    await anyio.sleep(delay)
                return
        self._error = exc
        self._close_now()

    def _secrets(self) -> tuple[str, ...]:
        """Every secret this client sent (an error must hold none of them)."""
        secrets = self._client._transport.secrets
        return (*secrets, self._credential) if self._credential else secrets

    def _raise_error(self) -> None:
        exc = self._error
        assert exc is not None
        scrub_exception(exc, self._secrets())
        if self._delivered and not isinstance(exc, StreamInterrupted):
            partial = self._build_completion()
            raise StreamInterrupted(
                f"the stream broke off after {len(partial.text)} characters: {exc}",
                partial=partial,
                error=exc,
                provider=self.provider,
            ) from exc
        raise exc
