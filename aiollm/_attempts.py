"""What one call's attempts draw on, and how one attempt is sent: the :class:`Attempts` of a Stream.

The limiter's slot (taken at the first attempt, paced at the next ones), the credential, the
request, the call's deadline (its ``total`` timeout), its observer (hooks, OpenTelemetry) and
its retries (:meth:`Attempts.retry_delay`). The :class:`~aiollm.Stream` reads the responses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio

from ._redact import scrub_exception
from .errors import AuthenticationError, RateLimitError
from .hooks import CallObserver

if TYPE_CHECKING:
    from .auth import TokenSource
    from .errors import AiollmError, APIError
    from .events import Completion, Usage
    from .hooks import Outcome
    from .limits import Lease, ProviderLimiter, RetryPolicy
    from .providers import HTTPRequest, Prepared, Provider
    from .transport import Response, Timeout, Transport

__all__ = ["UNOBSERVED", "Attempts"]

log = logging.getLogger("aiollm.stream")

UNOBSERVED = CallObserver()
"""The observer of a call no one observes (every point does nothing)."""


class Attempts:
    """One call's slot, credential, deadline, observer and retries; :meth:`open` sends one
    attempt, :meth:`retry_delay` says whether (and when) another may follow."""

    def __init__(
        self,
        transport: Transport,
        provider: Provider,
        prepared: Prepared,
        *,
        auth: TokenSource,
        limiter: ProviderLimiter,
        timeout: Timeout,
        extra_headers: Mapping[str, str] | None,
        observe: Callable[[], CallObserver | None],
        retry: RetryPolicy,
    ) -> None:
        self._transport, self._provider, self._prepared = transport, provider, prepared
        self.auth, self.limiter = auth, limiter
        self._timeout, self._headers = timeout, extra_headers
        self._observe: Callable[[], CallObserver | None] | None = observe
        self.obs = UNOBSERVED  # made when the first attempt starts
        self.deadline = math.inf  # the call's total timeout (time.monotonic), from its start
        self.count = 0  # requests sent
        self.lease: Lease | None = None
        self.credential: str | None = None  # the one the last request carried
        self.request: HTTPRequest | None = None
        self._refreshed = False
        self._retry, self._retries, self._slept = retry, 0, 0.0

    async def open(self) -> Response:
        """Send one attempt's request; return its response head (the body is not read)."""
        limiter, obs = self.limiter, self.obs
        if self._observe is not None:  # the call starts: its observer and its deadline
            obs = self.obs = self._observe() or UNOBSERVED
            self._observe = None
            total = self._timeout.total
            self.deadline = math.inf if total is None else time.monotonic() + total
        observed = obs is not UNOBSERVED  # no one listens: no clock reads for them
        if observed:
            cooling, started = limiter.cooling_down, time.monotonic()
        if self.lease is None:
            estimate = limiter.estimate(self._prepared.call)
            self.lease = await limiter.acquire(estimate, self.deadline)
        elif self.count:
            await limiter.pace(self.deadline)
        self.credential = None
        if observed:
            obs.waited(time.monotonic() - started, cooling)
            fetches, started = getattr(self.auth, "fetches", None), time.monotonic()
            credential = await self.auth.get(self._transport)
            if getattr(self.auth, "fetches", None) != fetches:
                obs.token_fetched(time.monotonic() - started)
        else:
            credential = await self.auth.get(self._transport)
        request = self.request = self._provider.build_request(self._prepared, credential)
        # The request is about to be sent: the service may now reject the credential.
        self.count += 1
        self.credential = credential
        headers = self._headers
        if observed:
            added = obs.request(request, self.count)
            if added:
                headers = {**(headers or {}), **added}
        resp = await self._transport.open(
            request,
            timeout=self._timeout.within(self.remaining()),
            provider=self._provider.name,
            extra_headers=headers,
        )
        # The response head arrived.
        limiter.observe(resp.headers)
        if observed:
            obs.response(resp.status, resp.headers)
        return resp

    def refresh_once(self, error: BaseException) -> bool:
        """Drop the credential the service rejected, once per call; True if a retry may follow.

        A failure to get one in the first place (bad AK/SK) cannot be helped by fetching again.
        """
        rejected = self.credential
        if rejected is None or not self.auth.refreshable or self._refreshed:
            return False
        self._refreshed = True
        self.auth.invalidate(rejected)
        log.debug("%s: token rejected, refreshing once", self._provider.name)
        self.obs.retry(error, self.count, 0.0, True)
        return True

    def retry_delay(self, error: AiollmError, *, may_retry: bool) -> float | None:
        """An attempt failed with ``error``: the seconds to wait before the next one (0: at
        once, or the limiter's cool-down waits), or None when the call fails with it.

        ``may_retry``: nothing reached the caller yet. Whatever the answer, ``error`` is
        scrubbed of the secrets sent, the provider hears of it and a throttle cools the limiter.
        """
        scrub_exception(error, self.secrets())  # an error holds no secret the client sent
        self._provider.failed(self._prepared, error)
        if isinstance(error, RateLimitError) and error.status is not None:  # the server's answer
            self.limiter.throttled(error.retry_after, self._retry.max_retry_after)
        if not may_retry:
            return None
        if isinstance(error, AuthenticationError) and self.refresh_once(error):
            return 0.0  # the service rejected the token sent: a new one, once
        self._retries += 1
        delay = self._retry.delay(error, self._retries, self._slept, self.remaining())
        if delay is None:
            return None
        # The message, not the error: a record holding it would keep its traceback (and the
        # dropped response) alive.
        log.debug("%s: attempt failed (%s); retry in %.2fs", self._provider.name, str(error), delay)
        self.obs.retry(error, self.count, delay, False)
        self._slept += delay
        return 0.0 if isinstance(error, RateLimitError) else delay  # the cool-down waits

    def explain(self, error: APIError) -> APIError:
        """The error of an HTTP response, with what to check added by the provider."""
        assert self.request is not None
        return self._provider.explain(error, self.request)

    def remaining(self) -> float:
        """Seconds left before the call's deadline."""
        deadline = self.deadline
        return deadline if deadline == math.inf else deadline - time.monotonic()

    def secrets(self) -> tuple[str, ...]:
        """Every secret the client sent (an error must hold none of them)."""
        secrets = self._transport.secrets
        return (*secrets, self.credential) if self.credential else secrets

    def finished(self, resp: Response | None, usage: Usage | None) -> None:
        """The exchange ended well: the limiter settles, and the slot goes back when the
        connection does (``resp.finish`` gives it back as soon as the body ends)."""
        lease, self.lease = self.lease, None
        if lease is not None and usage is not None:
            lease.settle(usage.total_tokens)
        if resp is not None:
            resp.finish(lease.release if lease is not None else None)
        elif lease is not None:
            lease.release()
        self.limiter.succeeded()

    def release(self) -> None:
        """Give the slot back now (the call failed or was closed)."""
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.release()

    def ended(
        self,
        finished: bool,
        completion: Callable[[], Completion],
        error: BaseException | None,
    ) -> None:
        """The call ended (``finished``: normally): its observer hears it once."""
        obs, self.obs = self.obs, UNOBSERVED
        if obs is not UNOBSERVED:
            outcome: Outcome = "completed" if finished else "closed"
            if isinstance(error, anyio.get_cancelled_exc_class()):
                outcome = "cancelled"
            elif error is not None:
                outcome = "error"
            try:
                result: Completion | None = completion()
            except Exception:  # the completion of a broken response: observe the end anyway
                result = None
            obs.end(outcome, result, error)
