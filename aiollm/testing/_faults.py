"""Scripted and random faults: what can go wrong with one request, and a seeded chooser."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "RandomFaults"]

FaultKind = Literal[
    "error", "http", "reset", "stall", "keepalive", "malformed", "truncate", "content_type"
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "error",
    "http",
    "reset",
    "stall",
    "keepalive",
    "malformed",
    "truncate",
    "content_type",
)


@dataclass
class Fault:
    """One scripted failure, taken by the next matching request.

    Position: ``after_tokens`` counts the content frames (text, reasoning or tool-call pieces)
    sent before the fault acts; 0 is before the first one.

    - ``error``: the provider's own error (``code``, ``message``) in its real wire shape. At
      ``after_tokens=0`` it answers the request (HTTP ``status`` where the provider uses one,
      else its usual 200), unless ``in_stream``: then a streamed request gets HTTP 200 and the
      error as its first frame. With ``after_tokens>0`` it comes inside the stream.
    - ``http``: a bare HTTP ``status`` before anything is sent (``Retry-After: retry_after``
      when set).
    - ``reset``: the connection is dropped (after the response head, when streaming).
    - ``stall``: nothing more is sent until the client leaves.
    - ``keepalive``: only ``: keep-alive`` comments, every ``interval`` seconds, until the
      client leaves (a streamed request; otherwise a stall).
    - ``malformed``: a frame (or a body) that is not valid JSON, then the end of the body.
    - ``truncate``: the body ends cleanly without the rest (no final frame).
    - ``content_type``: HTTP 200 with an HTML page instead of the provider's answer.

    ``expire_token`` also invalidates the access token the request used (Qianfan, gateway), so
    only a token refresh recovers, as on the real services. ``route`` restricts the fault to
    one route name (``"chat"``, ``"token"``, …).
    """

    kind: FaultKind = "error"
    code: str | int | None = None
    message: str = "scripted fault"
    status: int | None = None
    retry_after: float | None = None
    after_tokens: int = 0
    route: str | None = None
    """Only requests to this route name (e.g. ``"chat"``, ``"token"``) take the fault."""
    in_stream: bool = False
    interval: float = 0.05
    expire_token: bool = False

    @property
    def label(self) -> str:
        """A short name for statistics: the kind, and the code or status when there is one."""
        detail = self.code if self.code is not None else self.status
        return self.kind if detail is None else f"{self.kind}:{detail}"


@dataclass(frozen=True)
class FaultChoice:
    """One entry of a provider's random-fault menu: a fault template and where it may act.

    ``where``: ``"start"`` (before the first frame), ``"mid"`` (after at least one frame) or
    ``"any"``.
    """

    fault: Fault
    where: Literal["start", "mid", "any"] = "any"


class RandomFaults:
    """Inject a fault into a share ``rate`` of requests, reproducibly for a given ``seed``.

    Each provider draws from its own generator in the order its requests arrive, so the
    sequence of faults per provider depends only on the seed. ``kinds`` restricts the menu
    to those fault kinds.
    """

    def __init__(
        self, rate: float, seed: int | None = None, kinds: Sequence[FaultKind] | None = None
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        self.rate = rate
        self.seed = seed
        self.kinds = frozenset(kinds) if kinds is not None else None
        self._rngs: dict[str, random.Random] = {}

    def draw(self, provider: str, menu: Sequence[FaultChoice], frames: int) -> Fault | None:
        """A fault for the next request of ``provider`` (``frames`` content frames), or None."""
        if self.rate <= 0.0:
            return None
        rng = self._rngs.get(provider)
        if rng is None:
            rng = self._rngs[provider] = random.Random(f"{self.seed}/{provider}")
        if rng.random() >= self.rate:
            return None
        choices = [c for c in menu if self.kinds is None or c.fault.kind in self.kinds]
        if not choices:
            return None
        choice = rng.choice(choices)
        if choice.where == "start" or frames < 2:
            after = 0
        elif choice.where == "mid":
            after = rng.randrange(1, frames)
        else:
            after = rng.randrange(0, frames)
        return replace(choice.fault, after_tokens=after)


COMMON_MENU: tuple[FaultChoice, ...] = (
    FaultChoice(Fault("reset"), "mid"),
    FaultChoice(Fault("reset"), "start"),
    FaultChoice(Fault("stall"), "start"),
    FaultChoice(Fault("stall"), "mid"),
    FaultChoice(Fault("keepalive"), "any"),
    FaultChoice(Fault("truncate"), "mid"),
    FaultChoice(Fault("malformed"), "any"),
    FaultChoice(Fault("content_type"), "start"),
    FaultChoice(Fault("http", status=500, message="internal error"), "start"),
    FaultChoice(Fault("http", status=502, message="bad gateway"), "start"),
    FaultChoice(Fault("http", status=503, message="unavailable"), "start"),
)
"""Faults every provider can take; each provider adds its own throttles and error bodies."""
