"""Capacity search: the highest request rate (or concurrency) that still meets the SLOs.

The search runs short steps of steady load. From ``start`` it doubles the load until a step
fails (or ``limit`` is reached), then bisects between the highest passing and the lowest
failing load until they are within ``resolution`` (relative: 0.1 = 10 % of the passing
load). The two loads that decide the answer are then run again (``repeats`` times in all):
the answer is the highest load whose every run passed, with the agreement of the repeats
as its confidence. A step fails when a metric misses its SLO, when errors pass the error
budget (throttling answers count as errors unless ``count_throttling`` is off), or when it
saturates: the queue of requests in flight grows without bound, or requests are still
unfinished ``drain`` seconds after the step stopped sending.

This module holds the search and the verdicts; the runner runs each step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import ConfigurationError
from ._metrics import RequestRecord, percentile, spec_items
from ._result import RunState

__all__ = [
    "SLO",
    "CapacitySearch",
    "StepTelemetry",
    "Verdict",
    "capacity_summary",
    "is_throttling",
    "judge",
    "parse_slos",
]

_SLO_RE = re.compile(r"^(ttft|tpot|itl|e2el)_(p\d+(?:\.\d+)?|mean|median)$")


@dataclass(frozen=True)
class SLO:
    """One target: ``ttft_p99 <= 2000`` (ms) or ``error_rate <= 0.01`` (a fraction)."""

    name: str
    limit: float

    @property
    def unit(self) -> str:
        """``ms`` for latencies, empty for the error rate."""
        return "" if self.name == "error_rate" else "ms"

    def measure(self, records: list[RequestRecord], error_rate: float) -> float | None:
        """This SLO's metric over a step's records (None when nothing was measured)."""
        if self.name == "error_rate":
            return error_rate
        metric, _, stat = self.name.partition("_")
        ok = [r for r in records if r.ok]
        if metric == "itl":
            values = [g * 1000.0 for r in ok for g in r.itl]
        else:
            values = [v * 1000.0 for r in ok if (v := getattr(r, metric)) is not None]
        if not values:
            return None
        if stat == "mean":
            return math.fsum(values) / len(values)
        q = 50.0 if stat == "median" else float(stat[1:])
        return percentile(sorted(values), q)


def parse_slos(specs: Iterable[str] | Mapping[str, float] | None) -> list[SLO]:
    """SLOs from ``["ttft_p99:2000", "tpot_p95:80", "error_rate:0.01"]`` (or a mapping).

    Latency metrics (``ttft``, ``tpot``, ``itl``, ``e2el``) take a statistic (``p50`` …
    ``p99.9``, ``median``, ``mean``) and a limit in ms; ``error_rate`` a fraction in [0, 1).
    Without an ``error_rate`` the budget is 0.01.
    """
    out: dict[str, SLO] = {}
    for name, value in spec_items(specs, "SLO", "NAME:LIMIT, e.g. ttft_p99:2000"):
        key = str(name).strip().lower()
        if key != "error_rate" and not _SLO_RE.match(key):
            raise ConfigurationError(
                f"unknown SLO {name!r}: use error_rate or METRIC_STAT with METRIC one of "
                "ttft, tpot, itl, e2el and STAT p50..p99.9, median or mean (e.g. ttft_p99)"
            )
        if key != "error_rate":
            q = key.rpartition("_")[2]
            if q.startswith("p") and not 0 < float(q[1:]) <= 100:
                raise ConfigurationError(f"SLO {name!r}: the percentile must be in (0, 100]")
        try:
            limit = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"SLO {key} needs a number (got {value!r})") from None
        if key == "error_rate" and not 0 <= limit < 1:
            raise ConfigurationError(f"error_rate must be in [0, 1) (got {value!r})")
        if key != "error_rate" and (not limit > 0 or math.isinf(limit)):
            raise ConfigurationError(f"SLO {key} must be > 0 ms (got {value!r})")
        out[key] = SLO(key, limit)
    out.setdefault("error_rate", SLO("error_rate", 0.01))
    return list(out.values())


def is_throttling(error: str | None) -> bool:
    """Whether an error key is a throttling answer (``RateLimitError[...]``, also mid-stream)."""
    return error is not None and "RateLimitError" in error


@dataclass
class StepTelemetry:
    """What the client saw of the quota during a step."""

    cooldown_s: float = 0.0
    """Seconds the client's limiter for the provider spent in a throttling cool-down (summed
    over the processes of a multi-process run)."""
    samples: int = 0
    early_stop: str = ""
    """Why the step stopped sending before its end (its errors passed the budget), else ""."""

    @classmethod
    def merge(cls, parts: Iterable[StepTelemetry]) -> StepTelemetry:
        """One step's telemetry from each process: cool-down and samples summed, the first early stop."""
        rows = list(parts)
        return cls(
            cooldown_s=sum(p.cooldown_s for p in rows),
            samples=sum(p.samples for p in rows),
            early_stop=next((p.early_stop for p in rows if p.early_stop), ""),
        )


