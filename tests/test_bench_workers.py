"""--workers: exact aggregation from several processes; the bench measuring itself."""

from __future__ import annotations

import time

import anyio
import pytest

from aiollm import ConfigurationError
from aiollm.bench import BenchConfig, run
from aiollm.bench._selfwatch import SelfWatch, client_note, merge_client
from aiollm.bench._workers import shard
from aiollm.testing import Cadence, Emulator

pytestmark = pytest.mark.anyio

BASE = {
    "models": ["openai/m"],
    "emulator": True,
    "first_token": 0.0,
    "per_token": 0.0,
    "max_tokens": 5,
    "requests": 12,
}


async def test_two_workers_give_the_same_counts_as_one() -> None:
    one = await run(**BASE, concurrency=4)
    two = await run(**BASE, concurrency=4, workers=2)
    (a,), (b,) = one.runs, two.runs
    for key in ("completed", "failed", "total_input_tokens", "total_output_tokens"):
        assert a.figures[key] == b.figures[key], key
    assert (
        sorted(r.index for r in b.records) == sorted(r.index for r in a.records) == list(range(12))
    )
    assert b.figures["client_processes"] == 2 and a.figures["client_processes"] == 1
    assert b.load["concurrency"] == 4 and two.config["workers"] == 2
    assert all(r.start >= 0 for r in b.records)


async def test_workers_split_a_sweep_and_a_rate() -> None:
    swept = await run(**BASE, sweep=[2, 4], workers=2)
    assert [r.load["concurrency"] for r in swept.runs] == [2, 4]
    assert [r.completed for r in swept.runs] == [12, 12]
    paced = await run(**BASE, request_rate=200.0, workers=2)
    assert paced.runs[0].completed == 12 and paced.runs[0].load["request_rate"] == 200.0


async def test_workers_against_a_service_split_the_load_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each share runs in its own process and never splits again (it used to, down to one)
    assert shard(BenchConfig(models=["openai/m"], concurrency=4, workers=2), 2, 0).workers == 1
    async with Emulator(cadence=Cadence(0.0, 0.0), reply_tokens=5) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        result = await run(models=["openai/m"], concurrency=4, requests=8, warmup=0, workers=2)
    (summary,) = result.runs
    assert summary.completed == 8 and summary.figures["client_processes"] == 2


def test_shards_add_up_to_the_whole() -> None:
    cfg = BenchConfig(models=["openai/m"], concurrency=5, requests=11, request_rate=None)
    parts = [shard(cfg, 2, k) for k in range(2)]
    assert [p.concurrency for p in parts] == [3, 2] and [p.requests for p in parts] == [6, 5]
    rated = BenchConfig(models=["openai/m"], request_rate=9.0, max_concurrency=4, requests=4)
    assert [shard(rated, 3, k).request_rate for k in range(3)] == [3.0, 3.0, 3.0]
    with pytest.raises(ConfigurationError, match="at least the workers"):
        shard(BenchConfig(models=["openai/m"], concurrency=1), 2, 0)
    with pytest.raises(ConfigurationError, match="find-max"):
        shard(BenchConfig(models=["openai/m"], find_max="request_rate"), 2, 0)


async def test_a_blocked_event_loop_is_reported_as_the_limit() -> None:
    watch = SelfWatch()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.follow)
        for _ in range(6):
            await anyio.sleep(0.02)
            time.sleep(0.06)  # the client's own work holds the loop
        tg.cancel_scope.cancel()
    figures = watch.window(start, time.perf_counter())
    assert figures["client_limited"] is True
    assert figures["client_loop_lag_p99_ms"] >= 20.0
    assert "the client was the limit" in client_note(figures)
    merged = merge_client([figures, {"client_processes": 1, "client_limited": False}])
    assert merged["client_limited"] is True and merged["client_processes"] == 2


async def test_a_light_run_says_the_client_was_not_the_limit() -> None:
    # a first token 50 ms late makes the run last long enough for the loop to be sampled
    result = await run(**{**BASE, "first_token": 0.05}, concurrency=2)
    f = result.runs[0].figures
    assert f["client_loop_lag_p99_ms"] is not None and f["client_cpu_busy"] is not None
    assert "client:" in result.table() or "the client was the limit" in result.table()
