"""The options of ``aiollm bench``."""

from __future__ import annotations

import argparse
import math

from ._config import DEFAULT_REQUESTS

__all__ = ["add_arguments"]

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
        "--sharegpt",
        metavar="FILE.json",
        help="conversations in ShareGPT format (a JSON list of {conversations: [...]})",
    )
    work.add_argument(
        "--trace",
        metavar="FILE.jsonl",
        help="replay arrivals: one {timestamp, input_length, output_length} per line",
    )
    work.add_argument(
        "--trace-speed",
        type=float,
        default=1.0,
        metavar="X",
        help="replay the trace X times faster (default 1: as recorded)",
    )
    work.add_argument(
        "--turns",
        type=int,
        default=1,
        metavar="N",
        help="multi-turn sessions of N turns, history carried (fixed concurrency)",
    )
    work.add_argument(
        "--think-time",
        type=_duration,
        default=0.0,
        metavar="SECONDS",
        help="pause between a session's turns (default 0)",
    )
    work.add_argument(
        "--input-len-range",
        type=float,
        default=0.0,
        metavar="R",
        help="synthetic input lengths uniform in input-len x [1-R, 1+R] (default 0)",
    )
    work.add_argument(
        "--output-len",
        type=int,
        metavar="TOKENS",
        help="output length of each request (default --max-tokens)",
    )
    work.add_argument(
        "--output-len-range",
        type=float,
        default=0.0,
        metavar="R",
        help="output lengths uniform in output-len x [1-R, 1+R] (default 0)",
    )
    work.add_argument(
        "--pin-output",
        "--ignore-eos",
        action="store_true",
        help="ask for exactly the output length (ignore_eos and min_tokens; vLLM-style servers)",
    )
    work.add_argument(
        "--shared-prefix-len",
        type=int,
        default=0,
        metavar="TOKENS",
        help="one common system prompt of this length before every request",
    )
    work.add_argument(
        "--tokenizer",
        metavar="TOKENIZER.json",
        help="a local tokenizers file: exact lengths in tokens (never downloaded)",
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
        "--workers",
        type=int,
        metavar="N",
        help="send the load from N processes, aggregated exactly (default: one per 32 "
        "requests in flight or requests/s, up to the cores; 1 forces one process)",
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
    out.add_argument(
        "--runs",
        type=int,
        default=1,
        metavar="N",
        help="repeat each run N times: means with 95%% confidence intervals (default 1)",
    )
    out.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="print the differences between two saved results and exit (runs nothing)",
    )
    out.add_argument(
        "--max-regression",
        type=float,
        metavar="PCT",
        help="with --compare: exit 1 when a figure got worse by more than PCT percent",
    )
    out.add_argument(
        "--html",
        metavar="REPORT.html",
        help="a single-file HTML report (tables and charts, viewable offline)",
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
