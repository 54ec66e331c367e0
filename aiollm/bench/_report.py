"""The report: a printed table, result JSON (vLLM-style keys), per-request JSONL and CSV, a plot."""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .. import ConfigurationError, __version__
from ._metrics import METRICS, PERCENTILES, RequestRecord, RunSummary, describe_load
from ._selfwatch import client_note, client_processes

__all__ = [
    "CSV_COLUMNS",
    "plot",
    "render_table",
    "result_json",
    "write_csv",
    "write_json",
    "write_jsonl",
]

_LOAD_KEYS = ("concurrency", "request_rate", "max_concurrency")

CSV_COLUMNS = (
    "model",
    *_LOAD_KEYS,
    "index",
    "ok",
    "start_s",
    "queued_ms",
    "headers_ms",
    "ttft_ms",
    "tpot_ms",
    "e2el_ms",
    "mean_itl_ms",
    "max_itl_ms",
    "input_tokens",
    "output_tokens",
    "tokens_from_usage",
    "chunks",
    "output_chars",
    "output_tokens_per_s",
    "attempts",
    "error",
    "error_message",
    "session",
    "turn",
    "prompt_chars",
    "prompt_tokens",
    "reasoning_ttft_ms",
    "answer_ttft_ms",
    "limiter_wait_ms",
    "quota_remaining",
)
"""The columns of the per-request CSV."""

_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}


Meta = Mapping[str, Any]
"""What the renderers know of a benchmark besides its runs: ``date``, ``emulator`` (its
cadence), ``emulator_url``, ``interrupted``, ``stopped_by``."""


def run_json(run: RunSummary, meta: Meta) -> dict[str, Any]:
    """One run as a flat dict with vLLM-style keys."""
    out = run.to_dict()
    out["date"] = meta.get("date", "")
    out["backend"] = "aiollm"
    out["aiollm_version"] = __version__
    out["emulator"] = meta.get("emulator")
    if meta.get("stopped_by"):
        out["stopped_by"] = meta["stopped_by"]
    return out


