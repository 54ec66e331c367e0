"""A single-file HTML report: the tables and inline SVG charts, viewable offline (no scripts fetched).

Charts: each run's latency distributions and output throughput over time; with a capacity
search, the capacity curve (TTFT p99 and error rate per load, with the SLO lines) and the
quota telemetry of every step. A small inline script only counts the charts it finds and
records any script error on ``<body data-charts data-errors>``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._metrics import METRICS, RunSummary

__all__ = ["render_html", "write_html"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
_W, _H, _PAD = 560, 260, 46


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return _esc(value)


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _frame(title: str, xlabel: str, ylabel: str, body: str, x0: float, x1: float, y1: float) -> str:
    ticks = []
    for i in range(5):
        fy = y1 * i / 4
        y = _H - _PAD - (_H - 2 * _PAD) * i / 4
        ticks.append(
            f'<text x="{_PAD - 4}" y="{y + 4:.1f}" text-anchor="end" class="t">{fy:,.4g}</text>'
            f'<line x1="{_PAD}" x2="{_W - 10}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
        )
        fx = x0 + (x1 - x0) * i / 4
        x = _PAD + (_W - _PAD - 10) * i / 4
        ticks.append(
            f'<text x="{x:.1f}" y="{_H - _PAD + 14}" text-anchor="middle" class="t">{fx:,.4g}</text>'
        )
    return (
        f'<figure class="chart"><figcaption>{_esc(title)}</figcaption>'
        f'<svg class="chart-svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
        f'role="img" aria-label="{_esc(title)}">{"".join(ticks)}{body}'
        f'<text x="{_W / 2}" y="{_H - 6}" text-anchor="middle" class="a">{_esc(xlabel)}</text>'
        f'<text x="12" y="{_H / 2}" transform="rotate(-90 12 {_H / 2})" text-anchor="middle" '
        f'class="a">{_esc(ylabel)}</text></svg></figure>'
    )


def line_chart(
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    hlines: Sequence[tuple[float, str]] = (),
) -> str:
    """Lines (with points) and dashed horizontal reference lines."""
    xs = [x for _, sx, _ in series for x in sx] or [0.0, 1.0]
    ys = [y for _, _, sy in series for y in sy] + [h for h, _ in hlines] + [0.0]
    x0, x1, y1 = min(xs), max(xs), max(ys) * 1.1 or 1.0
    sx, sy = _scale(x0, x1, _PAD, _W - 10), _scale(0.0, y1, _H - _PAD, _PAD)
    parts = []
    for i, (label, px, py) in enumerate(series):
        color = _COLORS[i % len(_COLORS)]
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(px, py, strict=True))
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
            f"<title>{_esc(label)}</title></polyline>"
        )
        parts.extend(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>'
            for x, y in zip(px, py, strict=True)
        )
        parts.append(
            f'<text x="{_W - 14}" y="{_PAD + 14 * i}" text-anchor="end" fill="{color}" '
            f'class="t">{_esc(label)}</text>'
        )
    for value, label in hlines:
        y = sy(value)
        parts.append(
            f'<line x1="{_PAD}" x2="{_W - 10}" y1="{y:.1f}" y2="{y:.1f}" class="slo"/>'
            f'<text x="{_PAD + 4}" y="{y - 4:.1f}" class="t slo-t">{_esc(label)}</text>'
        )
    return _frame(title, xlabel, ylabel, "".join(parts), x0, x1, y1)


def histogram(title: str, xlabel: str, values: Sequence[float], bins: int = 30) -> str:
    """Counts of ``values`` in equal bins."""
    if not values:
        return _frame(title, xlabel, "count", "", 0.0, 1.0, 1.0)
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    top = max(counts) * 1.1
    sx, sy = _scale(lo, hi, _PAD, _W - 10), _scale(0.0, top, _H - _PAD, _PAD)
    bars = "".join(
        f'<rect x="{sx(lo + i * width):.1f}" y="{sy(c):.1f}" '
        f'width="{max(1.0, sx(lo + width) - sx(lo) - 1):.1f}" height="{sy(0) - sy(c):.1f}" '
        f'fill="{_COLORS[0]}"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
    )
    return _frame(title, xlabel, "count", bars, lo, hi, top)


def _run_table(runs: Sequence[RunSummary]) -> str:
    head = ["run", "ok", "failed", "req/s", "out tok/s", "total tok/s"]
    for m in METRICS:
        head += [f"{m.upper()} median", f"{m.upper()} p99"]
    rows = []
    for run in runs:
        f = run.figures
        cells = [run.label, f["completed"], f["failed"], f["request_throughput"]]
        cells += [f["output_throughput"], f["total_token_throughput"]]
        for m in METRICS:
            cells += [f[f"median_{m}_ms"], f[f"p99_{m}_ms"]]
        rows.append("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in cells) + "</tr>")
    return (
        '<table class="runs"><thead><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _throughput(run: RunSummary, bins: int = 30) -> tuple[list[float], list[float]]:
    span = max(run.duration, 1e-6)
    width = span / bins
    counts = [0.0] * bins
    for rec in run.records:
        if rec.ok and rec.delta_times:
            share = rec.output_tokens / len(rec.delta_times)
            for t in rec.delta_times:
                counts[min(bins - 1, max(0, int((rec.start + t) / width)))] += share
    return [(i + 0.5) * width for i in range(bins)], [c / width for c in counts]


def _capacity(capacity: Mapping[str, Any]) -> str:
    steps = sorted(capacity.get("steps") or [], key=lambda s: s["load"])
    slos = capacity.get("slos") or {}
    loads = [float(s["load"]) for s in steps]
    parts = [f"<h2>Capacity</h2><p>{_esc(capacity.get('summary', ''))}</p>"]
    ttft = [
        (x, float(s["p99_ttft_ms"]))
        for x, s in zip(loads, steps, strict=True)
        if s.get("p99_ttft_ms") is not None
    ]
    lines = [(v, f"SLO {k} {v:g} ms") for k, v in slos.items() if k.startswith("ttft")]
    parts.append(
        line_chart(
            "capacity curve: TTFT p99 by load",
            str(capacity.get("unit", "load")),
            "ms",
            [("TTFT p99", [x for x, _ in ttft], [y for _, y in ttft])],
            lines,
        )
    )
    errors = [float(s["error_rate"]) for s in steps]
    parts.append(
        line_chart(
            "capacity curve: error rate by load",
            str(capacity.get("unit", "load")),
            "error rate",
            [("error rate", loads, errors)],
            [(float(slos.get("error_rate", 0.01)), "SLO error_rate")],
        )
    )
    head = ["step", "load", "verdict", "ok", "failed", "throttled", "retries", "cool-down s"]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_num(c)}</td>"
            for c in (
                s["step"],
                s["load"],
                s["verdict"],
                s["completed"],
                s["failed"],
                ", ".join(f"{k} × {v}" for k, v in (s.get("throttled") or {}).items()) or "0",
                s.get("retries", 0),
                s.get("cooldown_s", 0.0),
            )
        )
        + "</tr>"
        for s in capacity.get("steps") or []
    )
    parts.append(
        "<h3>Quota telemetry</h3><table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{rows}</tbody></table>"
    )
    return "".join(parts)


_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 18px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-weight:600;margin:4px 0}.t{font-size:10px;fill:#555}
.a{font-size:11px;fill:#333}.g{stroke:#eee}.slo{stroke:#d62728;stroke-dasharray:6 4}
.slo-t{fill:#d62728}
"""

