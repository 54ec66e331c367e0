"""A one-line progress display on stderr (no dependencies)."""

from __future__ import annotations

from typing import TextIO

import anyio

from ._result import RunState

__all__ = ["ProgressLine"]

_BAR = 20


class ProgressLine:
    """Redraws one status line while a run goes (on a terminal), then leaves its final state.

    Not on a terminal (a log file, CI), only each run's final line is written.
    """

    def __init__(self, out: TextIO, *, interval: float = 0.2, live: bool | None = None) -> None:
        self.out = out
        self.interval = interval
        isatty = getattr(out, "isatty", None)
        self.live = bool(isatty and isatty()) if live is None else live
        self._width = 0

    def render(self, run: RunState) -> str:
        """The status text of ``run``."""
        elapsed = run.elapsed()
        done = len(run.records)
        failed = sum(1 for r in run.records if not r.ok)
        if run.total is not None:
            frac = done / run.total if run.total else 1.0
            count = f"{done}/{run.total}"
        elif run.duration_limit:
            frac = min(1.0, elapsed / run.duration_limit)
            count = f"{done}"
        else:
            frac = 0.0
            count = f"{done}"
        filled = round(frac * _BAR)
        bar = "#" * filled + "." * (_BAR - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        return (
            f"{run.label}  [{bar}] {count}  failed {failed}  in flight {run.in_flight}  "
            f"{rate:.1f} req/s  {elapsed:.1f}s"
        )

    def _write(self, text: str, end: str = "") -> None:
        pad = max(0, self._width - len(text))
        self.out.write("\r" + text + " " * pad + end)
        self.out.flush()
        self._width = 0 if end else len(text)

    async def follow(self, run: RunState) -> None:
        """Redraw the line every ``interval`` seconds until cancelled."""
        if not self.live:
            await anyio.sleep_forever()
        while True:
            self._write(self.render(run))
            await anyio.sleep(self.interval)

    def done(self, run: RunState, note: str = "") -> None:
        """Write the run's final line."""
        text = self.render(run) + (f"  {note}" if note else "")
        if self.live:
            self._write(text, end="\n")
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def message(self, text: str) -> None:
        """A line of its own (e.g. "stopping…")."""
        if self.live and self._width:
            self._write("", end="")
            self.out.write("\r")
        self.out.write(text + "\n")
        self.out.flush()
        self._width = 0
