"""How accurate is ``aiollm bench``? Its report against the server's own send times.

A cadence server runs in its own process (``cadence_server.py``): an OpenAI-compatible stream
that sends the first token 200 ms after a request arrived, then one every 20 ms, 64 tokens, and
logs when it handed each frame to the socket (``time.perf_counter``: CLOCK_MONOTONIC, the same
clock in both processes on Linux). ``aiollm bench`` runs in this process against it at 1, 16, 64
and 256 concurrent streams, and the report's TTFT, ITL and end-to-end medians and p99s are
compared with the truth: the server's send times measured from the moment the client sent each
request. Printed per level and way of stamping (``kernel``: the kernel's receive time of each
socket read, what ``aiollm bench`` uses on Linux; ``loop``: when the event loop handed the bytes
over; ``resumed``: when the reading task ran): report minus truth, whether each figure is within
±1 ms or 2% of the truth, the client's CPU seconds per 1,000 tokens and its event-loop lag.

``--with aiperf,guidellm`` then runs ``aiollm bench`` (the command), AIPerf and guidellm against
the same server at the same levels (see ``_tools.py``) and compares each one's own result file
with the server's truth measured from when each request arrived at the server (the server cannot
see a client's send time), with their CPU per 1,000 tokens streamed: all of the process and,
beside it, beyond a one-request run of the same tool (start-up, imports, data set, tokenizer).

    python benchmarks/bench_accuracy.py [--levels 1,16,64,256] [--requests 32] [--runs 1]
        [--stamps kernel,loop,resumed] [--workers N] [--with aiperf,guidellm]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _local import HERE, machine_line
from cadence_server import FIRST, STEP, TOKENS

METRICS = ("ttft", "itl", "e2el")


def ms(seconds: list[float], q: float) -> float:
    from aiollm.bench import percentile

    return percentile(sorted(x * 1000.0 for x in seconds), q)


def within(delta: float, truth: float) -> bool:
    """The goal: within ±1 ms or 2% of the truth."""
    return abs(delta) <= max(1.0, 0.02 * abs(truth))


@contextmanager
def cadence_server() -> Iterator[str]:
    """Start ``cadence_server.py``; yields its origin."""
    port_file = Path(tempfile.mkdtemp(prefix="aiollm-cadence-")) / "port"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "cadence_server.py"), str(port_file)], stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the cadence server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        proc.terminate()
        proc.wait(10)


def server_log(url: str) -> list[dict[str, Any]]:
    """The requests the server streamed since the last call, in order of arrival."""
    with urllib.request.urlopen(url + "/log") as resp:
        entries: list[dict[str, Any]] = json.loads(resp.read())
    return sorted(entries, key=lambda e: e["received"])


def cpu_now(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


# -- aiollm bench in this process: each request against the server's log ------------------------
def measure(url: str, level: int, requests: int, stamp: str, workers: int) -> dict[str, Any]:
    import anyio

    import aiollm._kernel_clock as kernel_clock
    import aiollm._response as response
    from aiollm import Client
    from aiollm.bench import run
    from aiollm.bench._workload import synthetic_prompt

    install, read_clock = kernel_clock.install, response._read_clock
    if stamp != "kernel":
        kernel_clock.install = lambda transport, note: False  # type: ignore[assignment]
    if stamp == "resumed":
        response._read_clock = lambda resp: None  # type: ignore[assignment]
    settings = {"base_url": url + "/v1", "api_key": "k"}
    os.environ.update(OPENAI_BASE_URL=settings["base_url"], OPENAI_API_KEY="k")  # --workers

    async def main() -> Any:
        config = dict(models=["openai/cadence"], concurrency=level, requests=requests)
        config.update(warmup=level, max_tokens=TOKENS)  # every connection open before measuring
        if workers > 1:
            return await run(workers=workers, **config)
        async with Client(providers={"openai": settings}, env={}, connection_limit=level + 8) as c:
            return await run(client=c, **config)

    cpu0 = cpu_now(resource.RUSAGE_SELF) + cpu_now(resource.RUSAGE_CHILDREN)
    try:
        result = anyio.run(main)
    finally:
        kernel_clock.install, response._read_clock = install, read_clock
    cpu = cpu_now(resource.RUSAGE_SELF) + cpu_now(resource.RUSAGE_CHILDREN) - cpu0
    entries = server_log(url)  # the warm-up's requests too: the CPU above includes them
    truth = {e["key"]: e for e in entries}
    (summary,) = result.runs
    real: dict[str, list[float]] = {m: [] for m in METRICS}
    errors: dict[str, list[float]] = {m: [] for m in METRICS}
    arrivals: list[float] = []  # the client's send call -> the request's arrival at the server
    for rec in summary.records:
        server = truth.get(synthetic_prompt(rec.index, 32)[-1]["content"])
        if not rec.ok or rec.ttft is None or rec.e2el is None or server is None:
            continue
        sent_at = summary.started_at + rec.start  # the client's send time, on the shared clock
        sent = [t - sent_at for t in server["sent"]]
        arrivals.append(server["received"] - sent_at)
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        real["ttft"].append(sent[0])
        real["itl"].extend(gaps)
        real["e2el"].append(server["end"] - sent_at)
        errors["ttft"].append(rec.ttft - sent[0])
        if len(rec.itl) == len(gaps):
            errors["itl"].extend(c - s for c, s in zip(rec.itl, gaps, strict=True))
        errors["e2el"].append(rec.e2el - real["e2el"][-1])
    f = summary.figures
    return {
        "report": {m: (f[f"median_{m}_ms"], f[f"p99_{m}_ms"]) for m in METRICS},
        "truth": {m: (ms(real[m], 50), ms(real[m], 99)) for m in METRICS},
        "errors": errors,
        "matched": len(errors["ttft"]),
        "arrival": (ms(arrivals, 50), ms(arrivals, 99)),
        "cpu_per_1k": cpu / max(len(entries) * TOKENS, 1) * 1000.0,
        "lag_p99": f.get("client_loop_lag_p99_ms"),
    }


def deltas(report: dict[str, tuple[float, float]], truth: dict[str, tuple[float, float]]) -> str:
    """``Δmedian/Δp99`` per metric, and whether all six are within the goal."""
    cells, ok = [], True
    for m in METRICS:
        dm, dp = (report[m][i] - truth[m][i] for i in (0, 1))
        ok = ok and within(dm, truth[m][0]) and within(dp, truth[m][1])
        cells.append(f"{dm:+7.2f}/{dp:+7.2f}")
    return " | ".join(cells) + f" | {'yes' if ok else 'NO':>3}"


def truths(truth: dict[str, tuple[float, float]]) -> str:
    return " ".join(f"{truth[m][0]:7.1f}/{truth[m][1]:<7.1f}" for m in METRICS)


def in_process(url: str, args: argparse.Namespace) -> None:
    print(
        "\naiollm bench in this process: report - truth (ms), median/p99; truth from each "
        "request's send time\n"
        f"{'streams':>7} {'stamp':>7} {'n':>4} | {'TTFT':>15} | {'ITL':>15} | {'E2E':>15} | "
        f"{'ok':>3} | {'err TTFT p50/p99':>16} {'err ITL p50/p99':>16} | {'sent->arrived':>13} "
        "| CPU s/1k | lag p99 | "
        f"{'truth TTFT, ITL, E2E med/p99':>46} | load"
    )
    stamps = args.stamps if args.workers <= 1 else ["kernel"]  # others stamp as shipped
    for level in args.levels:
        for _ in range(args.runs):
            for stamp in stamps:
                r = measure(url, level, max(args.requests, level * 2), stamp, args.workers)
                e = r["errors"]
                errs = " ".join(
                    f"{statistics.median(e[m]) * 1000:+7.2f}/{ms(e[m], 99):+7.2f}"
                    if e[m]
                    else f"{'-':>15}"
                    for m in ("ttft", "itl")
                )
                print(
                    f"{level:>7} {stamp:>7} {r['matched']:>4} | {deltas(r['report'], r['truth'])} "
                    f"| {errs} | {r['arrival'][0]:6.2f}/{r['arrival'][1]:<6.2f} "
                    f"| {r['cpu_per_1k']:8.3f} | {r['lag_p99'] or 0:5.1f}ms | "
                    f"{truths(r['truth'])} | {os.getloadavg()[0]:.2f}",
                    flush=True,
                )


# -- the tools against the same server: truth from when each request arrived ----------------------
def server_truth(entries: list[dict[str, Any]], itl_kind: str) -> dict[str, tuple[float, float]]:
    real: dict[str, list[float]] = {m: [] for m in METRICS}
    for e in entries:
        sent = [t - e["received"] for t in e["sent"]]
        real["ttft"].append(sent[0])
        if itl_kind == "gap":
            real["itl"].extend(b - a for a, b in itertools.pairwise(sent))
        else:
            real["itl"].append((sent[-1] - sent[0]) / (len(sent) - 1))
        real["e2el"].append(e["end"] - e["received"])
    return {m: (ms(real[m], 50), ms(real[m], 99)) for m in METRICS}


def with_tools(url: str, args: argparse.Namespace) -> None:
    from _tools import Tools

    tools = Tools(args.tools_cache, url, Path(tempfile.mkdtemp(prefix="aiollm-tools-")))
    names = ["aiollm", *args.with_tools]
    versions = ", ".join(f"{t} {tools.version(t)}" for t in args.with_tools)
    print(
        f"\nthe same server, each tool's own result file: report - truth (ms), median/p99; truth "
        f"from when each request arrived at the server ({versions}; aiollm bench "
        f"{'--workers ' + str(args.workers) if args.workers else 'its default processes'})\n"
        f"{'tool':>9} {'streams':>7} {'n':>4} | {'TTFT':>15} | {'ITL':>15} | {'E2E':>15} | "
        f"{'ok':>3} | ITL is  | CPU s/1k tokens: all, beyond start-up | "
        f"{'truth TTFT, ITL, E2E med/p99':>46} | load"
    )
    fixed: dict[str, tuple[float, int]] = {}
    for tool in names:  # start-up: one request, counted apart
        one = tools.run(tool, 1, 1, args.workers if tool == "aiollm" else 0)
        fixed[tool] = (one.cpu, len(server_log(url)))
    for level in args.levels:
        for tool in names:
            requests = max(args.requests, level * 2)
            try:
                r = tools.run(tool, level, requests, args.workers if tool == "aiollm" else 0)
            except RuntimeError as exc:
                print(f"{tool:>9} {level:>7} failed: {exc}", flush=True)
                server_log(url)
                continue
            entries = server_log(url)  # warm-ups first: the measured requests are the last
            truth = server_truth(entries[-requests:], r.itl_kind)
            report = {"ttft": r.ttft, "itl": r.itl, "e2el": r.e2el}
            streamed = len(entries) * TOKENS
            cpu0, n0 = fixed[tool]
            beyond = (r.cpu - cpu0) / max(streamed - n0 * TOKENS, 1) * 1000.0
            print(
                f"{tool:>9} {level:>7} {min(requests, len(entries)):>4} | {deltas(report, truth)} | "
                f"{'gap' if r.itl_kind == 'gap' else 'req mean':>7} | "
                f"{r.cpu / streamed * 1000.0:10.3f} {beyond:26.3f} | {truths(truth)} | "
                f"{os.getloadavg()[0]:.2f}",
                flush=True,
            )


def emulator_figure() -> None:
    """The figure an old test asserted: the embedded emulator (same process), concurrency 1."""
    import anyio

    from aiollm.bench import run

    async def one() -> Any:
        return await run(
            models=["openai/m"],
            emulator=True,
            first_token=0.05,
            per_token=0.01,
            max_tokens=12,
            concurrency=1,
            requests=10,
            warmup=1,
        )

    f = anyio.run(one).runs[0].figures
    print(
        f"\nembedded emulator, 50 ms first token, 10 ms per token, concurrency 1: median TTFT "
        f"{f['median_ttft_ms']:.2f} ms ({f['median_ttft_ms'] - 50:+.2f} ms), median ITL "
        f"{f['median_itl_ms']:.2f} ms ({f['median_itl_ms'] - 10:+.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda t: [int(x) for x in t.split(",")]  # noqa: E731
    names = lambda t: [x for x in t.split(",") if x]  # noqa: E731
    parser.add_argument("--levels", type=ints, default=[1, 16, 64, 256], help="concurrent streams")
    parser.add_argument("--requests", type=int, default=32, help="requests per level (min 2x)")
    parser.add_argument("--runs", type=int, default=1, help="in-process runs per level")
    parser.add_argument(
        "--stamps", type=names, default=["kernel", "loop"], help="kernel,loop,resumed"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="aiollm bench --workers (default: one process "
        "in this process's runs, the command's own default for the tools' comparison)",
    )
    parser.add_argument("--with", dest="with_tools", type=names, default=[], help="aiperf,guidellm")
    parser.add_argument(
        "--tools-cache", type=Path, default=Path(tempfile.gettempdir()) / "aiollm-bench-tools"
    )
    parser.add_argument("--no-in-process", action="store_true", help="only the tools")
    args = parser.parse_args()
    print(machine_line())
    print(
        f"cadence server: first token {FIRST * 1000:.0f} ms, then {STEP * 1000:.0f} ms per "
        f"token, {TOKENS} tokens; goal: each median and p99 within ±1 ms or 2% of the truth"
    )
    with cadence_server() as url:
        if not args.no_in_process:
            in_process(url, args)
        if args.with_tools:
            with_tools(url, args)
    if not args.no_in_process:
        emulator_figure()


if __name__ == "__main__":
    main()
