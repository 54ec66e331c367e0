"""The quota a provider reports in its response headers, read so calls slow down before a 429.

Headers (the OpenAI convention, also written by OpenAI-compatible servers and gateways):
``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests``, and the same three for ``-tokens``. A reset is a duration
(``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``), a number of seconds, or a Unix time. The
``Retry-After`` header of a throttling answer is read by the provider's error mapping and
becomes the cool-down (see :meth:`aiollm.limits.ProviderLimiter.throttled`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import anyio

__all__ = ["QuotaHints", "parse_reset"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
LOW_SHARE = 0.1
"""Below this share of the limit left (or 10 requests, when the limit is not given), calls
are spaced out over what is left of the window."""


def parse_reset(value: str | None, wall_now: float | None = None) -> float | None:
    """Seconds until a quota resets, from an ``x-ratelimit-reset-*`` value (None if unreadable)."""
    if not value:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None
        return sum(float(n) * _UNIT[u] for n, u in parts)
    if not number >= 0:  # negative or NaN
        return None
    if number > 1e9:  # a Unix time
        return max(0.0, number - (time.time() if wall_now is None else wall_now))
    return number


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


class QuotaHints:
    """The last reported quota of one provider, and the pacing it implies."""

    __slots__ = ("_gap", "_next", "_pace_until", "tokens_left", "tokens_reset_at")

    def __init__(self) -> None:
        self.tokens_left: int | None = None
        self.tokens_reset_at = 0.0
        self._gap = 0.0
        self._next = 0.0
        self._pace_until = 0.0

    @property
    def active(self) -> bool:
        """Whether a reported quota still constrains the calls."""
        now = time.monotonic()
        return now < self._pace_until or now < self.tokens_reset_at

    def observe(self, headers: Mapping[str, str], now: float) -> float:
        """Take in a response's headers; returns how long every call must hold (0 if not)."""
        requests = _count(headers.get("x-ratelimit-remaining-requests"))
        tokens = _count(headers.get("x-ratelimit-remaining-tokens"))
        if requests is None and tokens is None:
            return 0.0
        hold = 0.0
        if requests is not None:
            reset = parse_reset(headers.get("x-ratelimit-reset-requests"))
            limit = _count(headers.get("x-ratelimit-limit-requests"))
            low = limit * LOW_SHARE if limit else 10
            if reset is not None:
                if requests <= 0:
                    hold = reset
                elif requests <= low:
                    self._gap = reset / requests
                    self._pace_until = now + reset
        if tokens is not None:
            reset = parse_reset(headers.get("x-ratelimit-reset-tokens"))
            if reset is not None:
                self.tokens_left = tokens
                self.tokens_reset_at = now + reset
                if tokens <= 0:
                    hold = max(hold, reset)
        return hold

    async def wait(self, estimate: int) -> None:
        """Space this call out while the requests run low; hold it until the token budget
        resets when its estimate does not fit what is left."""
        now = time.monotonic()
        if now < self.tokens_reset_at and self.tokens_left is not None:
            if estimate > self.tokens_left:
                await anyio.sleep(self.tokens_reset_at - now)
                now = time.monotonic()
            else:
                self.tokens_left -= estimate
        if now < self._pace_until:
            start = max(now, self._next)
            self._next = start + self._gap
            if start > now:
                await anyio.sleep(start - now)
