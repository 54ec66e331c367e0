"""``aiollm bench``: the command-line front end of :mod:`aiollm.bench`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from .. import ConfigurationError
from ._args import add_arguments
from ._compare import compare, load_runs, render_compare
from ._config import BenchConfig
from ._result import BenchResult
from ._runner import Benchmark
from ._workload import load_prompts, load_sharegpt, load_trace

__all__ = ["add_arguments", "config_from_args", "run_cli"]


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` that parsed arguments describe.

    Options named as the config's fields give them; the others are read here.
    """
    same = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(BenchConfig)
        if f.init and hasattr(args, f.name)
    }
    return BenchConfig(
        **{
            **same,
            "models": list(args.model or ()),
            "sweep": args.sweep or (),
            "prompts": load_prompts(args.prompts) if args.prompts else None,
            "conversations": load_sharegpt(args.sharegpt) if args.sharegpt else None,
            "trace": load_trace(args.trace) if args.trace else None,
            "max_tokens": args.max_tokens or None,
            "emulator": True if args.emulator else None,
            "quota_rps": args.emulator_quota,
            "slos": args.slo,
            "count_throttling": not args.throttling_not_errors,
        }
    )


def output_paths(args: argparse.Namespace) -> dict[str, str]:
    """Where each output goes: ``json``, ``jsonl``, ``csv``, ``plot`` (only those asked for)."""
    paths: dict[str, str] = {}
    if args.output:
        out = Path(args.output)
        stem = out.with_suffix("") if out.suffix else out
        paths["json"] = str(out)
        paths["jsonl"] = f"{stem}.requests.jsonl"
        paths["csv"] = f"{stem}.requests.csv"
    if args.requests_jsonl:
        paths["jsonl"] = args.requests_jsonl
    if args.requests_csv:
        paths["csv"] = args.requests_csv
    if args.plot:
        paths["plot"] = args.plot
    if args.html:
        paths["html"] = args.html
    return paths


def _err(text: str) -> None:
    sys.stderr.write(f"aiollm bench: {text}\n")
    sys.stderr.flush()


def write_outputs(result: BenchResult, paths: dict[str, str]) -> int:
    """Write every requested output; returns how many failed (each failure is reported)."""
    writers: dict[str, Any] = {
        "json": result.write_json,
        "jsonl": result.write_jsonl,
        "csv": result.write_csv,
        "plot": result.plot,
        "html": result.write_html,
    }
    failures = 0
    for kind, path in paths.items():
        try:
            writers[kind](path)
        except (ConfigurationError, OSError) as exc:
            failures += 1
            _err(f"could not write {path}: {exc}")
        else:
            sys.stderr.write(f"wrote {path}\n")
    return failures


async def _stop_on_signal(bench: Benchmark) -> None:
    """The first Ctrl-C (or SIGTERM) stops the benchmark cleanly; a second one quits at once."""
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                _err("stopping: cancelling the requests in flight, keeping what finished")
                bench.stop()
                return
    except (NotImplementedError, RuntimeError, ValueError):
        # No signal handling here (not the main thread, or the platform has none).
        await anyio.sleep_forever()


async def _bench_main(config: BenchConfig, args: argparse.Namespace) -> int:
    bench = Benchmark(config, progress=False if args.no_progress else sys.stderr)
    levels = len(config.levels())
    what = (
        f"searching the maximum {config.find_max.replace('_', ' ')} of"
        if config.find_max
        else f"running {levels} load level(s) x"
    )
    _err(
        f"{what} {len(config.model_list)} model(s)"
        f"{' on the embedded emulator' if config.uses_emulator else ''} from "
        f"{bench.processes} process(es) ({bench.processes_reason}); "
        "Ctrl-C stops and keeps what finished"
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, bench)
        result = await bench.run()
        tg.cancel_scope.cancel()
    sys.stdout.write(result.table() + "\n")
    sys.stdout.flush()
    failures = write_outputs(result, output_paths(args))
    if result.stopped_by is not None:
        _err(f"stopped after the first request: {result.stopped_by}")
        return 2 if result.stopped_by.startswith("ConfigurationError") else 1
    if result.interrupted:
        return 130
    if failures or not any(run.completed for run in result.runs):
        return 1
    return 0


def compare_cli(a: str, b: str, max_regression: float | None) -> int:
    """``--compare A B``: print the differences; 1 when one is worse than allowed."""
    try:
        rows = compare(load_runs(a), load_runs(b))
    except ConfigurationError as exc:
        _err(str(exc))
        return 2
    sys.stdout.write(render_compare(rows, a, b) + "\n")
    if max_regression is not None:
        limit = max_regression / 100.0
        bad = [r for r in rows if r["worse"] and r["rel"] is not None and abs(r["rel"]) > limit]
        if bad:
            _err(f"{len(bad)} figure(s) worse by more than {max_regression:g}%")
            return 1
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """Run ``aiollm bench`` with parsed arguments; returns the exit code.

    0: done; 1: no request completed, a failure no retry fixes stopped it, or an output could
    not be written; 2: bad options (or a configuration error, e.g. a missing key);
    130: stopped by Ctrl-C (the report and outputs cover what finished).
    """
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        _err(
            "--plot needs matplotlib: pip install 'aiollm-client[plot]' (or pip install matplotlib)"
        )
        return 2
    if args.compare:
        return compare_cli(args.compare[0], args.compare[1], args.max_regression)
    if args.slo and not args.find_max:
        _err("--slo goes with --find-max (for goodput at a fixed load use --goodput)")
        return 2
    if args.emulator_quota and args.model and not args.emulator:
        _err("--emulator-quota goes with the emulator (add --emulator)")
        return 2
    if (
        args.request_rate is None
        and not args.find_max
        and (args.max_concurrency or args.burstiness != 1.0)
    ):
        _err("--max-concurrency and --burstiness go with --request-rate")
        return 2
    if args.request_rate is not None and math.isinf(args.request_rate) and args.burstiness != 1.0:
        _err("--burstiness has no meaning for an unpaced (inf) request rate")
        return 2
    try:
        config = config_from_args(args)
    except ConfigurationError as exc:
        _err(str(exc))
        return 2
    shutdown = None
    if args.otel:  # OpenTelemetry: the run's calls report to global providers set here
        try:
            from ..otel import export_spans

            shutdown = export_spans(args.otel, service_name="aiollm-bench")
        except ImportError as exc:
            _err(
                f"--otel needs OpenTelemetry's SDK and exporter ({exc.name} is missing): pip "
                "install 'aiollm-client[otel]' opentelemetry-sdk opentelemetry-exporter-otlp"
            )
            return 2
    try:
        result: int = anyio.run(_bench_main, config, args)
    finally:
        if shutdown is not None:
            shutdown()  # flushes what is left to export
    return result
