"""What shared limits (Redis) add to each call, against in-process limits, in the same run.

One call's limiter work is ``lease = await limiter.acquire(estimate)``, ``lease.settle(n)``
and ``lease.release()``: the time a call waits before its request is sent. The same limits
(``requests_per_second``, ``max_concurrency`` and ``tokens_per_minute``, all too high to make
anything wait) are measured with no limits, in-process, and shared through a local
redis-server (started here on a free loopback port, or ``--redis redis://...``). Each figure
is the median and p99 over ``--calls`` sequential calls, best of ``--runs``; the release is
a Redis call in the background, so it is counted by letting it finish before the next call
(``settled``) and also left to overlap (``acquire``, what the call itself waits).

    python benchmarks/bench_shared_limits.py [--calls 5000] [--runs 3] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _local import machine_line

from aiollm import Limits
from aiollm.limits import ProviderLimiter

LIMITS = {"requests_per_second": 1e6, "max_concurrency": 1000, "tokens_per_minute": 10**12}


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        print("bench_shared_limits: skipped, redis-server is not installed (apt-get install -y")
        print("redis-server), or pass --redis redis://...")
        sys.exit(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


async def measure(limiter: ProviderLimiter, calls: int, settled: bool) -> list[float]:
    """µs per call: acquire, settle and release (waiting for the release when ``settled``)."""
    shared = limiter.shared
    out: list[float] = []
    clock = time.perf_counter
    for _ in range(calls):
        start = clock()
        lease = await limiter.acquire(100)
        lease.settle(80)
        lease.release()
        if settled and shared is not None:
            while shared._tasks:
                await asyncio.wait(list(shared._tasks))
        out.append((clock() - start) * 1e6)
    if shared is not None:
        while shared._tasks:
            await asyncio.wait(list(shared._tasks))
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def main(args: argparse.Namespace, url: str) -> None:
    kinds = {
        "no limits": Limits(),
        "in-process": Limits(**LIMITS),  # type: ignore[arg-type]
        "shared (Redis)": Limits(**LIMITS, shared=url),  # type: ignore[arg-type]
    }
    limiters = {
        name: ProviderLimiter("openai", lim, quota_id="bench") for name, lim in kinds.items()
    }
    best: dict[tuple[str, bool], tuple[float, float]] = {}
    for limiter in limiters.values():  # warm-up: connections, scripts
        await measure(limiter, 200, True)
    for _ in range(args.runs):
        for settled in (False, True):
            for name, limiter in limiters.items():
                med, p99 = summary(await measure(limiter, args.calls, settled))
                old = best.get((name, settled))
                if old is None or med < old[0]:
                    best[(name, settled)] = (med, p99)
    for limiter in limiters.values():
        await limiter.aclose()
    print(machine_line())
    print(f"{args.calls} sequential calls, best of {args.runs} runs; µs per call\n")
    print(f"{'limiter':<16} {'acquire median':>15} {'p99':>8} {'settled median':>15} {'p99':>8}")
    for name in kinds:
        a, s = best[(name, False)], best[(name, True)]
        print(f"{name:<16} {a[0]:>15.1f} {a[1]:>8.1f} {s[0]:>15.1f} {s[1]:>8.1f}")
    for settled, label in ((False, "acquire"), (True, "settled")):
        shared, local = best[("shared (Redis)", settled)], best[("in-process", settled)]
        print(
            f"\nadded by sharing ({label}): median {shared[0] - local[0]:.1f} µs, "
            f"p99 {shared[1] - local[1]:.1f} µs per call"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis", default=None, help="use this Redis instead of starting one")
    args = parser.parse_args()
    with redis_server(args.redis) as url:
        asyncio.run(main(args, url))
