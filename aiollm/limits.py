"""Per-provider limits (rate, concurrency, tokens per minute), throttling cool-down, retry policy.

One :class:`ProviderLimiter` per provider per client, shared by every call:

- ``requests_per_second`` is enforced smoothly (aiolimiter with a bucket of one request), so
  no one-second window ever holds more than ``rps + 1`` request starts;
- ``max_concurrency`` is an anyio ``CapacityLimiter``; a stream holds its slot until closed;
- ``tokens_per_minute`` is a budget settled from each call's reported usage;
- a :class:`~aiollm.RateLimitError` puts the provider into a cool-down (``Retry-After`` when
  the server gave one, else a jittered backoff) during which the client's other calls to
  that provider wait instead of stampeding.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
from aiolimiter import AsyncLimiter

from .errors import APIError, ConfigurationError, RateLimitError, TimeoutError, TransportError

__all__ = ["Lease", "Limits", "ProviderLimiter", "RetryPolicy"]

log = logging.getLogger("aiollm.limits")


@dataclass(frozen=True)
class Limits:
    """Limits for one provider; None means unlimited."""

    requests_per_second: float | None = None
    max_concurrency: int | None = None
    tokens_per_minute: int | None = None

    @classmethod
    def from_env(cls, provider: str, env: Mapping[str, str]) -> Limits | None:
        """``AIOLLM_<PROVIDER>_RPS``, ``_MAX_CONCURRENCY``, ``_TPM`` from ``env`` (None if unset)."""
        prefix = f"AIOLLM_{provider.upper()}_"
        raw = {k: env.get(prefix + k) for k in ("RPS", "MAX_CONCURRENCY", "TPM")}
        if not any(raw.values()):
            return None
        try:
            return cls(
                requests_per_second=float(raw["RPS"]) if raw["RPS"] else None,
                max_concurrency=int(raw["MAX_CONCURRENCY"]) if raw["MAX_CONCURRENCY"] else None,
                tokens_per_minute=int(raw["TPM"]) if raw["TPM"] else None,
            )
        except ValueError:
            raise ConfigurationError(
                f"{prefix}RPS / {prefix}MAX_CONCURRENCY / {prefix}TPM must be numbers"
            ) from None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by total delay.

    Retried — only while nothing has reached the caller: transport errors (a connection
    refused, or reset before the first event), timeouts other than ``total`` (a stall before
    the first event included), and retryable :class:`~aiollm.APIError` s (rate limits, server
    errors). ``Retry-After`` is honoured (it is a floor for the delay) up to
    ``max_retry_after`` seconds: a server that asks for a longer wait (``inf`` included) is
    not waited for, and the call fails at once with its :class:`~aiollm.RateLimitError`,
    whose ``retry_after`` says what the server asked. The same bound caps the cool-down that
    a rate limit puts the provider into.
    """

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    max_total_delay: float = 60.0
    max_retry_after: float = 60.0

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may succeed when the same request is sent again.

        The stream asks only while nothing has reached the caller, so a connection reset
        after the response head is as retryable as one before it.
        """
        if isinstance(exc, APIError):
            return exc.retryable
        if isinstance(exc, TimeoutError):
            return exc.phase != "total"
        return isinstance(exc, TransportError)

    def backoff(self, attempt: int) -> float:
        """The jittered delay before retry number ``attempt`` (1-based)."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, cap)

    def delay(
        self, exc: BaseException, attempt: int, slept: float, remaining: float = math.inf
    ) -> float | None:
        """Seconds to wait before retry ``attempt``, or None when it should not be retried.

        ``remaining`` is the time left before the call's deadline: a retry that could only
        start after it is not made.
        """
        if attempt > self.max_retries or not self.retryable(exc):
            return None
        delay = self.backoff(attempt)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            if not retry_after <= self.max_retry_after:  # also catches NaN
                return None
            delay = max(delay, float(retry_after))
        if slept + delay > self.max_total_delay or delay >= remaining:
            return None
        return delay


class Lease:
    """A granted call: holds a concurrency slot until :meth:`release` (idempotent, sync)."""

    __slots__ = ("_limiter", "_released")

    def __init__(self, limiter: anyio.CapacityLimiter | None) -> None:
        self._limiter = limiter
        self._released = limiter is None

    def release(self) -> None:
        """Give the slot back."""
        if not self._released:
            self._released = True
            assert self._limiter is not None
            self._limiter.release_on_behalf_of(self)


_FREE = Lease(None)
"""The lease of a provider without limits: nothing to hold or release."""