_SCRIPT = """
window.addEventListener('error', function () {
  document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
});
window.addEventListener('DOMContentLoaded', function () {
  var n = 0;
  document.querySelectorAll('svg.chart-svg').forEach(function (svg) {
    if (svg.getBBox().width > 0) { n += 1; }
  });
  document.body.dataset.charts = String(n);
  document.body.dataset.errors = document.body.dataset.errors || '0';
});
"""


def render_html(
    runs: Sequence[RunSummary],
    meta: Mapping[str, Any],
    capacity: Mapping[str, Any] | None,
    title: str,
) -> str:
    """The whole report as one HTML document."""
    parts = [f"<h1>{_esc(title)}</h1>", "<h2>Runs</h2>", _run_table(runs)]
    if capacity is not None:
        parts.append(_capacity(capacity))
    for run in runs:
        charts = []
        ok = [r for r in run.records if r.ok]
        for m in METRICS:
            if m == "itl":
                values = [g * 1000 for r in ok for g in r.itl]
            else:
                values = [v * 1000 for r in ok if (v := getattr(r, m)) is not None]
            charts.append(histogram(f"{m.upper()} distribution", "ms", values))
        xs, ys = _throughput(run)
        charts.append(
            line_chart("output throughput over time", "s", "tokens/s", [("tok/s", xs, ys)])
        )
        parts.append(f"<h2>{_esc(run.label)}</h2><div class='charts'>{''.join(charts)}</div>")
    if meta.get("stopped_by"):
        parts.append(f"<p><b>Stopped:</b> {_esc(meta['stopped_by'])}</p>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style>"
        f"<script>{_SCRIPT}</script></head><body>{''.join(parts)}</body></html>"
    )


def write_html(
    runs: Sequence[RunSummary],
    meta: Mapping[str, Any],
    capacity: Mapping[str, Any] | None,
    title: str,
    path: str | Path,
) -> None:
    """Write :func:`render_html` to ``path``."""
    Path(path).write_text(render_html(runs, meta, capacity, title), encoding="utf-8")
