"""``--workers N``: the load from N processes, aggregated exactly from every request's record.

Each process runs a share of the load (the concurrency, the request rate — N independent
Poisson streams add up to one of the total rate — the requests and the concurrency cap are
split; request ``i`` of worker ``k`` is request ``i * N + k`` of the whole) against one
embedded emulator or the real service. The parent merges the raw per-request records of each
run and summarises them once: percentiles of the whole, never averages of percentiles. Each
process measures itself; the run reports the worst of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.to_thread

from .. import ConfigurationError
from ._config import BenchConfig
from ._metrics import RunSummary, summarize
from ._result import BenchResult
from ._selfwatch import merge_client

__all__ = ["run_workers", "shard"]


def _split(total: int, n: int, k: int) -> int:
    return total // n + (1 if k < total % n else 0)


def shard(config: BenchConfig, n: int, k: int) -> BenchConfig:
    """Worker ``k``'s share of ``config`` (of ``n``)."""
    if config.find_max is not None or config.trace is not None or config.turns > 1:
        raise ConfigurationError(
            "--workers runs fixed loads: not with --find-max, --trace or --turns yet"
        )
    if config.models_together:
        raise ConfigurationError("--workers runs the models one after another")
    widths = [config.concurrency] if config.request_rate is None else []
    widths += list(config.sweep)
    if config.max_concurrency:
        widths.append(config.max_concurrency)
    if any(w < n for w in widths):
        raise ConfigurationError(f"every concurrency must be at least the workers ({n})")
    rate = config.request_rate
    return dataclasses.replace(
        config,
        concurrency=_split(config.concurrency, n, k) if config.request_rate is None else 1,
        request_rate=None if rate is None else rate / n,
        max_concurrency=_split(config.max_concurrency, n, k) if config.max_concurrency else None,
        sweep=[_split(level, n, k) for level in config.sweep],
        requests=_split(config.requests, n, k) if config.requests is not None else None,
        shard=(k, n),
        emulator=False,
        workers=1,  # a share runs in its own process: it never splits again
    )


def _worker(config: BenchConfig, settings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One process: run its share, return each run's raw records and self-measurement."""
    from .. import Client
    from ._runner import run

    async def main() -> BenchResult:
        async with AsyncExitStack() as stack:
            client = None
            if settings is not None:
                client = await stack.enter_async_context(
                    Client(providers=settings, env={}, connection_limit=config.connection_limit())
                )
            return await run(config, client=client)

    result = anyio.run(main)
    return [
        {
            "model": r.model,
            "records": r.records,
            "started_at": r.started_at,
            "ended_at": r.started_at + r.duration,
            "cancelled": r.cancelled,
            "warmup_failed": r.warmup_failed,
            "client": {k: v for k, v in r.figures.items() if k.startswith("client_")},
            "stopped_by": result.stopped_by,
        }
        for r in result.runs
    ]


async def run_workers(config: BenchConfig, n: int, date: str) -> BenchResult:
    """Run ``config`` from ``n`` processes and merge their records run by run."""
    shards = [shard(config, n, k) for k in range(n)]
    async with AsyncExitStack() as stack:
        settings = None
        url = None
        if config.uses_emulator:
            from ..testing import Cadence, Emulator, Quota

            quotas = {}
            if config.quota_rps is not None:
                quota = Quota(rate=config.quota_rps, burst=max(1.0, config.quota_rps / 10))
                quotas = {m.partition("/")[0]: quota for m in config.model_list}
            emu = Emulator(
                cadence=Cadence(config.first_token, config.per_token),
                reply_tokens=config.max_tokens or 64,
                quotas=quotas,
            )
            await stack.enter_async_context(emu)
            settings, url = emu.settings(), emu.url
            shards = [dataclasses.replace(s, models=config.model_list) for s in shards]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(n, mp_context=context) as pool:
            futures = [pool.submit(_worker, s, settings) for s in shards]
            parts = [await anyio.to_thread.run_sync(f.result) for f in futures]
    count = min(len(p) for p in parts)
    runs = [_merge(config, i, [p[i] for p in parts]) for i in range(count)]
    stopped = next((p[0]["stopped_by"] for p in parts if p and p[0]["stopped_by"]), None)
    return BenchResult(
        runs=runs,
        config={**config.describe(), "workers": n},
        interrupted=any(r.interrupted for r in runs),
        emulator_url=url,
        date=date,
        stopped_by=stopped,
    )


def _merge(config: BenchConfig, i: int, parts: list[dict[str, Any]]) -> RunSummary:
    """One run from each worker's share: records on one clock, summarised once."""
    start = min(p["started_at"] for p in parts)
    end = max(p["ended_at"] for p in parts)
    records = []
    for part in parts:
        shift = part["started_at"] - start
        for rec in part["records"]:
            rec.start += shift
            records.append(rec)
    records.sort(key=lambda r: r.start)
    load = dict(config.levels()[i // len(config.model_list)])
    summary = summarize(
        parts[0]["model"],
        load,
        records,
        end - start,
        goodput_slos=config.goodput_slos,
        cancelled=sum(p["cancelled"] for p in parts),
        warmup_failed=sum(p["warmup_failed"] for p in parts),
        started_at=start,
    )
    summary.figures.update(merge_client(p["client"] for p in parts))
    return summary
