"""Hooks: see each call's requests, responses, retries and end, without OpenTelemetry.

Subclass :class:`Hooks`, override the methods you need and pass instances to the client::

    class LogCalls(aiollm.Hooks):
        def on_request(self, request: aiollm.RequestInfo) -> None:
            log.info("%s %s (attempt %d)", request.method, request.url, request.attempt)

        def on_finish(self, finish: aiollm.FinishInfo) -> None:
            log.info("%s/%s %s in %.3fs", finish.provider, finish.model, finish.outcome,
                     finish.duration)

    async with aiollm.Client(hooks=[LogCalls()]) as client: ...

Hooks run synchronously inside the stream, so keep them quick (hand slow work to a task or a
queue). An exception a hook raises is logged (logger ``aiollm.hooks``) and otherwise ignored:
a hook never breaks a call. Nothing a hook receives holds a key, secret or access token: the
URL's secret query values and the secret headers are masked, and error messages are redacted
by aiollm itself.

The same points feed the OpenTelemetry support (:mod:`aiollm.otel`): the stream reports them
to one :class:`CallObserver` per call, which is the hooks' adapter, the OpenTelemetry
observer, or both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import msgspec

from ._redact import REDACTED, SECRET_PARAMS, redact_headers, redact_text

if TYPE_CHECKING:
    from .events import Completion, Event
    from .providers._base import Call, HTTPRequest

__all__ = [
    "CallObserver",
    "FinishInfo",
    "Hooks",
    "Outcome",
    "RequestInfo",
    "ResponseHead",
    "RetryInfo",
    "redacted_url",
]

log = logging.getLogger("aiollm.hooks")

Outcome = Literal["completed", "error", "closed", "cancelled"]
"""How a call ended: read to its end, failed, closed (or dropped) early, or cancelled."""


class RequestInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A request about to be sent (``url`` and ``headers`` have their secrets masked)."""

    provider: str
    model: str
    operation: str
    attempt: int
    """1 for the first request of the call, 2 for the first retry …"""
    method: str
    url: str
    headers: Mapping[str, str]


class ResponseHead(msgspec.Struct, frozen=True, kw_only=True):
    """A response head arrived (any status)."""

    provider: str
    model: str
    attempt: int
    status: int
    headers: Mapping[str, str]
    elapsed: float
    """Seconds from the start of the call."""


class RetryInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An attempt failed and the call will try again.

    ``reason`` is ``"retry"`` (after ``delay`` seconds, per the client's retry policy; a rate
    limit waits in the provider's cool-down instead) or ``"token_refresh"`` (the service
    rejected the access token: a fresh one is fetched and the request sent again at once).
    """

    provider: str
    model: str
    attempt: int
    """The attempt that failed."""
    error: BaseException
    """What failed it (without its traceback: the call goes on)."""
    reason: Literal["retry", "token_refresh"]
    delay: float = 0.0


class FinishInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A call ended: ``completion`` is what arrived (partial unless ``outcome`` is completed)."""

    provider: str
    model: str
    operation: str
    outcome: Outcome
    completion: Completion | None
    error: BaseException | None
    attempts: int
    duration: float
    """Seconds from the start of the call to its end."""
    time_to_first_chunk: float | None
    """Seconds from the start of the call to its first events (None when none arrived)."""


class Hooks:
    """Callbacks for every call of a client; override the ones you need (each does nothing)."""

    def on_request(self, request: RequestInfo) -> None:
        """A request is about to be sent."""

    def on_response(self, response: ResponseHead) -> None:
        """A response head arrived."""

    def on_retry(self, retry: RetryInfo) -> None:
        """An attempt failed and will be retried (or the token refreshed)."""

    def on_finish(self, finish: FinishInfo) -> None:
        """The call ended: completed, failed, closed early or cancelled (exactly once)."""


def redacted_url(request: HTTPRequest) -> str:
    """``request``'s URL with its query, secret values masked."""
    from urllib.parse import urlencode  # imported when first needed (import aiollm stays lean)

    url = redact_text(request.url, request.secrets)
    if not request.params:
        return url
    secrets = request.secrets
    query = {
        k: REDACTED if k.lower() in SECRET_PARAMS or v in secrets else v
        for k, v in request.params.items()
    }
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query, safe='*')}"


