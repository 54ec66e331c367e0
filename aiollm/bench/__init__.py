"""Concurrent benchmarking of LLM APIs: ``aiollm bench`` on the command line, or from Python::

    from aiollm import bench

    result = await bench.run(models=["qianfan/ernie-speed-128k"], concurrency=8, requests=100,
                             goodput={"ttft": 500, "tpot": 50})
    print(result.table())
    result.write_json("result.json")      # vLLM-style keys: completed, median_ttft_ms, ...

With no models it benchmarks the embedded emulator (no keys, no network). Every request
records when it was sent, when the headers and each text delta arrived and when it ended;
each run (one model under one load level) is summarised as mean / median / p90 / p95 / p99
of TTFT, TPOT, ITL and end-to-end latency, request and output-token throughput, goodput
under SLOs and the errors by provider code. :class:`Benchmark` can be stopped early and
still reports what finished; a failure no retry can fix (a missing key, an unknown model)
stops it after the first request. Nothing is printed unless ``progress=True``.
"""

from __future__ import annotations

from ._config import DEFAULT_REQUESTS, EMULATOR_MODELS, BenchConfig
from ._metrics import (
    METRICS,
    PERCENTILES,
    RequestRecord,
    RunSummary,
    error_key,
    parse_goodput,
    percentile,
    summarize,
)
from ._result import BenchResult, RunState
from ._runner import FATAL_ERRORS, Benchmark, run
from ._workload import load_prompts, synthetic_prompt

__all__ = [
    "DEFAULT_REQUESTS",
    "EMULATOR_MODELS",
    "FATAL_ERRORS",
    "METRICS",
    "PERCENTILES",
    "BenchConfig",
    "BenchResult",
    "Benchmark",
    "RequestRecord",
    "RunState",
    "RunSummary",
    "error_key",
    "load_prompts",
    "parse_goodput",
    "percentile",
    "run",
    "summarize",
    "synthetic_prompt",
]
