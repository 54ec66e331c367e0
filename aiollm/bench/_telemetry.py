"""Per-request quota telemetry through the client's public hooks.

The bench's own client carries :class:`BenchHooks`. Hooks run inside the request's task, so a
context variable tells them which record they belong to: the time from sending to the first
HTTP request (waiting in the client's limiter or cool-down, and for a credential) and the
remaining quota a response reports (``x-ratelimit-remaining-requests``).
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from .. import Hooks, RequestInfo, ResponseHead
from ._metrics import RequestRecord

__all__ = ["CURRENT", "BenchHooks"]

CURRENT: ContextVar[tuple[RequestRecord, float] | None] = ContextVar(
    "aiollm_bench_request", default=None
)
"""The record of the request the current task is sending, and its send time."""

_REMAINING = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining")


class BenchHooks(Hooks):
    """Fills a record's ``limiter_wait`` and ``quota_remaining``."""

    def on_request(self, request: RequestInfo) -> None:
        current = CURRENT.get()
        if current is not None and request.attempt == 1:
            record, sent = current
            record.limiter_wait = time.perf_counter() - sent

    def on_response(self, response: ResponseHead) -> None:
        current = CURRENT.get()
        if current is None:
            return
        headers = {k.lower(): v for k, v in response.headers.items()}
        for name in _REMAINING:
            value = headers.get(name)
            if value is not None:
                try:
                    current[0].quota_remaining = int(float(value))
                except ValueError:
                    pass
                return