@dataclass
class Verdict:
    """A step's outcome: ``passed``, ``failed`` (an SLO missed) or ``saturated``."""

    verdict: str
    reason: str = ""
    values: dict[str, float | None] = field(default_factory=dict)


def judge(
    state: RunState,
    slos: list[SLO],
    *,
    count_throttling: bool = True,
    early_stop: str = "",
) -> tuple[Verdict, dict[str, Any]]:
    """The verdict and figures of one step (``state`` holds its records and unfinished count)."""
    records = state.records
    unfinished = state.cancelled
    throttled: dict[str, int] = {}
    for r in records:
        if is_throttling(r.error):
            key = str(r.error)
            throttled[key] = throttled.get(key, 0) + 1
    counted = [r for r in records if count_throttling or not is_throttling(r.error)]
    failed = sum(1 for r in counted if not r.ok) + unfinished
    total = len(counted) + unfinished
    error_rate = failed / total if total else 0.0
    values: dict[str, float | None] = {}
    misses: list[str] = []
    for slo in slos:
        value = slo.measure(records, error_rate)
        values[slo.name] = None if value is None else round(value, 4)
        if value is None:
            if slo.name.startswith(("ttft", "e2el")):
                misses.append(f"no request completed to measure {slo.name}")
        elif value > slo.limit:
            misses.append(f"{slo.name} {value:.4g}{slo.unit} > {slo.limit:g}{slo.unit}")
    figures = {
        "completed": sum(1 for r in records if r.ok),
        "failed": sum(1 for r in records if not r.ok),
        "unfinished": unfinished,
        "error_rate": round(error_rate, 6),
        "throttled": throttled,
        "retries": sum(max(0, r.attempts - 1) for r in records),
    }
    if early_stop:
        return Verdict("saturated", early_stop, values), figures
    growth = _queue_growth(records)
    if unfinished:
        return Verdict(
            "saturated", f"{unfinished} request(s) unfinished after the drain time", values
        ), figures
    if growth:
        return Verdict("saturated", growth, values), figures
    if misses:
        return Verdict("failed", "; ".join(misses), values), figures
    return Verdict("passed", "", values), figures


def _queue_growth(records: list[RequestRecord]) -> str:
    """A reason when latency rose steadily through the step (a queue growing), else ""."""
    done = sorted((r for r in records if r.ok and r.ttft is not None), key=lambda r: r.start)
    if len(done) < 12:
        return ""
    third = len(done) // 3
    first = sorted(r.ttft or 0.0 for r in done[:third])
    last = sorted(r.ttft or 0.0 for r in done[-third:])
    a, b = percentile(first, 50), percentile(last, 50)
    if b > 2.0 * a and b - a > 0.25:
        return (
            f"queueing grows: median TTFT rose from {a * 1000:.0f} ms to {b * 1000:.0f} ms "
            "within the step"
        )
    return ""


Step = Callable[[float], Awaitable[dict[str, Any]]]
"""Runs one step at a load and returns its entry (with ``verdict``)."""


