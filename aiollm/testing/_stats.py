"""What the emulator saw and sent: counters, and a log of every request frame by frame."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = ["LOG_LIMIT", "RequestRecord", "SentFrame", "Stats"]

LOG_LIMIT = 20_000
"""Requests :attr:`Stats.log` keeps at least by default (the oldest are forgotten first)."""


class SentFrame(msgspec.Struct, array_like=True):
    """One frame (or one whole non-streamed body) as sent.

    ``time`` is ``time.monotonic()`` just before the bytes were written; ``text`` and
    ``reasoning`` are the new text this frame delivers (for cumulative DashScope frames, the
    part after the previous frame's), ``tool`` the new tool-call argument text, ``refusal`` the new
    refusal text, ``size`` the frame's length in bytes.
    """

    time: float
    text: str = ""
    reasoning: str = ""
    tool: str = ""
    size: int = 0
    refusal: str = ""


class RequestRecord(msgspec.Struct):
    """One request as the server handled it (``Stats.log``).

    ``route`` is e.g. ``"openai.chat"``; ``request_id`` the id the answer carries (empty when
    the answer has none); ``fault`` the injected fault's label (``"reset"``, ``"error:18"``,
    ``"throttled"`` for a quota answer, …) or None; ``status`` the HTTP status sent (0 when
    the connection was dropped before a head); ``outcome``: ``"completed"``, ``"error"``
    (an error answer or error frame was sent), ``"disconnected"`` (the client left) or the
    fault kind that ended the body (``"reset"``, ``"truncate"``, ``"malformed"``).
    """

    route: str
    request_id: str
    started: float
    fault: str | None = None
    status: int = 0
    outcome: str = ""
    streamed: bool = False
    frames: list[SentFrame] = msgspec.field(default_factory=list)

    @property
    def text(self) -> str:
        """All text delivered, in order."""
        return "".join(f.text for f in self.frames)

    @property
    def reasoning(self) -> str:
        """All reasoning text delivered, in order."""
        return "".join(f.reasoning for f in self.frames)

    @property
    def content_times(self) -> list[float]:
        """When each frame carrying text, reasoning, a refusal or a tool call was sent."""
        return [f.time for f in self.frames if f.text or f.reasoning or f.tool or f.refusal]

    @property
    def first_frame_time(self) -> float | None:
        """When the first frame carrying text, reasoning or a tool call was sent."""
        times = self.content_times
        return times[0] if times else None

    @property
    def ttft(self) -> float | None:
        """Seconds from the request's arrival to its first content frame (the server's view)."""
        first = self.first_frame_time
        return None if first is None else first - self.started

    @property
    def inter_frame_times(self) -> list[float]:
        """Seconds between consecutive content frames (the server's inter-token latency)."""
        times = self.content_times
        return [b - a for a, b in itertools.pairwise(times)]


@dataclass
class Stats:
    """What the server saw (``emu.stats``); :meth:`reset` forgets it."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests per route name (``"openai.chat"``, ``"qianfan.token"``, …)."""
    in_flight: int = 0
    """Requests being handled now (streamed or not)."""
    max_in_flight: int = 0
    open_streams: int = 0
    max_open_streams: int = 0
    disconnects: int = 0
    completed: int = 0
    request_times: list[float] = field(default_factory=list)
    """When each request arrived (``time.monotonic()``)."""
    bodies: list[Any] = field(default_factory=list)
    """Each request's JSON body (or its query parameters, secrets left out)."""
    faults: Counter[str] = field(default_factory=Counter)
    """Injected faults by label (``"reset"``, ``"http:429"``, ``"error:18"``, …)."""
    throttled: Counter[str] = field(default_factory=Counter)
    """Quota answers per provider."""
    tokens_issued: Counter[str] = field(default_factory=Counter)
    """Access tokens issued per provider (``"qianfan"``, ``"gateway"``)."""
    log: list[RequestRecord] = field(default_factory=list)
    """The requests handled, in arrival order."""
    log_limit: int | None = LOG_LIMIT
    """How many of the latest requests ``log``, ``bodies`` and ``request_times`` keep at least
    (older ones are dropped in batches; None keeps all, 0 none)."""

    def add(self, record: RequestRecord, body: Any) -> None:
        """Count a request as it arrives."""
        limit = self.log_limit
        if limit == 0:
            return
        self.log.append(record)
        self.bodies.append(body)
        self.request_times.append(record.started)
        if limit is not None and len(self.log) >= 2 * limit:
            for kept in (self.log, self.bodies, self.request_times):
                del kept[: len(kept) - limit]

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.requests.clear()
        self.in_flight = self.max_in_flight = 0
        self.open_streams = self.max_open_streams = self.disconnects = self.completed = 0
        self.request_times.clear()
        self.bodies.clear()
        self.faults.clear()
        self.throttled.clear()
        self.tokens_issued.clear()
        self.log.clear()

    def record(self, request_id: str) -> RequestRecord | None:
        """The logged request whose answer carried ``request_id``."""
        for rec in reversed(self.log):
            if rec.request_id == request_id:
                return rec
        return None

    def summary(self) -> dict[str, Any]:
        """The counters as plain data (JSON-ready)."""
        return {
            "requests": dict(self.requests),
            "completed": self.completed,
            "disconnects": self.disconnects,
            "max_in_flight": self.max_in_flight,
            "max_open_streams": self.max_open_streams,
            "faults": dict(self.faults),
            "throttled": dict(self.throttled),
            "tokens_issued": dict(self.tokens_issued),
        }

    def records_by_id(self) -> dict[str, RequestRecord]:
        """The logged requests by request id (those without one left out)."""
        return {rec.request_id: rec for rec in self.log if rec.request_id}
