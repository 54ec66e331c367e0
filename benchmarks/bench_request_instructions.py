"""Instructions per streamed request, aiollm vs the bare reader, counted by callgrind.

The client process alone is counted (the local server runs in its own, uncounted process):
``--requests`` sequential 16-frame streams, minus a run of one sixth as many, divided by the
requests in between, so start-up and imports cancel out. User-space instruction counts do not
depend on what else the machine is doing, so the ratio against the bare reader (and, with
``--before PATH``, against another checkout in the same run) is exact on a busy machine. It
leaves out what the kernel does (the socket calls both clients make alike), so the wall-clock
ratio of ``bench_request_overhead.py`` is smaller. Needs valgrind (``apt-get install valgrind``).

    python benchmarks/bench_request_instructions.py [--before PATH] [--formats openai,qianfan]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _local import instructions, local_server, machine_line

HERE = Path(__file__).resolve().parent

WORKER = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[5])
from _local import aiollm_settings, aiollm_stream, bare_stream
origin, fmt, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main():
    if who == "aiollm":
        import aiollm
        async with aiollm.Client(providers=aiollm_settings(origin)) as client:
            for _ in range(n):
                await aiollm_stream(client, fmt, 16)
    else:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            for _ in range(n):
                await bare_stream(session, origin, fmt, 16)

asyncio.run(main())
"""


def count(origin: str, tree: Path | None, fmt: str, who: str, n: int) -> int:
    return instructions(WORKER, [origin, fmt, who, str(n), str(HERE)], tree)


def per_request(origin: str, tree: Path | None, fmt: str, who: str, n: int) -> float:
    small = n // 6
    return (count(origin, tree, fmt, who, n) - count(origin, tree, fmt, who, small)) / (n - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to count in the same run")
    parser.add_argument("--formats", default="openai,qianfan,dashscope")
    parser.add_argument("--requests", type=int, default=120)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind: apt-get install valgrind")
    print(__doc__.splitlines()[0])
    print(machine_line())
    print(f"{args.requests} sequential 16-frame streams, less {args.requests // 6}\n")
    head = f"{'format':<10}{'bare':>12}{'aiollm':>12}{'aiollm/bare':>13}"
    if args.before:
        head += f"{'before':>12}{'before/bare':>13}{'now/before':>12}"
    print(head)
    with local_server() as origin:
        for fmt in args.formats.split(","):
            bare = per_request(origin, None, fmt, "bare", args.requests)
            now = per_request(origin, None, fmt, "aiollm", args.requests)
            line = f"{fmt:<10}{bare:>12,.0f}{now:>12,.0f}{now / bare:>12.3f}x"
            if args.before:
                before = per_request(origin, args.before, fmt, "aiollm", args.requests)
                line += f"{before:>12,.0f}{before / bare:>12.3f}x{now / before:>11.3f}x"
            print(line, flush=True)
    print("\ninstructions per request in the client process (user space, callgrind)")


if __name__ == "__main__":
    main()