class CapacitySearch:
    """Doubling, then bisection, then repeats of the deciding steps.

    ``integer``: the load is a concurrency (whole numbers). ``resolution``: the answer is
    within this fraction of the true boundary (at least 1 for a concurrency).
    """

    def __init__(
        self,
        *,
        start: float,
        limit: float,
        resolution: float,
        repeats: int,
        integer: bool,
    ) -> None:
        if not start > 0 or not limit >= start:
            raise ConfigurationError(
                f"the search needs 0 < start <= limit (got {start:g}, {limit:g})"
            )
        if not 0 < resolution < 1:
            raise ConfigurationError(f"resolution must be in (0, 1) (got {resolution!r})")
        if repeats < 1:
            raise ConfigurationError(f"repeats must be >= 1 (got {repeats!r})")
        self.start = start
        self.limit = limit
        self.resolution = resolution
        self.repeats = repeats
        self.integer = integer
        self.steps: list[dict[str, Any]] = []

    def _norm(self, load: float) -> float:
        return float(max(1, round(load))) if self.integer else round(load, 4)

    def _close_enough(self, lo: float, hi: float) -> bool:
        if self.integer:
            return hi - lo <= max(1.0, math.floor(self.resolution * lo))
        return hi - lo <= self.resolution * lo

    async def run(self, step: Step, stopped: Callable[[], bool]) -> dict[str, Any]:
        """Search; returns the ``capacity`` dict (without the SLOs, added by the caller)."""
        runs: dict[float, list[bool]] = {}

        async def at(load: float, phase: str) -> bool:
            entry = await step(load)
            entry["phase"] = phase
            entry["step"] = len(self.steps) + 1
            self.steps.append(entry)
            ok = bool(entry["verdict"] == "passed")
            runs.setdefault(load, []).append(ok)
            return ok

        lo: float | None = None
        hi: float | None = None
        load = self._norm(self.start)
        # 1. double until a step fails (or the limit passes)
        while not stopped():
            if await at(load, "double"):
                lo = load
                if load >= self.limit:
                    break
                load = self._norm(min(self.limit, load * 2))
            else:
                hi = load
                break
        # 2. bisect
        while not stopped() and lo is not None and hi is not None:
            if self._close_enough(lo, hi):
                break
            mid = self._norm((lo + hi) / 2)
            if mid in (lo, hi):
                break
            if await at(mid, "bisect"):
                lo = mid
            else:
                hi = mid
        # 3. repeat the deciding steps; fall back while the passing one does not hold
        while not stopped():
            todo = [x for x in (lo, hi) if x is not None and len(runs[x]) < self.repeats]
            if not todo:
                break
            for x in todo:
                while len(runs[x]) < self.repeats and not stopped():
                    await at(x, "repeat")
            if lo is not None and not all(runs[lo]):
                # the answer did not hold: the next lower load that always passed
                hi = lo
                held = [x for x, oks in runs.items() if x < lo and all(oks)]
                lo = max(held) if held else None
        return self._answer(lo, hi, runs, stopped())

    def _answer(
        self, lo: float | None, hi: float | None, runs: dict[float, list[bool]], stopped: bool
    ) -> dict[str, Any]:
        agree = [ok for ok in runs.get(lo, [])] if lo is not None else []
        fails = [not ok for ok in runs.get(hi, [])] if hi is not None else []
        deciding = agree + fails
        confidence = round(sum(deciding) / len(deciding), 4) if deciding else None
        return {
            "answer": (int(lo) if self.integer else lo) if lo is not None else None,
            "lowest_failing": (int(hi) if self.integer and hi is not None else hi),
            "resolution": self.resolution,
            "repeats": self.repeats,
            "confidence": confidence,
            "deciding_runs": len(deciding),
            "deciding_agreed": sum(deciding),
            "interrupted": stopped,
            "reached_limit": lo is not None and hi is None and lo >= self.limit,
        }


def capacity_summary(found: Mapping[str, Any], key: str, slos: Iterable[SLO]) -> str:
    """One sentence: the answer with its resolution and confidence, or why there is none."""
    unit = "concurrent requests" if key == "max_concurrency" else "req/s"
    targets = ", ".join(f"{s.name} <= {s.limit:g}{s.unit}" for s in slos)
    answer = found.get(key)
    steps = found.get("steps") or []
    prefix = "(stopped early) " if found.get("interrupted") else ""
    if answer is None:
        lowest = min(steps, key=lambda st: st["load"]) if steps else None
        why = f": at {lowest['load']:g} {unit}, {lowest['reason']}" if lowest else ""
        return f"{prefix}no load tried meets the SLOs ({targets}){why}"
    confidence = found.get("confidence")
    agreed, runs = found.get("deciding_agreed"), found.get("deciding_runs")
    conf = (
        f", confidence {confidence:.0%} ({agreed} of {runs} runs of the deciding loads agreed)"
        if confidence is not None
        else ""
    )
    upper = found.get("lowest_failing")
    if upper is None:
        where = f"above {answer:g} {unit}, the search limit (it passed there)"
    else:
        res = found.get("resolution", 0.0)
        where = f"between {answer:g} and {upper:g} {unit} (resolution {res:.0%})"
    return (
        f"{prefix}max {unit} meeting the SLOs ({targets}): {answer:g}; "
        f"the boundary lies {where}{conf}"
    )
