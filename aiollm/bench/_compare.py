"""Repeated runs' confidence intervals, and the differences between two saved results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import ConfigurationError
from ._metrics import RunSummary, describe_load
from ._workload import read_json

__all__ = ["CI_METRICS", "compare", "confidence_intervals", "load_runs", "render_compare"]

CI_METRICS = (
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)
"""The figures given a confidence interval over repeated runs, and compared between results."""

# two-sided 95 % Student t quantiles by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
_T95.update({9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042})


def _t95(df: int) -> float:
    for key in sorted(_T95):
        if df <= key:
            return _T95[key]
    return 1.96


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence interval (Student t) of repeated measurements."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return {"mean": round(mean, 4), "ci95_low": None, "ci95_high": None, "n": n}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = _t95(n - 1) * sd / math.sqrt(n)
    return {
        "mean": round(mean, 4),
        "ci95_low": round(mean - half, 4),
        "ci95_high": round(mean + half, 4),
        "n": n,
        "values": [round(v, 4) for v in values],
    }


def confidence_intervals(runs: Sequence[RunSummary]) -> list[dict[str, Any]]:
    """Runs of the same model and load grouped, each figure's mean and 95 % interval."""
    groups: dict[tuple[str, str], list[RunSummary]] = {}
    for run in runs:
        groups.setdefault((run.model, describe_load(run.load)), []).append(run)
    out: list[dict[str, Any]] = []
    for (model, load), members in groups.items():
        figures: dict[str, Any] = {}
        for key in CI_METRICS:
            values = [float(v) for r in members if (v := r.figures.get(key)) is not None]
            if values:
                figures[key] = interval(values)
        out.append({"model": model, "load": load, "runs": len(members), "figures": figures})
    return out


def render_intervals(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table of :func:`confidence_intervals`."""
    lines: list[str] = []
    for group in groups:
        lines.append(f"{group['model']} @ {group['load']}: {group['runs']} runs, 95% intervals")
        for key, ci in group["figures"].items():
            if ci["ci95_low"] is None:
                continue
            lines.append(
                f"  {key:<22} {ci['mean']:>12,.2f}   [{ci['ci95_low']:,.2f} .. "
                f"{ci['ci95_high']:,.2f}]"
            )
    return lines


def load_runs(path: str | Path) -> list[dict[str, Any]]:
    """The runs of a saved result (a flat run, a list of runs, or ``{"runs": [...]}``)."""
    p = Path(path)
    data = read_json(p)
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        data = data["runs"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigurationError(f"{p.name}: not an aiollm bench result")
    return data


def _label(run: Mapping[str, Any]) -> str:
    return f"{run.get('model')} @ {describe_load(run)}"


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The differences of every compared figure, run by run (matched by model and load)."""
    by_label = {_label(r): r for r in b}
    rows: list[dict[str, Any]] = []
    for run in a:
        other = by_label.get(_label(run))
        if other is None:
            continue
        for key in CI_METRICS:
            x, y = run.get(key), other.get(key)
            if x is None or y is None:
                continue
            diff = float(y) - float(x)
            rel = diff / float(x) if x else None
            worse = diff < 0 if "throughput" in key else diff > 0
            rows.append(
                {
                    "run": _label(run),
                    "metric": key,
                    "a": x,
                    "b": y,
                    "diff": round(diff, 4),
                    "rel": None if rel is None else round(rel, 4),
                    "worse": worse and diff != 0,
                }
            )
    return rows


def render_compare(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> str:
    """The printed comparison."""
    lines = [f"a: {a}", f"b: {b}"]
    if not rows:
        lines.append("no run of a matches a run of b (same model and load)")
        return "\n".join(lines)
    current = None
    for row in rows:
        if row["run"] != current:
            current = row["run"]
            lines.append("")
            lines.append(f"{current}")
            lines.append(f"  {'figure':<22} {'a':>12} {'b':>12} {'b - a':>12} {'change':>9}")
        rel = f"{row['rel']:+.1%}" if row["rel"] is not None else "-"
        flag = "  worse" if row["worse"] else ""
        lines.append(
            f"  {row['metric']:<22} {row['a']:>12,.2f} {row['b']:>12,.2f} "
            f"{row['diff']:>+12,.2f} {rel:>9}{flag}"
        )
    return "\n".join(lines)