class CallObserver:
    """The points of one call a :class:`~aiollm.Stream` reports (each does nothing here).

    One instance per call, made when its first request is about to be prepared; :meth:`end`
    is called exactly once, whatever way the call ends.
    """

    def waited(self, seconds: float, cooldown: bool) -> None:
        """The call waited ``seconds`` for the provider's limits (or its cool-down)."""

    def token_fetched(self, seconds: float) -> None:
        """Getting the credential took a token fetch of ``seconds``."""

    def request(self, request: HTTPRequest, attempt: int) -> Mapping[str, str] | None:
        """A request is about to be sent; returns headers to add to it (or None)."""
        return None

    def response(self, status: int, headers: Mapping[str, str]) -> None:
        """The response head of the current attempt arrived."""

    def retry(self, error: BaseException, attempt: int, delay: float, refresh: bool) -> None:
        """Attempt ``attempt`` failed with ``error`` and will be retried."""

    def chunk(self, events: list[Event]) -> None:
        """The events one body chunk completed are about to reach the caller."""

    def end(
        self, outcome: Outcome, completion: Completion | None, error: BaseException | None
    ) -> None:
        """The call ended."""


class HookObserver(CallObserver):
    """Turns a call's points into :class:`Hooks` calls."""

    def __init__(self, hooks: Sequence[Hooks], provider: str, call: Call) -> None:
        self._hooks = hooks
        self._provider = provider
        self._call = call
        self._start = time.monotonic()
        self._first: float | None = None
        self._attempt = 0

    def _each(self, method: str, info: object) -> None:
        for hook in self._hooks:
            try:
                getattr(hook, method)(info)
            except Exception:
                log.exception("hook %r.%s raised; ignored", hook, method)

    def request(self, request: HTTPRequest, attempt: int) -> Mapping[str, str] | None:
        self._attempt = attempt
        info = RequestInfo(
            provider=self._provider,
            model=self._call.model,
            operation=self._call.op,
            attempt=attempt,
            method=request.method,
            url=redacted_url(request),
            headers=redact_headers(request.headers),
        )
        self._each("on_request", info)
        return None

    def response(self, status: int, headers: Mapping[str, str]) -> None:
        info = ResponseHead(
            provider=self._provider,
            model=self._call.model,
            attempt=self._attempt,
            status=status,
            headers=redact_headers(dict(headers)),
            elapsed=time.monotonic() - self._start,
        )
        self._each("on_response", info)

    def retry(self, error: BaseException, attempt: int, delay: float, refresh: bool) -> None:
        # The stream drops a retried error; its traceback would keep the stream alive in a
        # hook that keeps the error (and a dropped stream is closed when it is collected).
        error.__traceback__ = None
        info = RetryInfo(
            provider=self._provider,
            model=self._call.model,
            attempt=attempt,
            error=error,
            reason="token_refresh" if refresh else "retry",
            delay=delay,
        )
        self._each("on_retry", info)

    def chunk(self, events: list[Event]) -> None:
        if self._first is None:
            self._first = time.monotonic() - self._start

    def end(
        self, outcome: Outcome, completion: Completion | None, error: BaseException | None
    ) -> None:
        info = FinishInfo(
            provider=self._provider,
            model=self._call.model,
            operation=self._call.op,
            outcome=outcome,
            completion=completion,
            error=error,
            attempts=self._attempt,
            duration=time.monotonic() - self._start,
            time_to_first_chunk=self._first,
        )
        self._each("on_finish", info)


class Observers(CallObserver):
    """Several observers of one call, called in order."""

    def __init__(self, each: list[CallObserver]) -> None:
        self.each = each

    def waited(self, seconds: float, cooldown: bool) -> None:
        for o in self.each:
            o.waited(seconds, cooldown)

    def token_fetched(self, seconds: float) -> None:
        for o in self.each:
            o.token_fetched(seconds)

    def request(self, request: HTTPRequest, attempt: int) -> Mapping[str, str] | None:
        headers: dict[str, str] = {}
        for o in self.each:
            extra = o.request(request, attempt)
            if extra:
                headers.update(extra)
        return headers or None

    def response(self, status: int, headers: Mapping[str, str]) -> None:
        for o in self.each:
            o.response(status, headers)

    def retry(self, error: BaseException, attempt: int, delay: float, refresh: bool) -> None:
        for o in self.each:
            o.retry(error, attempt, delay, refresh)

    def chunk(self, events: list[Event]) -> None:
        for o in self.each:
            o.chunk(events)

    def end(
        self, outcome: Outcome, completion: Completion | None, error: BaseException | None
    ) -> None:
        for o in self.each:
            o.end(outcome, completion, error)
