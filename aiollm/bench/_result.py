"""The types the bench modules share: the clock, a run in progress and the benchmark's result.

Below the runner, the progress line and the CLI; above only :mod:`._metrics` and the
renderers of :mod:`._report` (which know nothing of these classes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _report
from ._compare import render_intervals
from ._html import write_html
from ._metrics import RequestRecord, RunSummary, describe_load, summarize

__all__ = ["BenchResult", "RunState", "monotonic"]


def monotonic() -> float:
    """The clock every benchmark timestamp uses."""
    return time.perf_counter()


class RunState:
    """One model under one load level while it runs: the records so far and live counters."""

    def __init__(self, model: str, load: dict[str, Any]) -> None:
        self.model = model
        self.load = load
        self.label = f"{model} @ {describe_load(load)}"
        self.total: int | None = load.get("num_requests")
        self.duration_limit: float | None = load.get("duration_limit")
        self.records: list[RequestRecord] = []
        self.started: float | None = None
        self.ended: float | None = None
        self.finished = False
        self.in_flight = 0
        self.cancelled = 0
        self.warmup_failed = 0
        self.client: dict[str, Any] = {}
        """The client's self-measurement when other processes sent the load (else measured here)."""

    def elapsed(self) -> float:
        """Seconds since the measured part of the run began."""
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else monotonic()) - self.started

    def summary(self, slos: Mapping[str, float]) -> RunSummary:
        """The run's figures (partial when it was stopped)."""
        return summarize(
            self.model,
            dict(self.load),
            list(self.records),
            self.elapsed(),
            goodput_slos=slos,
            interrupted=not self.finished,
            cancelled=self.cancelled,
            warmup_failed=self.warmup_failed,
            started_at=self.started or 0.0,
        )


@dataclass
class BenchResult:
    """Every run's summary (records included), the configuration and how the benchmark ended.

    ``stopped_by``: the error that ended the benchmark early because no retry could fix it
    (a missing key, a rejected credential, an unknown model), else None. ``capacity``: the
    answer and steps of a capacity search (``--find-max``), else None.
    """

    runs: list[RunSummary]
    config: dict[str, Any]
    interrupted: bool = False
    emulator_url: str | None = None
    date: str = ""
    stopped_by: str | None = None
    capacity: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further top-level JSON keys (e.g. ``client`` self-measurement)."""

    def _meta(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "emulator": self.config.get("emulator"),
            "emulator_url": self.emulator_url,
            "interrupted": self.interrupted,
            "stopped_by": self.stopped_by,
        }

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        """One run: a flat vLLM-style dict; several runs: a list of them.

        A capacity search gives one dict: ``{"capacity": {...}, "runs": [...]}``.
        """
        return _report.result_json(self.runs, self._meta(), self.capacity, self.extra)

    def table(self) -> str:
        """The printed report."""
        text = _report.render_table(self.runs, self._meta(), self.capacity)
        groups = self.extra.get("confidence_intervals")
        if groups:
            text += "\n\n" + "\n".join(render_intervals(groups))
        return text

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        _report.write_json(self.to_json(), path)

    def write_jsonl(self, path: str | Path) -> None:
        """One JSON line per request (every run), with its timings in ms."""
        _report.write_jsonl(self.runs, path)

    def write_csv(self, path: str | Path) -> None:
        """One CSV row per request (every run), scalar columns only."""
        _report.write_csv(self.runs, path)

    def write_html(self, path: str | Path) -> None:
        """A single-file HTML report with the tables and charts (viewable offline)."""
        _report.parent_of(path)
        title = "aiollm bench — " + _report.plot_title(self.runs, self._meta())
        write_html(self.runs, self._meta(), self.capacity, title, path)

    def plot(self, path: str | Path) -> None:
        """Latency distributions and throughput over time as an image (needs matplotlib)."""
        _report.plot(self.runs, self._meta(), path)
