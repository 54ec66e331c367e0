"""Capacity search: SLO parsing, verdicts, the search itself, and end to end against a quota."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiollm import ConfigurationError
from aiollm.bench import BenchConfig, RequestRecord, RunState, run
from aiollm.bench._capacity import CapacitySearch, judge, parse_slos
from aiollm.cli import main

pytestmark = pytest.mark.anyio


def rec(i: int, ttft: float = 0.05, error: str | None = None, start: float = 0.0) -> RequestRecord:
    r = RequestRecord(model="openai/m", index=i, start=start, e2el=ttft + 0.1)
    if error is None:
        r.delta_times = [ttft, ttft + 0.05, ttft + 0.1]
        r.output_tokens = 3
    r.error = error
    r.attempts = 1
    return r


# -- SLOs and verdicts ------------------------------------------------------------------------
def test_parse_slos_reads_metric_statistic_and_limit() -> None:
    slos = {s.name: s.limit for s in parse_slos(["ttft_p99:2000", "tpot_p95:80", "itl_mean:30"])}
    assert slos == {"ttft_p99": 2000.0, "tpot_p95": 80.0, "itl_mean": 30.0, "error_rate": 0.01}
    assert {s.name: s.limit for s in parse_slos({"error_rate": 0.05})} == {"error_rate": 0.05}


@pytest.mark.parametrize(
    "spec", ["ttft:2000", "speed_p99:1", "ttft_p99", "ttft_p99:x", "error_rate:1.5", "ttft_p0:5"]
)
def test_parse_slos_rejects_what_it_cannot_judge(spec: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_slos([spec])


def _state(records: list[RequestRecord], cancelled: int = 0) -> RunState:
    state = RunState("openai/m", {"request_rate": 5.0, "num_requests": None})
    state.started = 0.0
    state.ended = 1.0
    state.records.extend(records)
    state.cancelled = cancelled
    return state


def test_judge_counts_throttling_as_errors_unless_told_otherwise() -> None:
    records = [rec(i) for i in range(97)] + [
        rec(97 + i, error="RateLimitError[18]") for i in range(3)
    ]
    slos = parse_slos(["ttft_p99:1000", "error_rate:0.01"])
    verdict, figures = judge(_state(records), slos)
    assert verdict.verdict == "failed" and "error_rate" in verdict.reason
    assert figures["throttled"] == {"RateLimitError[18]": 3} and figures["error_rate"] == 0.03
    verdict, figures = judge(_state(records), slos, count_throttling=False)
    assert verdict.verdict == "passed" and figures["error_rate"] == 0.0
    assert figures["throttled"] == {"RateLimitError[18]": 3}


def test_judge_names_the_missed_latency_and_saturation() -> None:
    slow = [rec(i, ttft=0.3) for i in range(20)]
    verdict, _ = judge(_state(slow), parse_slos(["ttft_p99:100"]))
    assert verdict.verdict == "failed" and "ttft_p99 300ms > 100ms" in verdict.reason
    growing = [rec(i, ttft=0.05 + 0.05 * i, start=i * 0.1) for i in range(30)]
    verdict, _ = judge(_state(growing), parse_slos(["ttft_p99:100000"]))
    assert verdict.verdict == "saturated" and "queueing grows" in verdict.reason
    verdict, figures = judge(_state([rec(0)], cancelled=4), parse_slos(None))
    assert verdict.verdict == "saturated" and figures["unfinished"] == 4


# -- the search on its own (a scripted service) ----------------------------------------------
def _service(capacity: float, flaky: set[float] | None = None) -> Any:
    seen: list[float] = []

    async def step(load: float) -> dict[str, Any]:
        seen.append(load)
        bad = flaky is not None and load in flaky and seen.count(load) == 2
        ok = load <= capacity and not bad
        return {"load": load, "verdict": "passed" if ok else "failed"}

    step.seen = seen  # type: ignore[attr-defined]
    return step


@pytest.mark.parametrize("capacity", [1.0, 7.0, 37.0, 100.0, 513.0])
async def test_search_brackets_the_capacity_within_its_resolution(capacity: float) -> None:
    search = CapacitySearch(start=1, limit=1024, resolution=0.05, repeats=2, integer=False)
    found = await search.run(_service(capacity), lambda: False)
    lo, hi = found["answer"], found["lowest_failing"]
    assert lo <= capacity < hi and hi - lo <= 0.05 * lo
    assert found["confidence"] == 1.0
    phases = [s["phase"] for s in search.steps]
    assert phases[-2:] == ["repeat", "repeat"] and [s["step"] for s in search.steps] == list(
        range(1, len(phases) + 1)
    )


async def test_search_over_concurrency_uses_whole_numbers() -> None:
    search = CapacitySearch(start=1, limit=512, resolution=0.1, repeats=1, integer=True)
    found = await search.run(_service(23.0), lambda: False)
    assert isinstance(found["answer"], int) and 21 <= found["answer"] <= 23
    assert all(float(s["load"]).is_integer() for s in search.steps)


async def test_a_passing_load_that_fails_its_repeat_is_not_the_answer() -> None:
    steady = CapacitySearch(start=1, limit=1024, resolution=0.05, repeats=2, integer=False)
    first = (await steady.run(_service(37.0), lambda: False))["answer"]
    service = _service(37.0, flaky={first})  # the answer's repeat fails this time
    search = CapacitySearch(start=1, limit=1024, resolution=0.05, repeats=2, integer=False)
    found = await search.run(service, lambda: False)
    assert found["answer"] is not None and found["answer"] < first
    assert found["lowest_failing"] == first and service.seen.count(first) == 2
    assert found["confidence"] is not None and found["confidence"] < 1.0


async def test_nothing_passes_and_the_limit_passes() -> None:
    search = CapacitySearch(start=1, limit=64, resolution=0.1, repeats=2, integer=False)
    none = await search.run(_service(0.5), lambda: False)
    assert none["answer"] is None and none["lowest_failing"] == 1
    search = CapacitySearch(start=1, limit=64, resolution=0.1, repeats=2, integer=False)
    top = await search.run(_service(1000.0), lambda: False)
    assert top["answer"] == 64 and top["reached_limit"] and top["lowest_failing"] is None


def test_search_settings_are_checked() -> None:
    for kwargs in (
        {"find_max": "tokens"},
        {"find_max": "request_rate", "resolution": 0.0},
        {"find_max": "request_rate", "search_start": 10.0, "search_limit": 5.0},
        {"find_max": "request_rate", "step_duration": 0.0},
        {"find_max": "request_rate", "repeats": 0},
        {"ramp": -1.0},
        {"quota_rps": 0.0},
    ):
        with pytest.raises(ConfigurationError):
            BenchConfig(**kwargs)  # type: ignore[arg-type]


# -- end to end against the emulator ----------------------------------------------------------
@pytest.mark.parametrize(
    ("workers", "quota", "start"),
    [
        (1, 20.0, 8.0),
        # each process warms up before each step: a quota whose burst (a tenth of a second's
        # requests) holds both warm-ups and the first measured request
        (2, 40.0, 10.0),
    ],
)
async def test_find_max_finds_the_quota_within_its_resolution(
    workers: int, quota: float, start: float
) -> None:
    result = await run(
        models=["openai/m"],
        emulator=True,
        quota_rps=quota,
        first_token=0.02,
        per_token=0.002,
        max_tokens=4,
        find_max="request_rate",
        slos=["ttft_p99:5000", "error_rate:0.01"],
        step_duration=1.0,
        search_start=start,
        resolution=0.25,
        burstiness=100.0,  # nearly even arrivals
        workers=workers,
    )
    cap = result.capacity
    assert cap is not None and cap["search"] == "request_rate"
    answer = cap["max_request_rate"]
    # above the quota the server refuses, whatever the machine's load: never above it by more
    # than the resolution; below it only a starved client fails (generous lower bound). With
    # two processes the quota is shared: the answer is the total rate.
    assert answer is not None and quota * 0.4 <= answer <= quota * 1.25
    assert cap["resolution"] == 0.25 and cap["confidence"] is not None
    steps = cap["steps"]
    throttled = [s for s in steps if s["throttled"]]
    assert throttled and all(s["verdict"] != "passed" for s in throttled)
    assert all(k.startswith("RateLimitError") for s in throttled for k in s["throttled"])
    assert {"cooldown_s", "retries", "error_rate", "slo_values", "phase"} <= set(steps[0])
    # through the client's hooks: time before the first HTTP request, the quota left
    assert all(s["limiter_wait_ms"] is not None and s["limiter_wait_ms"] >= 0 for s in steps)
    assert any(s["quota_remaining"] is not None for s in steps)
    assert all(s["quota_remaining"] is None or s["quota_remaining"] >= 0 for s in steps)
    assert "max req/s meeting the SLOs" in result.table()
    assert len(result.runs) == len(steps) and not result.interrupted
    assert cap["client_processes"] == workers
    assert f"client: {workers} process" in result.table()
    for step, run_ in zip(steps, result.runs, strict=True):
        assert run_.figures["client_processes"] == workers
        # each step is judged on the records of every process
        assert step["completed"] == run_.completed and step["failed"] == run_.failed
        assert sum(step["throttled"].values()) == sum(
            n for key, n in run_.errors.items() if key.startswith("RateLimitError")
        )
        sent = step["completed"] + step["failed"] + step["unfinished"]
        if step["verdict"] == "passed":  # the load is the total rate, whatever the processes
            assert 0.8 * step["load"] <= sent <= 1.2 * step["load"] + 2


def test_find_max_says_when_no_rate_meets_a_latency_slo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cap.json"
    code = main(
        [
            "bench",
            "--emulator",
            "--model",
            "openai/m",
            "--first-token",
            "0.2",
            "--per-token",
            "0.001",
            "--max-tokens",
            "3",
            "--find-max",
            "--slo",
            "ttft_p99:50",
            "--step-duration",
            "0.5",
            "--search-start",
            "2",
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "no load tried meets the SLOs" in text and "ttft_p99" in text
    data = json.loads(out.read_text())
    cap = data["capacity"]
    assert cap["max_request_rate"] is None and cap["slos"]["ttft_p99"] == 50.0
    assert len(cap["steps"]) == 2 and all(s["verdict"] == "failed" for s in cap["steps"])
    assert all(s["slo_values"]["ttft_p99"] >= 200.0 for s in cap["steps"])
    assert len(data["runs"]) == 2


@pytest.mark.parametrize(
    ("model", "code"),
    [("qianfan/ernie-speed-128k", "[18]"), ("dashscope/qwen-turbo", "[Throttling.RateQuota]")],
)
async def test_the_emulator_quota_answers_in_each_vendor_shape(model: str, code: str) -> None:
    result = await run(
        models=[model],
        emulator=True,
        quota_rps=2.0,
        first_token=0.0,
        per_token=0.0,
        max_tokens=2,
        request_rate=float("inf"),
        requests=12,
        max_retries=0,
        warmup=0,
    )
    (s,) = result.runs
    assert s.completed >= 1 and s.failed >= 1
    assert all(key.startswith("RateLimitError") and key.endswith(code) for key in s.errors)
