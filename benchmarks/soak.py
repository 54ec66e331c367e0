"""Fault soak: thousands of calls per provider against the emulator with injected faults.

    nox -s soak                       # 2,000 calls per provider, concurrency 150, 2% faults
    nox -s soak -- --calls 500 --concurrency 100 --fault-rate 0.05 --seed 7

Every call goes through ``aiollm.fanout.map`` and streams its reply. The emulator injects
random faults into ``--fault-rate`` of the requests (resets before and mid-stream, stalls,
keep-alive-only stalls, 429 with and without ``Retry-After``, 5xx, each provider's HTTP-200
and in-stream error bodies incl. Qianfan 18 and 110/111 token expiry, truncated and malformed
frames, HTML instead of JSON) and logs every frame it sends. The soak then checks, against
that log:

- every call ends in a completion or a typed ``aiollm`` error (nothing else, no hang);
- the text delivered to the caller is exactly what the server sent on the answering request
  (a completed call: all of it; an interrupted one: a prefix of it, all of it when the
  server ended the body itself), never duplicated or missing;
- token fetches are single flight (at most one per token expiry the server injected);
- afterwards no connection is held, and no file descriptor, task or ResourceWarning remains.

It prints the counts and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiollm
from aiollm import RetryPolicy, Timeout, fanout
from aiollm.errors import AiollmError, StreamInterrupted
from aiollm.testing import Cadence, Emulator

PROVIDERS = ("dashscope", "qianfan", "openai", "gateway")
TOKEN_ROUTES = {"qianfan": "qianfan.token", "gateway": "gateway.token"}
ENDED_BY_SERVER = frozenset({"completed", "truncate", "malformed", "error"})
"""Outcomes where the server ended the body itself: the client saw every frame it sent."""


@dataclass
class Outcome:
    """What one call gave its caller."""

    prompt: str
    delivered: str = ""
    completion: aiollm.Completion | None = None
    error: BaseException | None = None


@dataclass
class Report:
    provider: str
    calls: int = 0
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    token_fetches: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def one_call(client: aiollm.Client, model: str, prompt: str) -> Outcome:
    outcome = Outcome(prompt)
    parts: list[str] = []
    try:
        async with client.stream(model, [{"role": "user", "content": prompt}]) as stream:
            async for event in stream:
                if isinstance(event, aiollm.TextDelta):
                    parts.append(event.text)
            outcome.completion = stream.completion
    except Exception as exc:
        outcome.error = exc
    outcome.delivered = "".join(parts)
    return outcome


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return -1


def check_call(emu: Emulator, outcome: Outcome, by_id: dict[str, Any], report: Report) -> None:
    expected = "".join(emu.reply_tokens_for(outcome.prompt))
    if outcome.error is None:
        completion = outcome.completion
        assert completion is not None
        report.completed += 1
        if outcome.delivered != expected or completion.text != expected:
            report.problems.append(f"{outcome.prompt}: text differs from the reply")
        record = by_id.get(completion.request_id or "")
        if record is not None and record.text != outcome.delivered:
            report.problems.append(f"{outcome.prompt}: text differs from the server's log")
        return
    error = outcome.error
    if not isinstance(error, AiollmError):
        report.problems.append(f"{outcome.prompt}: untyped {type(error).__name__}: {error}")
        return
    report.errors[type(error).__name__] += 1
    if isinstance(error, StreamInterrupted):
        partial = error.partial
        if partial.text != outcome.delivered or not expected.startswith(outcome.delivered):
            report.problems.append(f"{outcome.prompt}: partial text is not a prefix of the reply")
        record = by_id.get(partial.request_id or "")
        if record is not None:
            if not record.text.startswith(outcome.delivered):
                report.problems.append(f"{outcome.prompt}: partial text not what was sent")
            elif record.outcome in ENDED_BY_SERVER and record.text != outcome.delivered:
                report.problems.append(f"{outcome.prompt}: frames the server sent were lost")
    elif outcome.delivered:
        report.problems.append(f"{outcome.prompt}: text delivered, then {type(error).__name__}")


async def soak_provider(
    emu: Emulator, provider: str, calls: int, concurrency: int, timeout: Timeout
) -> Report:
    report = Report(provider, calls=calls)
    emu.stats.reset()
    retry = RetryPolicy(max_retries=3, backoff_base=0.05, backoff_max=0.5)
    started = time.perf_counter()
    async with emu.client(timeout=timeout, retry=retry) as client:
        prompts = [f"soak {provider} call {i}" for i in range(calls)]

        async def call(prompt: str) -> Outcome:
            return await one_call(client, f"{provider}/soak-model", prompt)

        outcomes = await fanout.map(call, prompts, concurrency=concurrency)
        connector = client._transport.session.connector
        held = len(getattr(connector, "_acquired", ()))
        if held:
            report.problems.append(f"{held} connections still held after every call ended")
    report.seconds = time.perf_counter() - started
    records = list(emu.stats.log)
    by_id = {r.request_id: r for r in records if r.request_id}
    for outcome in outcomes:
        check_call(emu, outcome, by_id, report)
    report.faults = Counter(emu.stats.faults)
    chat_records = [r for r in records if not r.route.endswith(".token")]
    report.attempts = len(chat_records)
    token_route = TOKEN_ROUTES.get(provider)
    if token_route is not None:
        report.token_fetches = emu.stats.requests[token_route]
        expiring = {c.fault.label for c in emu.services[provider].menu() if c.fault.expire_token}
        expiries = sum(n for label, n in report.faults.items() if label in expiring)
        # One fetch at the start, one per token the server expired; never one per caller.
        if report.token_fetches > 1 + expiries:
            report.problems.append(
                f"{report.token_fetches} token fetches for {expiries} expiries: not single flight"
            )
    return report


async def soak(args: argparse.Namespace) -> int:
    timeout = Timeout(connect=5.0, first_byte=5.0, idle=1.0, total=30.0)
    baseline_fds = open_fds()
    failed = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with Emulator(
            cadence=Cadence(first_token=0.0, per_token=0.001),
            fault_rate=args.fault_rate,
            seed=args.seed,
            log_limit=None,
        ) as emu:
            baseline_tasks = len(asyncio.all_tasks())
            print(
                f"soak: {args.calls} calls per provider, concurrency {args.concurrency}, "
                f"fault rate {args.fault_rate:.1%}, seed {args.seed}"
            )
            header = (
                f"{'provider':10} {'calls':>6} {'ok':>6} {'typed errors':>12} {'requests':>8} "
                f"{'faults':>6} {'tokens':>6} {'seconds':>7}  problems"
            )
            print(header)
            for provider in args.providers:
                r = await soak_provider(emu, provider, args.calls, args.concurrency, timeout)
                print(
                    f"{provider:10} {r.calls:6} {r.completed:6} {sum(r.errors.values()):12} "
                    f"{r.attempts:8} {sum(r.faults.values()):6} {r.token_fetches:6} "
                    f"{r.seconds:7.1f}  {len(r.problems)}"
                )
                print(f"{'':10} faults: {dict(sorted(r.faults.items()))}")
                print(f"{'':10} errors: {dict(sorted(r.errors.items()))}")
                for problem in r.problems[:10]:
                    print(f"{'':10} PROBLEM {problem}")
                failed = failed or bool(r.problems)
            await asyncio.sleep(0.2)  # let the server's handlers see the connections close
            tasks = len(asyncio.all_tasks()) - baseline_tasks
        gc.collect()
    fds = open_fds() - baseline_fds
    resource_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
    print(
        f"afterwards: {tasks} extra tasks, {fds} extra file descriptors, "
        f"{len(resource_warnings)} ResourceWarnings"
    )
    for w in resource_warnings[:5]:
        print(f"  {w.message}")
    failed = failed or tasks > 0 or fds > 0 or bool(resource_warnings)
    print("soak:", "FAILED" if failed else "passed")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per provider")
    parser.add_argument("--concurrency", type=int, default=150)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