def result_json(
    runs: Sequence[RunSummary],
    meta: Meta,
    capacity: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """A single run as one flat dict; several runs (models, sweep levels) as a list of them.

    With a capacity search (or ``extra`` keys), one dict: ``{"capacity": ..., "runs": [...]}``.
    """
    rows = [run_json(run, meta) for run in runs]
    if capacity is not None or extra:
        out: dict[str, Any] = {
            "date": meta.get("date", ""),
            "backend": "aiollm",
            "aiollm_version": __version__,
        }
        if capacity is not None:
            out["capacity"] = dict(capacity)
        out.update(extra or {})
        out["runs"] = rows
        return out
    if len(rows) == 1:
        return rows[0]
    return rows


def parent_of(path: str | Path) -> Path:
    """``path``, after checking its folder exists (a clear error otherwise)."""
    return _parent(path)


def _parent(path: str | Path) -> Path:
    p = Path(path)
    if p.parent and not p.parent.exists():
        raise ConfigurationError(f"cannot write {str(p)!r}: the folder does not exist")
    return p


def write_json(data: Any, path: str | Path) -> None:
    """The result JSON (see :func:`result_json`), indented."""
    text = msgspec.json.format(msgspec.json.encode(data), indent=2)
    _parent(path).write_bytes(text + b"\n")


def _request_rows(runs: Sequence[RunSummary]) -> list[tuple[RunSummary, RequestRecord]]:
    return [(run, rec) for run in runs for rec in run.records]


def write_jsonl(runs: Sequence[RunSummary], path: str | Path) -> None:
    """One JSON object per request, with the load it ran under."""
    encode = msgspec.json.encode
    with _parent(path).open("wb") as f:
        for run, rec in _request_rows(runs):
            row = rec.to_dict()
            for key in _LOAD_KEYS:
                row[key] = run.load.get(key)
            f.write(encode(row) + b"\n")


def write_csv(runs: Sequence[RunSummary], path: str | Path) -> None:
    """One CSV row per request (:data:`CSV_COLUMNS`)."""
    with _parent(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for run, rec in _request_rows(runs):
            row = rec.to_dict()
            itl = row.pop("itl_ms")
            row.pop("delta_ms")
            row["mean_itl_ms"] = round(sum(itl) / len(itl), 4) if itl else None
            row["max_itl_ms"] = max(itl) if itl else None
            for key in _LOAD_KEYS:
                row[key] = run.load.get(key)
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _fmt(value: Any, width: int, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width},.{digits}f}"
    return f"{value:>{width}}"


def _run_block(run: RunSummary) -> list[str]:
    f = run.figures
    status = "  (stopped: partial)" if run.interrupted else ""
    lines = [
        f"{run.label}{status}",
        f"  completed {f['completed']}, failed {f['failed']}"
        + (f", cancelled {run.cancelled}" if run.cancelled else "")
        + f" in {run.duration:.2f} s",
        f"  request throughput {f['request_throughput']:,.2f} req/s    "
        f"output throughput {f['output_throughput']:,.1f} tok/s    "
        f"total token throughput {f['total_token_throughput']:,.1f} tok/s",
        f"  input tokens {f['total_input_tokens']:,}    output tokens {f['total_output_tokens']:,}",
    ]
    queued = f.get("mean_queued_ms")
    if queued:
        lines.append(
            f"  requests waited {queued:,.1f} ms on average for a free slot before being sent "
            "(not in TTFT or e2el)"
        )
    if run.goodput_slos:
        slos = ", ".join(f"{k} <= {v:g} ms" for k, v in run.goodput_slos.items())
        lines.append(f"  goodput {f['request_goodput']:,.2f} req/s ({slos})")
    head = (
        "  "
        + f"{'ms':<6}"
        + "".join(f"{h:>10}" for h in ("mean", "std", "median", *(f"p{q}" for q in PERCENTILES)))
    )
    lines.append(head)
    for m in METRICS:
        cells = [
            f[f"mean_{m}_ms"],
            f[f"std_{m}_ms"],
            f[f"median_{m}_ms"],
            *(f[f"p{q}_{m}_ms"] for q in PERCENTILES),
        ]
        lines.append("  " + f"{_NAMES[m]:<6}" + "".join(_fmt(c, 10) for c in cells))
    if f.get("median_reasoning_ttft_ms") is not None:
        lines.append(
            f"  reasoning: first reasoning token {f['median_reasoning_ttft_ms']:,.1f} ms, first "
            f"answer token {_fmt(f['median_answer_ttft_ms'], 0).strip()} ms (medians; p99 "
            f"{_fmt(f['p99_reasoning_ttft_ms'], 0).strip()} / "
            f"{_fmt(f['p99_answer_ttft_ms'], 0).strip()} ms)"
        )
    if f.get("mean_prompt_tokens") is not None:
        lines.append(f"  prompts: {f['mean_prompt_tokens']:,.1f} tokens on average")
    elif f.get("mean_prompt_chars"):
        lines.append(f"  prompts: {f['mean_prompt_chars']:,.1f} characters on average")
    tpc = f.get("mean_tokens_per_chunk")
    done = [r for r in run.records if r.ok]
    if done and all(r.chunks <= 1 for r in done):
        lines.append(
            "  note: every reply arrived as one chunk (not streamed): TTFT is the time to the "
            "whole reply; TPOT and ITL are undefined"
        )
    elif tpc is not None and tpc > 1.5:
        lines.append(
            f"  note: a chunk carries {tpc:.1f} tokens on average: ITL is measured per chunk "
            "(Qianfan sends a sentence per chunk), TPOT per token"
        )
    if f.get("output_tokens_from_usage") is False:
        lines.append("  note: no usage reported: output tokens counted as text chunks")
    if run.errors:
        errs = ", ".join(f"{k} × {v}" for k, v in run.errors.items())
        lines.append(f"  errors: {errs}")
        for key in run.errors:
            example = next((r.error_message for r in run.records if r.error == key), None)
            if example:
                text = example if len(example) <= 160 else example[:157] + "..."
                lines.append(f"    {key}: {text}")
    note = client_note(f)
    head = "  client: " + client_processes(f)
    if note:
        lines.extend([head, "  " + note])
    elif f.get("client_loop_lag_p99_ms") is not None:
        busy = f.get("client_cpu_busy")
        lines.append(
            f"{head}; event-loop lag p99 {f['client_loop_lag_p99_ms']:.1f} ms"
            + (f", CPU {busy:.0%} of a core" if busy is not None else "")
            + (" (the worst process)" if f["client_processes"] > 1 else "")
            + ": not the limit"
        )
    if run.warmup_failed:
        lines.append(f"  warm-up: {run.warmup_failed} request(s) failed (not counted)")
    return lines


def _comparison(runs: Sequence[RunSummary]) -> list[str]:
    width = max(len(r.label) for r in runs)
    cols = (
        "ok",
        "fail",
        "req/s",
        "tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "ITL p50",
        "E2EL p50",
    )
    goodput = any(r.goodput_slos for r in runs)
    head = f"{'model @ load':<{width}}" + "".join(f"{c:>10}" for c in cols)
    if goodput:
        head += f"{'goodput':>10}"
    lines = [head]
    for r in runs:
        f = r.figures
        cells = [
            _fmt(f["completed"], 10),
            _fmt(f["failed"], 10),
            _fmt(f["request_throughput"], 10, 2),
            _fmt(f["output_throughput"], 10),
            _fmt(f["median_ttft_ms"], 10),
            _fmt(f["p99_ttft_ms"], 10),
            _fmt(f["median_tpot_ms"], 10),
            _fmt(f["median_itl_ms"], 10),
            _fmt(f["median_e2el_ms"], 10),
        ]
        if goodput:
            cells.append(_fmt(f["request_goodput"], 10, 2))
        lines.append(f"{r.label:<{width}}" + "".join(cells))
    return lines


def render_table(
    runs: Sequence[RunSummary], meta: Meta, capacity: Mapping[str, Any] | None = None
) -> str:
    """The printed report: one block per run, then a comparison when there are several."""
    lines: list[str] = []
    emu = meta.get("emulator")
    if meta.get("emulator_url") and emu:
        lines.append(
            f"embedded emulator at {meta['emulator_url']}: first token "
            f"{emu.get('first_token', 0) * 1000:g} ms, then {emu.get('per_token', 0) * 1000:g} "
            "ms per token" + (f", quota {emu['quota_rps']:g} req/s" if emu.get("quota_rps") else "")
        )
    if capacity is not None:
        if lines:
            lines.append("")
        lines.extend(render_capacity(capacity))
    else:
        for run in runs:
            if lines:
                lines.append("")
            lines.extend(_run_block(run))
        if len(runs) > 1:
            lines.append("")
            lines.extend(_comparison(runs))
    if not runs:
        lines.append("no run finished its warm-up: nothing to report")
    if meta.get("stopped_by"):
        lines.append("")
        lines.append(f"stopped after the first failure no retry can fix: {meta['stopped_by']}")
    elif meta.get("interrupted"):
        lines.append("")
        lines.append("the benchmark was stopped early: figures cover what finished")
    return "\n".join(lines)


def render_capacity(capacity: Mapping[str, Any]) -> list[str]:
    """The steps of a capacity search and its answer."""
    slos = ", ".join(
        f"{k} <= {v:g}{'' if k == 'error_rate' else ' ms'}"
        for k, v in (capacity.get("slos") or {}).items()
    )
    lines = [f"capacity search over {capacity.get('search', 'request_rate')} (SLOs: {slos})"]
    head = f"  {'step':>4} {'load':>10} {'ok':>6} {'fail':>5} {'err %':>6}"
    head += f" {'TTFT p99':>9} {'TPOT p95':>9} {'throttled':>9} {'retries':>7}"
    head += f" {'cooldown':>8} {'verdict':>10}"
    lines.append(head)
    for step in capacity.get("steps", []):
        lines.append(
            f"  {step['step']:>4} {step['load']:>10g} {step['completed']:>6} "
            f"{step['failed']:>5} {step['error_rate'] * 100:>6.1f}"
            + _fmt(step.get("p99_ttft_ms"), 10)
            + _fmt(step.get("p95_tpot_ms"), 10)
            + f"{sum((step.get('throttled') or {}).values()):>10}"
            + f"{step.get('retries', 0):>8}"
            + f"{step.get('cooldown_s', 0.0):>8.2f}s"
            + f" {step['verdict']:>10}"
            + (f"  ({step['reason']})" if step.get("reason") else "")
        )
    lines.append("")
    lines.append("  " + str(capacity.get("summary", "")))
    if capacity.get("client_processes"):
        lines.append("  client: " + client_processes(capacity))
    return lines


def _throughput_series(run: RunSummary, bins: int = 40) -> tuple[list[float], list[float]]:
    """Output tokens per second over the run, in ``bins`` equal time slices."""
    span = max(run.duration, 1e-6)
    width = span / bins
    counts = [0.0] * bins
    for rec in run.records:
        if not rec.ok or not rec.delta_times:
            continue
        per_delta = rec.output_tokens / len(rec.delta_times)
        for t in rec.delta_times:
            i = min(bins - 1, max(0, int((rec.start + t) / width)))
            counts[i] += per_delta
    xs = [(i + 0.5) * width for i in range(bins)]
    return xs, [c / width for c in counts]


def _metric_values(run: RunSummary, metric: str) -> list[float]:
    """One metric of a run's completed requests, in ms (ITL: every gap)."""
    ok = [r for r in run.records if r.ok]
    if metric == "itl":
        return [x * 1000 for r in ok for x in r.itl]
    return [v * 1000 for r in ok if (v := getattr(r, metric)) is not None]


def _bin_edges(values: list[float], bins: int = 40) -> list[float]:
    """Shared histogram edges (a unit-wide bin when every value is about the same)."""
    if not values:
        return [0.0, 1.0]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-3:
        return [lo - 0.5, hi + 0.5]
    step = (hi - lo) / bins
    return [lo + step * i for i in range(bins)] + [hi]


def plot_title(runs: Sequence[RunSummary], meta: Meta) -> str:
    """``date — model(s) — load(s)`` for the top of a plot."""
    models = ", ".join(dict.fromkeys(run.model for run in runs)) or "no runs"
    loads = ", ".join(dict.fromkeys(describe_load(run.load) for run in runs))
    date = str(meta.get("date", ""))
    return " — ".join(part for part in (date, models, loads) if part)


def plot(runs: Sequence[RunSummary], meta: Meta, path: str | Path) -> None:
    """Histograms of TTFT, TPOT, ITL and E2EL per run, and output throughput over time."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise ConfigurationError(
            "plotting needs matplotlib: pip install 'aiollm-client[plot]' (or pip install matplotlib)"
        ) from None
    target = _parent(path)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = list(axes.flat)
    for ax, metric in zip(panels[:4], METRICS, strict=True):
        series = [(run.label, _metric_values(run, metric)) for run in runs]
        edges = _bin_edges([v for _, values in series for v in values])
        for label, values in series:
            if values:
                ax.hist(values, bins=edges, alpha=0.5, label=label)
        ax.set_title(f"{_NAMES[metric]} distribution")
        ax.set_xlabel("ms")
        ax.set_ylabel("count")
    ax = panels[4]
    for run in runs:
        xs, ys = _throughput_series(run)
        ax.plot(xs, ys, label=run.label)
    ax.set_title("output throughput over time")
    ax.set_xlabel("s since the run began")
    ax.set_ylabel("tokens/s")
    ax = panels[5]
    for run in runs:
        ends = sorted(r.start + (r.e2el or 0.0) for r in run.records if r.ok)
        ax.step(ends, range(1, len(ends) + 1), where="post", label=run.label)
    ax.set_title("completed requests over time")
    ax.set_xlabel("s since the run began")
    ax.set_ylabel("requests")
    handles, labels = panels[4].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize="small")
    fig.suptitle(plot_title(runs, meta), fontsize="medium")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(str(target), dpi=100)
    plt.close(fig)
