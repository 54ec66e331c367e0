"""``import aiollm``: time and resident memory, each measured in a fresh interpreter.

Every sample is a new ``python -c`` process that times the import with ``perf_counter`` and
reads its own RSS (``VmRSS``) right after. ``import aiollm`` does not import aiohttp (the first
request does); what aiohttp adds is shown too. Bytecode caches are warm, as after ``pip install``
(which compiles them): the probes write and read them under a temporary
``PYTHONPYCACHEPREFIX``, after one uncounted process per case (so an environment with
``PYTHONDONTWRITEBYTECODE`` set, or an editable checkout without ``__pycache__``, measures the
same as an installed wheel). Baselines in the same run: an interpreter that
imports nothing, and one that imports only the dependencies ``import aiollm`` loads (anyio,
msgspec, aiolimiter). Medians of ``--samples``. Targets: <= 150 ms and <= 45 MiB.

    python benchmarks/bench_import.py [--samples 9] [--detail]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _local import machine_line, verdict

TIME_TARGET_MS = 150.0
RSS_TARGET_MIB = 45.0

PROBE = """
import time
t0 = time.perf_counter()
{imports}
dt = time.perf_counter() - t0
rss = 0
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
print({{"ms": dt * 1000, "rss": rss}}.__repr__().replace("'", '"'))
"""

CASES = [
    ("python (nothing)", "pass"),
    ("anyio+msgspec+aiolimiter", "import anyio, msgspec, aiolimiter"),
    ("import aiollm", "import aiollm"),
    ("aiollm + aiohttp", "import aiollm, aiohttp"),
]

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def sample(imports: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-P", "-c", PROBE.format(imports=imports)],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def detail() -> None:
    """The slowest modules of ``import aiollm`` (``python -X importtime``, cumulative µs)."""
    err = subprocess.run(
        [sys.executable, "-P", "-X", "importtime", "-c", "import aiollm"],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cum, name = (p.strip() for p in line[len("import time:") :].split("|", 2))
        rows.append((int(cum), int(own), name))
    rows.sort(reverse=True)
    print("\nslowest imports (cumulative ms, self ms):")
    for cum, own, name in rows[:15]:
        print(f"  {cum / 1000:8.1f} {own / 1000:8.1f}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", "--runs", type=int, default=9, help="processes per case")
    ap.add_argument("--detail", action="store_true", help="also list the slowest imports")
    args = ap.parse_args()
    cache = tempfile.TemporaryDirectory(prefix="aiollm-pycache-")
    ENV["PYTHONPYCACHEPREFIX"] = cache.name
    for _, imports in CASES:
        sample(imports)  # writes the bytecode caches; not counted
    print("import aiollm: time and RSS in fresh interpreters (bytecode caches warm)")
    print(machine_line())
    print(f"median of {args.samples} processes each\n")
    times: dict[str, list[float]] = {name: [] for name, _ in CASES}
    rsss: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _ in range(args.samples):
        for name, imports in CASES:  # interleaved, so load changes hit every case alike
            s = sample(imports)
            times[name].append(s["ms"])
            rsss[name].append(s["rss"] / 2**20)
    print(f"{'':<26}{'import ms':>11}{'RSS MiB':>10}")
    med: dict[str, tuple[float, float]] = {}
    for name, _ in CASES:
        med[name] = (statistics.median(times[name]), statistics.median(rsss[name]))
        print(f"{name:<26}{med[name][0]:>11.1f}{med[name][1]:>10.1f}")
    ms, rss = med["import aiollm"]
    dep_ms, dep_rss = med["anyio+msgspec+aiolimiter"]
    base_rss = med["python (nothing)"][1]
    http_ms, http_rss = med["aiollm + aiohttp"]
    print(
        f"\naiollm's own share: {ms - dep_ms:.1f} ms and {rss - dep_rss:.1f} MiB over the "
        f"dependencies it imports; {rss - base_rss:.1f} MiB over a bare interpreter"
    )
    print(
        f"aiohttp is imported at the first request: it adds {http_ms - ms:.1f} ms and "
        f"{http_rss - rss:.1f} MiB then"
    )
    print(
        f"import time {ms:.1f} ms: target <= {TIME_TARGET_MS:.0f} ms {verdict(ms <= TIME_TARGET_MS)}"
    )
    print(f"RSS {rss:.1f} MiB: target <= {RSS_TARGET_MIB:.0f} MiB {verdict(rss <= RSS_TARGET_MIB)}")
    if args.detail:
        detail()
    cache.cleanup()


if __name__ == "__main__":
    main()
