"""When a failed attempt is sent again: :class:`RetryPolicy` (a pure decision, no clock)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import APIError, TimeoutError, TransportError

__all__ = ["RetryPolicy"]


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
