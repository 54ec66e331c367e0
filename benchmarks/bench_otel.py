"""What OpenTelemetry costs a stream: the extra absent, installed but unconfigured, configured.

Four modes, each in its own interpreter, in the same run and against the same local server:

- ``absent``: ``opentelemetry`` cannot be imported (as without ``aiollm-client[otel]``);
- ``unconfigured``: the API is imported, no tracer or meter provider is set (the default);
- ``unconfigured, off``: the same with ``Client(otel=False)`` (what importing the API costs
  by itself, apart from aiollm's check);
- ``no-op export``: the SDK's tracer and meter providers are set globally, spans go through a
  ``BatchSpanProcessor`` to an exporter that drops them, metrics to an in-memory reader: every
  span and histogram point is built, only the export is skipped.

Workloads: one long OpenAI-format stream (``--frames``, text deltas/s) and ``--calls``
sequential 16-frame streams (calls/s, where the per-call span and metrics show). Each worker
warms up, then takes the best of 3; the parent alternates the modes' order over ``--runs`` and
reports each mode's best, and its ratio to ``absent``.

    python benchmarks/bench_otel.py [--runs 3] [--frames 50000] [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from _local import HERE, aiollm_settings, aiollm_stream, local_server, machine_line

MODES = ("absent", "unconfigured", "unconfigured, off", "no-op export")

BLOCK_OTEL = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _Absent())
"""


def _configure() -> Any:
    """Global SDK providers with an exporter that drops everything; returns the exporter."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            Drop.spans += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return provider, Drop


async def _worker(mode: str, origin: str, frames: int, calls: int) -> dict[str, Any]:
    exporter = None
    if mode.startswith("unconfigured"):
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    elif mode == "no-op export":
        provider, exporter = _configure()
    from aiollm import Client

    otel = not mode.endswith(", off")
    async with Client(providers=aiollm_settings(origin), env={}, otel=otel) as client:
        await aiollm_stream(client, "openai", frames)
        await aiollm_stream(client, "openai", 16)
        stream_s: list[float] = []
        calls_s: list[float] = []
        for _ in range(3):
            t0 = time.perf_counter()
            n = await aiollm_stream(client, "openai", frames)
            stream_s.append(time.perf_counter() - t0)
            assert n == frames
            t0 = time.perf_counter()
            for _ in range(calls):
                await aiollm_stream(client, "openai", 16)
            calls_s.append(time.perf_counter() - t0)
    spans = None
    if exporter is not None:
        provider.force_flush()
        spans = exporter.spans
    return {
        "stream": frames / min(stream_s),
        "calls": calls / min(calls_s),
        "spans": spans,
        "otel_loaded": "opentelemetry.trace" in sys.modules,
    }


def _run_worker(mode: str, origin: str, frames: int, calls: int) -> dict[str, Any]:
    script = str(HERE / "bench_otel.py")
    argv = [script, "--worker", mode, "--origin", origin, "--frames", str(frames)]
    argv += ["--calls", str(calls)]
    code = (BLOCK_OTEL if mode == "absent" else "") + (
        f"import runpy, sys; sys.path.insert(0, {str(HERE)!r}); sys.argv = {argv!r}; "
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=600
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--origin", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        result = asyncio.run(_worker(args.worker, args.origin, args.frames, args.calls))
        print(json.dumps(result))
        return
    print("OpenTelemetry overhead: stream throughput and calls/s with the extra absent,")
    print("installed but unconfigured, and configured with a no-op exporter")
    print(machine_line())
    print(
        f"best of {args.runs} runs (each the best of 3 in a fresh interpreter); local server "
        "in a separate process\n"
    )
    best: dict[str, dict[str, float]] = {m: {"stream": 0.0, "calls": 0.0} for m in MODES}
    notes: dict[str, Any] = {}
    with local_server() as origin:
        for run in range(args.runs):
            order = MODES[run % len(MODES) :] + MODES[: run % len(MODES)]
            for mode in order:
                r = _run_worker(mode, origin, args.frames, args.calls)
                for key in ("stream", "calls"):
                    best[mode][key] = max(best[mode][key], r[key])
                notes[mode] = (r["otel_loaded"], r["spans"])
    base = best["absent"]
    print(
        f"{'mode':<16}{'deltas/s (' + format(args.frames, ',') + ' frames)':>30}{'ratio':>8}"
        f"{'calls/s (16 frames)':>22}{'ratio':>8}  opentelemetry loaded, spans exported"
    )
    for mode in MODES:
        b = best[mode]
        loaded, spans = notes[mode]
        print(
            f"{mode:<16}{b['stream']:>30,.0f}{b['stream'] / base['stream']:>7.3f}x"
            f"{b['calls']:>22,.1f}{b['calls'] / base['calls']:>7.3f}x  {loaded}, {spans}"
        )


if __name__ == "__main__":
    main()
