"""--workers: how many by default, exact aggregation from several processes for every load
shape (fixed, rate, trace, multi-turn; the capacity search in test_bench_capacity.py),
stopping them; the bench measuring itself."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from aiollm import ConfigurationError
from aiollm.bench import BenchConfig, Benchmark, RunSummary, run
from aiollm.bench import _workers as workers_module
from aiollm.bench._selfwatch import SelfWatch, client_note, merge_client
from aiollm.bench._workers import LOAD_PER_PROCESS, plan, share
from aiollm.bench._workload import TraceEntry

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


def _same_counts(a: RunSummary, b: RunSummary) -> None:
    for key in ("completed", "failed", "total_input_tokens", "total_output_tokens"):
        assert a.figures[key] == b.figures[key], key
    assert sorted(r.index for r in a.records) == sorted(r.index for r in b.records)
    assert b.figures["client_processes"] == 2 and a.figures["client_processes"] == 1


async def test_workers_split_a_sweep_and_a_rate() -> None:
    swept = await run(**BASE, sweep=[2, 4], workers=2)
    assert [r.load["concurrency"] for r in swept.runs] == [2, 4]
    assert [r.completed for r in swept.runs] == [12, 12]
    paced = await run(**BASE, request_rate=200.0, workers=2)
    assert paced.runs[0].completed == 12 and paced.runs[0].load["request_rate"] == 200.0


async def test_two_workers_replay_a_trace_at_its_times() -> None:
    # the trace's requests are split across the processes, each sent at its recorded time
    trace = [TraceEntry(0.05 * i, 10 + i, 2 + i % 3) for i in range(10)]
    settings = {**BASE, "requests": None, "trace": trace, "trace_speed": 2.0, "warmup": 0}
    one, two = await run(**settings), await run(**settings, workers=2)
    (a,), (b,) = one.runs, two.runs
    _same_counts(a, b)
    assert b.completed == 10 and b.load["trace_speed"] == 2.0
    assert {r.index: r.output_tokens for r in a.records} == {
        r.index: r.output_tokens for r in b.records
    }
    for rec in b.records:
        assert rec.start >= trace[rec.index].at / 2.0 - 0.001  # never early on the merged clock


async def test_two_workers_keep_each_session_whole_and_in_order() -> None:
    settings = {**BASE, "requests": 8, "turns": 2, "think_time": 0.02, "concurrency": 2}
    one, two = await run(**settings), await run(**settings, workers=2)
    (a,), (b,) = one.runs, two.runs
    assert a.completed == b.completed == 8 and a.failed == b.failed == 0
    assert sorted(r.index for r in a.records) == sorted(r.index for r in b.records)
    # each process runs whole sessions (0 and 2, 1 and 3), one after another
    turns = sorted((r.session, r.turn) for r in b.records)
    assert turns == [(s, t) for s in range(4) for t in range(2)]
    by_turn = {(r.session, r.turn): r for r in b.records}
    for session in range(4):
        first, second = by_turn[session, 0], by_turn[session, 1]
        # the second turn went after the first ended, carrying it as history (one process)
        assert second.start >= first.start + (first.e2el or 0.0) + 0.02
        assert second.prompt_chars > first.prompt_chars + first.output_chars


async def test_stopping_the_workers_keeps_what_finished() -> None:
    bench = Benchmark(
        BenchConfig(**{**BASE, "requests": 4000, "first_token": 0.01}, concurrency=4, workers=2)
    )
    async with anyio.create_task_group() as tg:

        async def stop_later() -> None:
            await anyio.sleep(3.0)
            bench.stop()

        tg.start_soon(stop_later)
        with anyio.fail_after(120):
            result = await bench.run()
    assert result.interrupted and bench.stopped
    assert all(r.interrupted and r.completed < 4000 for r in result.runs)


async def test_a_failure_no_retry_fixes_in_a_worker_stops_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with anyio.fail_after(120):
        result = await run(
            models=["dashscope/qwen-turbo"], concurrency=4, requests=40, warmup=0, workers=2
        )
    assert result.stopped_by is not None and "ConfigurationError" in result.stopped_by
    assert sum(r.completed for r in result.runs) == 0
    assert sum(r.failed for r in result.runs) <= 4  # at most one per loop of each process


@pytest.mark.parametrize(
    ("settings", "cores", "expected", "why"),
    [
        ({"concurrency": 10}, 8, 1, "auto: concurrency 10 is within one process's 32"),
        ({"concurrency": 100}, 8, 4, "auto: concurrency 100 is above 32 per process; 4 of 8"),
        ({"concurrency": 100}, 2, 2, "2 of 2 cores"),
        ({"concurrency": 100}, 1, 1, "but one core"),
        ({"sweep": [1, 64]}, 8, 1, "but a level too narrow to share"),
        ({"request_rate": 100.0}, 8, 4, "auto: 100 req/s is above 32"),
        ({"request_rate": float("inf"), "requests": 12}, 8, 1, "12 requests at once"),
        ({"find_max": "request_rate"}, 8, 8, "a search of the request rate up to 1024 req/s"),
        ({"concurrency": 100, "workers": 1}, 8, 1, "workers=1 was given"),
        ({"concurrency": 100, "models_together": True}, 8, 1, "models run together"),
        ({"trace": [TraceEntry(i / 100) for i in range(200)]}, 8, 4, "the trace's 101 req/s"),
    ],
)
def test_the_default_is_a_process_per_32_of_load_up_to_the_cores(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], cores: int, expected: int, why: str
) -> None:
    monkeypatch.setattr(workers_module, "_cores", lambda: cores)
    n, reason = plan(BenchConfig(models=["openai/m"], **settings))
    assert n == expected and why in reason
    assert plan(BenchConfig(models=["openai/m"]), own_client=True)[0] == 1
    assert LOAD_PER_PROCESS == 32


async def test_a_high_load_runs_on_the_cores_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "_cores", lambda: 2)
    result = await run(**{**BASE, "requests": 40}, concurrency=40)
    (s,) = result.runs
    assert s.completed == 40 and s["client_processes"] == 2
    row = result.to_json()
    assert isinstance(row, dict) and row["client_processes"] == 2
    assert row["client_processes_reason"].startswith("auto: concurrency 40 is above 32")
    assert "client: 2 processes (auto: concurrency 40" in result.table()


def test_shares_add_up_to_the_whole() -> None:
    cfg = BenchConfig(models=["openai/m"], concurrency=5, requests=11, request_rate=None)
    (load,) = cfg.levels()
    parts = [share(load, 2, k) for k in range(2)]
    assert [p["concurrency"] for p in parts] == [3, 2] and [p["num_requests"] for p in parts] == [
        6,
        5,
    ]
    rated = BenchConfig(models=["openai/m"], request_rate=9.0, max_concurrency=4, requests=4)
    (load,) = rated.levels()
    assert [share(load, 3, k)["request_rate"] for k in range(3)] == [3.0, 3.0, 3.0]
    assert [share(load, 3, k)["max_concurrency"] for k in range(3)] == [2, 1, 1]
    with pytest.raises(ConfigurationError, match="at least the workers"):
        BenchConfig(models=["openai/m"], concurrency=1, workers=2)
    with pytest.raises(ConfigurationError, match="one after another"):
        BenchConfig(models=["openai/m", "openai/n"], models_together=True, workers=2)


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
