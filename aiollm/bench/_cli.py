"""``aiollm bench``: the command-line front end of :mod:`aiollm.bench`."""

from __future__ import annotations

import argparse
import importlib.util
import math
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from .. import ConfigurationError
from ._config import DEFAULT_REQUESTS, BenchConfig
from ._result import BenchResult
from ._runner import Benchmark
from ._workload import load_prompts

__all__ = ["add_arguments", "config_from_args", "run_cli"]

EPILOG = """\
examples:
  aiollm bench                                   # the embedded emulator, no keys needed
  aiollm bench --model qianfan/ernie-speed-128k --concurrency 8 --requests 200
  aiollm bench --model openai/gpt-4o-mini --request-rate 5 --duration 60 --goodput ttft:500 tpot:50
  aiollm bench --sweep 1,4,16,64 --output result.json --plot result.png
  aiollm bench --emulator --emulator-quota 20 --find-max --slo ttft_p99:2000 error_rate:0.01
  aiollm bench --model qianfan/ernie-speed-128k --find-max --slo ttft_p99:2000 tpot_p95:80

Ctrl-C stops the benchmark and still prints and writes what finished.
"""


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected levels like 1,4,16,64 (got {text!r})") from None
    if not levels or any(n < 1 for n in levels):
        raise argparse.ArgumentTypeError(f"levels must be integers >= 1 (got {text!r})")
    return levels


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected requests/s or inf (got {text!r})") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the request rate must be > 0 (got {text!r})")
    return value


