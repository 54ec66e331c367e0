"""The bench measures itself: event-loop lag and its own CPU, to say when the client was the limit."""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio

from ._metrics import percentile

__all__ = [
    "CPU_LIMIT",
    "LAG_LIMIT_MS",
    "SelfWatch",
    "client_note",
    "client_processes",
    "merge_client",
    "old_objects_frozen",
]

LAG_LIMIT_MS = 20.0
"""Event-loop lag (p99) above which the client's own timestamps are late."""

CPU_LIMIT = 0.9
"""Share of one core above which the client process was saturated."""

_TICK = 0.01


@contextmanager
def old_objects_frozen() -> Iterator[None]:
    """While measuring, the garbage collector leaves the objects made before alone.

    One full collection first, then ``gc.freeze()``: a full collection of everything the
    process holds can stop the event loop for tens of ms, late for every stream at once; the
    collector still runs, over what the measured run allocates. Nothing is done when the
    collector is off or something else froze objects already.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class SelfWatch:
    """Samples the event loop's lag (how late a 10 ms sleep wakes) and the process CPU time."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lags: list[float] = []
        self.cpu: list[tuple[float, float]] = []

    async def follow(self) -> None:
        """Sample until cancelled."""
        clock, cpu = time.perf_counter, time.process_time
        self.cpu.append((clock(), cpu()))
        while True:
            before = clock()
            await anyio.sleep(_TICK)
            now = clock()
            self.times.append(now)
            self.lags.append(max(0.0, now - before - _TICK))
            if len(self.times) % 10 == 0:
                self.cpu.append((now, cpu()))

    def window(self, start: float | None, end: float | None) -> dict[str, Any]:
        """Lag and CPU between ``start`` and ``end`` (``time.perf_counter``)."""
        if start is None:
            return {}
        end = end if end is not None else time.perf_counter()
        self.cpu.append((time.perf_counter(), time.process_time()))
        i, j = bisect.bisect_left(self.times, start), bisect.bisect_right(self.times, end)
        lags = sorted(x * 1000.0 for x in self.lags[i:j])
        inside = [c for c in self.cpu if start <= c[0] <= end] or self.cpu[-2:]
        busy = None
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
            busy = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
        return client_figures([lags[-1]] if lags else [], lags, busy, 1)


def client_figures(
    maxima: list[float], lags: list[float], busy: float | None, processes: int
) -> dict[str, Any]:
    """The ``client_*`` keys of a run (lags in ms, sorted)."""
    p99 = percentile(lags, 99) if lags else None
    limited = (p99 is not None and p99 > LAG_LIMIT_MS) or (busy is not None and busy > CPU_LIMIT)
    return {
        "client_processes": processes,
        "client_loop_lag_p50_ms": round(percentile(lags, 50), 3) if lags else None,
        "client_loop_lag_p99_ms": round(p99, 3) if p99 is not None else None,
        "client_loop_lag_max_ms": round(max(maxima), 3) if maxima else None,
        "client_cpu_busy": round(busy, 4) if busy is not None else None,
        "client_limited": limited,
    }


def merge_client(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several processes' ``client_*`` figures as one: the worst of them (it limits the run)."""
    rows = [p for p in parts if p]
    if not rows:
        return {}

    def worst(key: str) -> float | None:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        return max(values) if values else None

    p99, busy = worst("client_loop_lag_p99_ms"), worst("client_cpu_busy")
    return {
        "client_processes": sum(int(r.get("client_processes") or 1) for r in rows),
        "client_loop_lag_p50_ms": worst("client_loop_lag_p50_ms"),
        "client_loop_lag_p99_ms": p99,
        "client_loop_lag_max_ms": worst("client_loop_lag_max_ms"),
        "client_cpu_busy": busy,
        "client_limited": any(bool(r.get("client_limited")) for r in rows),
    }


def client_note(figures: Mapping[str, Any]) -> str:
    """A plain sentence when the client was the limit, else ""."""
    if not figures.get("client_limited"):
        return ""
    lag, busy = figures.get("client_loop_lag_p99_ms"), figures.get("client_cpu_busy")
    why = []
    if lag is not None and lag > LAG_LIMIT_MS:
        why.append(f"its event loop ran {lag:.0f} ms late (p99)")
    if busy is not None and busy > CPU_LIMIT:
        why.append(f"a process used {busy:.0%} of a core")
    return (
        "warning: the client was the limit in this run (" + " and ".join(why) + "): TTFT, ITL, "
        "TPOT and e2el include the client's own delay; use --workers N or a lighter load"
    )


def client_processes(figures: Mapping[str, Any]) -> str:
    """How many processes sent the load, and why: ``2 processes (auto: ...)``."""
    n = figures.get("client_processes") or 1
    why = figures.get("client_processes_reason")
    return f"{n} process{'es' if n > 1 else ''}" + (f" ({why})" if why else "")
