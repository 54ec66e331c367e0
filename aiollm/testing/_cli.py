"""``aiollm emulator``: serve the emulator from the command line."""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from ._emulator import PROVIDERS, Cadence, Emulator
from ._faults import FAULT_KINDS, FaultKind
from ._quota import Quota

__all__ = ["add_arguments", "parse_quota", "run"]


def parse_quota(text: str) -> tuple[str, Quota]:
    """``PROVIDER=RATE[,burst=B][,concurrency=N][,retry_after=no]`` (RATE may be ``-``)."""
    provider, sep, spec = text.partition("=")
    if not sep or provider not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"expected PROVIDER=RATE with PROVIDER one of {', '.join(PROVIDERS)}: {text!r}"
        )
    rate, *options = spec.split(",")
    fields: dict[str, str] = {}
    for option in options:
        key, _, value = option.partition("=")
        fields[key.strip()] = value.strip()
    try:
        quota = Quota(
            rate=None if rate.strip() in ("", "-") else float(rate),
            burst=float(fields["burst"]) if "burst" in fields else None,
            concurrency=int(fields["concurrency"]) if "concurrency" in fields else None,
            retry_after=fields.get("retry_after", "yes").lower() not in ("no", "false", "0"),
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad quota {text!r}: {exc}") from None
    return provider, quota


def _kinds(text: str) -> list[FaultKind]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}"
        )
    return [k for k in FAULT_KINDS if k in kinds]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``aiollm emulator``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--first-token", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--per-token", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--reply-tokens", type=int, default=24, help="tokens per default reply")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of calls that get a random fault"
    )
    parser.add_argument("--seed", type=int, help="seed of the random faults")
    parser.add_argument(
        "--fault-kinds", type=_kinds, help=f"only these kinds ({','.join(FAULT_KINDS)})"
    )
    parser.add_argument(
        "--quota",
        type=parse_quota,
        action="append",
        default=[],
        metavar="PROVIDER=RATE[,burst=B][,concurrency=N][,retry_after=no]",
        help="answer the provider's throttle above RATE requests/s (repeatable)",
    )
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds and print the statistics"
    )


async def serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (or for ``--duration`` seconds, then print the statistics)."""
    emu = Emulator(
        host=args.host,
        port=args.port,
        cadence=Cadence(args.first_token, args.per_token),
        reply_tokens=args.reply_tokens,
        fault_rate=args.fault_rate,
        seed=args.seed,
        fault_kinds=args.fault_kinds,
        quotas=dict(args.quota),
    )
    async with emu:
        out = sys.stdout
        out.write(f"aiollm emulator listening on {emu.url}\n")
        out.write("point a client at it with these settings:\n")
        for key, value in emu.env().items():
            out.write(f"  export {key}={value}\n")
        out.flush()
        if args.duration is None:
            await anyio.sleep_forever()
        await anyio.sleep(args.duration)
        out.write(json.dumps(emu.stats.summary(), indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``aiollm emulator`` with parsed ``args``."""
    if not 0.0 <= args.fault_rate <= 1.0:
        sys.stderr.write("error: --fault-rate must be between 0 and 1\n")
        return 2
    return anyio.run(serve, args)