def _duration(text: str) -> float:
    """Seconds, with an optional unit: ``30``, ``30s``, ``2m``, ``500ms``."""
    raw = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)], factor
            break
    try:
        value = float(raw) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s (got {text!r})") from None
    if value < 0 or math.isinf(value) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"a duration must be >= 0 (got {text!r})")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``aiollm bench``'s options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Benchmark one or more models under concurrent load: TTFT, TPOT, ITL, end-to-end "
        "latency, throughput, goodput and errors. With no --model it runs against the "
        "embedded emulator."
    )
    parser.epilog = EPILOG
    work = parser.add_argument_group("workload")
    work.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PROVIDER/MODEL",
        help="model to benchmark (repeatable; several are reported side by side)",
    )
    work.add_argument(
        "--prompts", metavar="FILE.jsonl", help="prompts: one JSON list of messages per line"
    )
    work.add_argument(
        "--input-len",
        type=int,
        default=32,
        metavar="TOKENS",
        help="length of the synthetic prompts when no --prompts file is given (default 32)",
    )
    work.add_argument(
        "--max-tokens",
        type=int,
        default=64,
        metavar="N",
        help="max_tokens of every request (default 64; 0 sends none)",
    )
    work.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="total time limit of each request"
    )
    work.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="retries per request (default: the client's policy; 0 turns them off)",
    )
    work.add_argument("--seed", type=int, default=0, help="seed of prompts and arrival times")

    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency", type=int, default=10, metavar="N", help="requests in flight (default 10)"
    )
    load.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help=f"requests per model and level (default {DEFAULT_REQUESTS} unless --duration)",
    )
    load.add_argument(
        "--duration", type=float, metavar="SECONDS", help="send new requests for this long"
    )
    load.add_argument(
        "--request-rate",
        type=_rate,
        metavar="R",
        help="send at R requests/s instead of fixed concurrency (inf: all at once)",
    )
    load.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="shape of the gamma arrival gaps: 1 is Poisson (default), lower is burstier",
    )
    load.add_argument(
        "--max-concurrency", type=int, metavar="N", help="cap on requests in flight at a rate"
    )
    load.add_argument(
        "--sweep",
        type=_levels,
        metavar="1,4,16,64",
        help="run at each concurrency level (with --request-rate: each --max-concurrency)",
    )
    load.add_argument(
        "--warmup",
        type=int,
        default=1,
        metavar="N",
        help="uncounted requests before each run, N at a time up to the concurrency "
        "(default 1: connection, credential and code path are warm before measuring)",
    )
    load.add_argument(
        "--models-together",
        action="store_true",
        help="run the models at the same time instead of one after another",
    )

    emu = parser.add_argument_group("emulator")
    emu.add_argument(
        "--emulator",
        action="store_true",
        help="use the embedded emulator even with --model (default when no --model)",
    )
    emu.add_argument(
        "--first-token", type=float, default=0.2, metavar="SECONDS", help="emulated TTFT (0.2)"
    )
    emu.add_argument(
        "--per-token",
        type=float,
        default=0.01,
        metavar="SECONDS",
        help="emulated time per further token (0.01)",
    )

    emu.add_argument(
        "--emulator-quota",
        type=_rate,
        metavar="RPS",
        help="the emulator answers HTTP 429 above RPS requests/s (a quota to find)",
    )

    cap = parser.add_argument_group("capacity search")
    cap.add_argument(
        "--find-max",
        nargs="?",
        const="request_rate",
        choices=("request_rate", "concurrency"),
        help="search the highest request rate (default) or concurrency meeting --slo",
    )
    cap.add_argument(
        "--slo",
        nargs="+",
        metavar="NAME:LIMIT",
        help="targets, e.g. ttft_p99:2000 tpot_p95:80 error_rate:0.01 (ms; error_rate a "
        "fraction, 0.01 unless given)",
    )
    cap.add_argument(
        "--throttling-not-errors",
        action="store_true",
        help="throttling answers (429, Qianfan 18, DashScope Throttling) do not count as errors",
    )
    cap.add_argument(
        "--step-duration",
        type=_duration,
        default=30.0,
        metavar="SECONDS",
        help="measured time of each step (default 30)",
    )
    cap.add_argument(
        "--search-start", type=float, default=1.0, metavar="X", help="first load tried (1)"
    )
    cap.add_argument(
        "--search-limit", type=float, default=1024.0, metavar="X", help="highest load tried (1024)"
    )
    cap.add_argument(
        "--resolution",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="stop bisecting when the bracket is within this fraction of the answer (0.1)",
    )
    cap.add_argument(
        "--repeats",
        type=int,
        default=2,
        metavar="N",
        help="runs of each deciding step, for the answer's confidence (2)",
    )
    cap.add_argument(
        "--drain",
        type=_duration,
        metavar="SECONDS",
        help="wait this long for a step's requests after it stops sending; what is left "
        "counts as failed (default: the step duration, 2 to 60 s)",
    )
    load.add_argument(
        "--ramp",
        type=_duration,
        default=0.0,
        metavar="SECONDS",
        help="with a request rate: rise to it over this long first, not counted (e.g. 30s)",
    )

    out = parser.add_argument_group("report")
    out.add_argument(
        "--goodput",
        nargs="+",
        metavar="METRIC:MS",
        help="SLOs for goodput, e.g. ttft:500 tpot:50 (metrics: ttft, tpot, e2el)",
    )
    out.add_argument(
        "--output",
        metavar="RESULT.json",
        help="write the figures (vLLM-style keys) and, beside it, per-request .jsonl and .csv",
    )
    out.add_argument("--requests-jsonl", metavar="PATH", help="per-request JSON lines here")
    out.add_argument("--requests-csv", metavar="PATH", help="per-request CSV here")
    out.add_argument(
        "--plot", metavar="OUT.png", help="latency distributions and throughput (matplotlib)"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    out.add_argument(
        "--otel",
        nargs="?",
        const="otlp",
        choices=["otlp", "console"],
        help="export the run's spans and metrics over OTLP (OTEL_EXPORTER_OTLP_* set the "
        "endpoint) or to stderr; needs opentelemetry-sdk (and opentelemetry-exporter-otlp)",
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` that parsed arguments describe."""
    prompts = load_prompts(args.prompts) if args.prompts else None
    return BenchConfig(
        models=list(args.model or ()),
        concurrency=args.concurrency,
        requests=args.requests,
        duration=args.duration,
        request_rate=args.request_rate,
        burstiness=args.burstiness,
        max_concurrency=args.max_concurrency,
        sweep=args.sweep or (),
        warmup=args.warmup,
        prompts=prompts,
        input_len=args.input_len,
        max_tokens=args.max_tokens or None,
        goodput=args.goodput,
        timeout=args.timeout,
        max_retries=args.max_retries,
        seed=args.seed,
        models_together=args.models_together,
        emulator=True if args.emulator else None,
        first_token=args.first_token,
        per_token=args.per_token,
        quota_rps=args.emulator_quota,
        find_max=args.find_max,
        slos=args.slo,
        count_throttling=not args.throttling_not_errors,
        step_duration=args.step_duration,
        search_start=args.search_start,
        search_limit=args.search_limit,
        resolution=args.resolution,
        repeats=args.repeats,
        drain=args.drain,
        ramp=args.ramp,
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
        f"{' on the embedded emulator' if config.uses_emulator else ''}; "
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
