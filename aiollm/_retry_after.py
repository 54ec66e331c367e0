"""How long a server asks to be left alone: ``Retry-After`` and ``retry-after-ms``.

Sans-IO, pure and total: any header value gives a number of seconds or None, never an
exception, and no clock is read. An HTTP-date ``Retry-After`` is measured against the ``now``
the caller passes, by default the response's own ``Date`` header: the transport gives every
response head one (the time it arrived, when the server sent none), as RFC 9110 asks of a
recipient with a clock. Values that say "wait for ever" (``inf``, ``1e400``, a date in year
99999) come back as ``math.inf``; the retry policy, not the parser, decides how long is too
long (see :attr:`aiollm.RetryPolicy.max_retry_after`).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping

__all__ = ["parse_retry_after"]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _seconds(value: str) -> float | None:
    """A non-negative number of seconds, ``inf`` for an overflowing one, None if not a number."""
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _http_date(value: str) -> float | None:
    """An HTTP date as a Unix time: ``math.inf`` past what a datetime holds (year 99999),
    None when ``value`` is not a date."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        tup = email.utils.parsedate_tz(value)
        if tup is None:
            return None
        return math.inf if tup[0] > 9999 else None
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return math.inf


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    ``now`` (a Unix time, when the response arrived) is what an HTTP date is measured
    against; without it, the ``Date`` header of the same response. Returns None when neither
    header holds a usable value (or a date has nothing finite to be measured against),
    ``math.inf`` for an unbounded one.
    """
    millis = _header(headers, "Retry-After-Ms")
    if millis:
        seconds = _seconds(millis.strip())
        if seconds is not None:
            return seconds / 1000.0
    value = _header(headers, "Retry-After")
    if not value:
        return None
    value = value.strip()
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    when = _http_date(value)
    if when is None:
        return None
    if now is None:
        date = _header(headers, "Date")
        now = _http_date(date) if date else None
    if now is None or not math.isfinite(now):
        return None
    return max(0.0, when - now)
