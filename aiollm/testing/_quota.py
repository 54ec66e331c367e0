"""A provider quota: a request rate and a concurrency cap, answered in the provider's throttle shape."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

__all__ = ["Quota", "QuotaState"]


@dataclass
class Quota:
    """Admit at most ``rate`` requests per second (a token bucket holding ``burst`` requests,
    default ``max(1, rate)``: one second's worth) and at most ``concurrency`` at once.

    A request over the quota gets the provider's own throttle answer at once: HTTP 429 with an
    OpenAI error body (OpenAI-compatible servers; ``{"code": 429, "msg": ...}`` on the gateway),
    Qianfan's HTTP 200 ``error_code`` 18, DashScope's HTTP 429 ``Throttling.RateQuota``
    (``Throttling`` for the concurrency cap). ``retry_after`` adds a ``Retry-After`` header
    (seconds until the bucket admits a request; Qianfan sends none) where the shape has one.
    Either limit may be None (unlimited). Counted in ``emu.stats.throttled``. OpenAI-compatible
    servers and the gateway also send ``x-ratelimit-limit-requests``, ``-remaining-requests`` and
    ``-reset-requests`` (milliseconds until the bucket is full) on every answer under a rate.
    """

    rate: float | None = None
    burst: float | None = None
    concurrency: int | None = None
    retry_after: bool = True

    def __post_init__(self) -> None:
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("Quota.rate must be a positive number of requests per second")
        if self.burst is not None and not self.burst >= 1:
            raise ValueError("Quota.burst must be at least 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("Quota.concurrency must be at least 1")


@dataclass
class QuotaState:
    """The bucket and the in-progress count of one provider's quota."""

    quota: Quota
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)
    active: int = 0

    def admit(self) -> tuple[str, float | None] | None:
        """None when admitted (then :meth:`release` when done), else (limit, retry after)."""
        quota = self.quota
        if quota.concurrency is not None and self.active >= quota.concurrency:
            return "concurrency", None
        if quota.rate is not None:
            capacity = quota.burst if quota.burst is not None else max(1.0, quota.rate)
            now = time.monotonic()
            if self.tokens < 0:
                self.tokens = capacity
            self.tokens = min(capacity, self.tokens + (now - self.updated) * quota.rate)
            self.updated = now
            if self.tokens < 1.0:
                wait = (1.0 - self.tokens) / quota.rate
                return "rate", (math.ceil(wait * 1000) / 1000 if quota.retry_after else None)
            self.tokens -= 1.0
        self.active += 1
        return None

    def headers(self) -> dict[str, str]:
        """OpenAI-style ``x-ratelimit-*-requests`` headers for the rate (empty without one)."""
        quota = self.quota
        if quota.rate is None or self.tokens < 0:
            return {}
        capacity = quota.burst if quota.burst is not None else max(1.0, quota.rate)
        reset = (capacity - self.tokens) / quota.rate
        return {
            "x-ratelimit-limit-requests": f"{int(capacity)}",
            "x-ratelimit-remaining-requests": f"{int(self.tokens)}",
            "x-ratelimit-reset-requests": f"{round(reset * 1000)}ms",
        }

    def release(self) -> None:
        """A request admitted by :meth:`admit` is done."""
        self.active -= 1