class ProviderLimiter:
    """The shared limits of one provider within one client."""

    def __init__(self, provider: str, limits: Limits | None = None) -> None:
        self.provider = provider
        self.limits = limits or Limits()
        rps = self.limits.requests_per_second
        if rps is not None and rps <= 0:
            raise ConfigurationError(
                f"requests_per_second must be > 0 (got {rps})", provider=provider
            )
        self._rate = AsyncLimiter(1, 1.0 / rps) if rps else None
        mc = self.limits.max_concurrency
        self._slots = anyio.CapacityLimiter(mc) if mc else None
        self._unlimited = (
            self._rate is None and self._slots is None and not self.limits.tokens_per_minute
        )
        self._cool_until = 0.0
        self._cool_streak = 0
        self._tpm_level = 0.0
        self._tpm_at = 0.0

    @property
    def cooling_down(self) -> bool:
        """Whether the provider is in a throttling cool-down now."""
        return anyio.current_time() < self._cool_until

    async def acquire(self, deadline: float = math.inf) -> Lease:
        """Wait for the cool-down, a concurrency slot, the token budget and a rate token.

        ``deadline`` (on :func:`anyio.current_time`'s clock) is the call's: a cool-down that
        lasts beyond it fails the call at once with a :class:`~aiollm.RateLimitError`.
        """
        if self._cool_until:
            await self._wait_cooldown(deadline)
        if self._unlimited:
            return _FREE
        lease = Lease(self._slots)
        if self._slots is not None:
            await self._slots.acquire_on_behalf_of(lease)
        try:
            await self._wait_tokens()
            if self._rate is not None:
                await self._rate.acquire()
            # A throttle seen while we queued applies to us too.
            await self._wait_cooldown(deadline)
        except BaseException:
            lease.release()
            raise
        return lease

    async def pace(self, deadline: float = math.inf) -> None:
        """Wait for the cool-down and a rate token (a retry within a held lease)."""
        await self._wait_cooldown(deadline)
        if self._rate is not None:
            await self._rate.acquire()

    async def _wait_cooldown(self, deadline: float = math.inf) -> None:
        while True:
            now = anyio.current_time()
            wait = self._cool_until - now
            if wait <= 0:
                return
            if self._cool_until > deadline:
                raise RateLimitError(
                    f"the provider is cooling down after a rate limit for {wait:.2f}s more, "
                    "beyond this call's total timeout",
                    provider=self.provider,
                    retry_after=wait,
                )
            await anyio.sleep(wait)

    def throttled(self, retry_after: float | None, max_cooldown: float = 60.0) -> float:
        """Enter a cool-down after a rate-limit answer; returns its length in seconds.

        The cool-down lasts ``retry_after`` when the server gave one (at most
        ``max_cooldown``), else a jittered backoff that grows with consecutive throttles.
        """
        self._cool_streak += 1
        if retry_after is not None:
            delay = min(retry_after, max_cooldown) if retry_after >= 0 else 0.0
        else:
            delay = random.uniform(0.5, 1.0) * min(30.0, 0.5 * 2 ** (self._cool_streak - 1))
        until = anyio.current_time() + delay
        if until > self._cool_until:
            self._cool_until = until
            log.debug("%s throttled: cooling down for %.2fs", self.provider, delay)
        return delay

    def succeeded(self) -> None:
        """A call got through: reset the backoff streak."""
        self._cool_streak = 0

    def _tpm_drain(self) -> float:
        now = anyio.current_time()
        tpm = self.limits.tokens_per_minute or 0
        self._tpm_level = max(0.0, self._tpm_level - (now - self._tpm_at) * tpm / 60.0)
        self._tpm_at = now
        return self._tpm_level

    async def _wait_tokens(self) -> None:
        tpm = self.limits.tokens_per_minute
        if not tpm:
            return
        while (level := self._tpm_drain()) >= tpm:
            await anyio.sleep((level - tpm) * 60.0 / tpm + 0.01)

    def settle_tokens(self, tokens: int | None) -> None:
        """Charge a finished call's reported tokens against the tokens-per-minute budget."""
        tpm = self.limits.tokens_per_minute
        if tokens and tpm and tokens > 0:
            self._tpm_drain()
            # A server may report any integer: more than a few minutes' budget is no different.
            self._tpm_level += min(tokens, 10 * tpm)

    def __repr__(self) -> str:
        lim = self.limits
        return (
            f"<ProviderLimiter {self.provider} rps={lim.requests_per_second} "
            f"max_concurrency={lim.max_concurrency} tpm={lim.tokens_per_minute}"
            f"{' cooling' if self._cool_until > 0 and self.cooling_down else ''}>"
        )
