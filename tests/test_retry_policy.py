"""The retry policy: what is retried, and how long it waits (:mod:`aiollm.retry`)."""

from __future__ import annotations

from aiollm.errors import (
    AuthenticationError,
    RateLimitError,
    ServerError,
    TimeoutError,
    TransportError,
)
from aiollm.retry import RetryPolicy


def test_retry_policy_decides_what_is_retryable() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=0.1, backoff_max=1.0)
    assert policy.retryable(ServerError("x"))
    assert policy.retryable(TransportError("refused"))
    # The stream asks only while nothing reached the caller: a reset after the head is retried.
    assert policy.retryable(TransportError("reset", response_started=True))
    assert policy.retryable(TimeoutError("t", phase="first_byte"))
    assert policy.retryable(TimeoutError("t", phase="idle"))
    assert not policy.retryable(TimeoutError("t", phase="total"))
    assert not policy.retryable(AuthenticationError("x"))
    assert policy.delay(ServerError("x"), 4, 0.0) is None  # attempts exhausted


def test_retry_policy_full_jitter_and_retry_after_floor() -> None:
    policy = RetryPolicy(max_retries=10, backoff_base=0.1, backoff_max=0.4, max_total_delay=100)
    delays = [policy.backoff(5) for _ in range(200)]
    assert all(0 <= d <= 0.4 for d in delays) and max(delays) > 0.2
    err = RateLimitError("x", retry_after=3.0)
    assert policy.delay(err, 1, 0.0) == 3.0
    assert RetryPolicy(max_total_delay=2.0).delay(err, 1, 0.0) is None  # over the delay budget
