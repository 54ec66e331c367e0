"""aiollm.bench end to end against the emulator: cadence recovery, load shapes, errors, stop, CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiollm import Client
from aiollm.bench import BenchConfig, Benchmark, run
from aiollm.cli import main
from aiollm.testing import Cadence, Emulator, Fault

pytestmark = pytest.mark.anyio


async def test_report_recovers_the_scripted_cadence() -> None:
    # the embedded emulator (no client given) with a 50 ms first token, then 10 ms per token;
    # the precise accuracy figure is printed by benchmarks/bench_accuracy.py
    result = await run(
        models=["openai/m"],
        emulator=True,
        first_token=0.05,
        per_token=0.01,
        max_tokens=12,
        concurrency=1,
        requests=10,
        warmup=1,
    )
    (summary,) = result.runs
    assert summary.completed == 10 and summary.failed == 0
    f = summary.figures
    # The server's pauses are lower bounds the report must recover; the upper bounds leave room
    # for a loaded machine (the precise accuracy is measured by a script in benchmarks/).
    assert 50.0 <= f["median_ttft_ms"] <= 50.0 + 250.0
    # TPOT is (e2el - TTFT) / 11: a first token delivered late shortens it, so its floor has room
    assert 8.0 <= f["median_tpot_ms"] <= 10.0 + 40.0
    assert 5.0 <= f["median_itl_ms"] <= 10.0 + 40.0
    assert 50.0 + 11 * 10.0 <= f["median_e2el_ms"] <= 50.0 + 11 * 10.0 + 500.0
    assert f["total_output_tokens"] == 10 * 12 and f["output_tokens_from_usage"] is True
    for r in summary.records:
        assert r.headers is not None and r.ttft is not None and r.headers < r.ttft
        assert 1 <= r.chunks <= 12 and r.attempts == 1


async def test_fixed_concurrency_holds_that_many_streams_and_skips_warmup(
    emu: Emulator, client: Client
) -> None:
    emu.cadence = Cadence(0.02, 0.002)
    result = await run(
        models=["openai/m"], client=client, concurrency=3, requests=9, warmup=2, max_tokens=5
    )
    (s,) = result.runs
    assert s.completed == 9
    assert sorted(r.index for r in s.records) == list(range(9))
    assert emu.stats.requests["openai.chat"] == 11  # 2 warm-up + 9 measured
    assert emu.stats.max_open_streams == 3
    assert s.load["concurrency"] == 3
    assert s.figures["request_throughput"] == pytest.approx(9 / s.duration, rel=1e-3)


async def test_duration_bounds_the_run(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(0.02, 0.0)
    # Requests of ~20 ms each, two at a time, for 1 s: far more than 4 even on a busy machine.
    result = await run(models=["openai/m"], client=client, concurrency=2, duration=1.0)
    (s,) = result.runs
    assert s.completed >= 4
    # none starts after the duration (a start is stamped a moment after the check: noise)
    assert all(r.start < 1.0 + 0.05 for r in s.records)
    assert s.load["num_requests"] is None and s.load["duration_limit"] == 1.0


async def test_request_rate_follows_seeded_gamma_arrivals(emu: Emulator, client: Client) -> None:
    cfg = BenchConfig(
        models=["openai/m"], request_rate=40.0, burstiness=0.5, requests=12, seed=3, max_tokens=3
    )
    result = await run(cfg, client=client)
    (s,) = result.runs
    assert s.completed == 12
    rng = random.Random(3)
    expected = [0.0]
    for _ in range(11):
        expected.append(expected[-1] + rng.gammavariate(0.5, 1.0 / (40.0 * 0.5)))
    starts = [r.start for r in sorted(s.records, key=lambda r: r.index)]
    for got, want in zip(starts, expected, strict=True):
        # never before its scheduled time; late only by scheduling noise (generous bound)
        assert want - 0.001 <= got <= want + 0.5


async def test_unpaced_rate_with_a_cap_queues_requests(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(0.03, 0.0)
    cfg = BenchConfig(
        models=["openai/m"], request_rate=float("inf"), max_concurrency=2, requests=6, max_tokens=2
    )
    result = await run(cfg, client=client)
    (s,) = result.runs
    assert s.completed == 6
    assert emu.stats.max_open_streams == 2
    assert max(r.queued for r in s.records) >= 0.05  # the last pair waited for two rounds
    assert s.figures["mean_queued_ms"] > 20
    assert "waited" in result.table()


async def test_sweep_and_several_models_report_each_run(emu: Emulator, client: Client) -> None:
    cfg = BenchConfig(models=["openai/a", "openai/b"], sweep=[1, 2], requests=2, max_tokens=3)
    result = await run(cfg, client=client)
    assert [(r.model, r.load["concurrency"]) for r in result.runs] == [
        ("openai/a", 1),
        ("openai/b", 1),
        ("openai/a", 2),
        ("openai/b", 2),
    ]
    data = result.to_json()
    assert isinstance(data, list) and len(data) == 4
    assert not result.interrupted


async def test_models_together_run_at_the_same_time(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(0.05, 0.0)
    cfg = BenchConfig(
        models=["openai/a", "openai/b"], concurrency=2, requests=2, models_together=True
    )
    result = await run(cfg, client=client)
    assert [r.completed for r in result.runs] == [2, 2]
    assert emu.stats.max_open_streams == 4


async def test_errors_are_counted_by_provider_code(emu: Emulator, client: Client) -> None:
    emu.script(
        "openai",
        Fault("error", code="context_length_exceeded", status=400, route="chat"),
        Fault("error", code="server_boom", after_tokens=2, route="chat"),
        Fault("http", status=429, retry_after=0.01, route="chat"),
    )
    result = await run(
        models=["openai/m"],
        client=client,
        concurrency=1,
        requests=5,
        max_tokens=4,
        max_retries=0,
        warmup=0,
    )
    (s,) = result.runs
    table = result.table()
    assert "errors: " in table
    assert "ContextOverflowError[context_length_exceeded]: [openai] scripted fault" in table
    assert s.errors.pop("ContextOverflowError[context_length_exceeded]") == 1
    assert s.errors.pop("RateLimitError") == 1
    ((interrupted, count),) = s.errors.items()  # an error frame after two tokens
    assert interrupted.startswith("StreamInterrupted/") and interrupted.endswith("[server_boom]")
    assert count == 1
    assert (s.completed, s.failed) == (2, 3)
    failed = [r for r in s.records if not r.ok]
    assert all(r.e2el is not None and r.error_message for r in failed)


async def test_retries_show_in_attempts(emu: Emulator, client: Client) -> None:
    emu.script("openai", Fault("http", status=503, route="chat"))
    result = await run(models=["openai/m"], client=client, concurrency=1, requests=1, warmup=0)
    (r,) = result.runs[0].records
    assert r.ok and r.attempts == 2


async def test_no_usage_falls_back_to_counting_chunks(emu: Emulator, client: Client) -> None:
    result = await run(
        models=["openai/m"],
        client=client,
        concurrency=1,
        requests=2,
        max_tokens=5,
        params={"stream_options": None},
    )
    (s,) = result.runs
    assert all(not r.tokens_from_usage and r.output_tokens == 5 for r in s.records)
    assert "no usage reported" in result.table()


async def test_prompts_are_sent_round_robin(emu: Emulator, client: Client) -> None:
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(2)]
    await run(
        models=["openai/m"], client=client, concurrency=1, requests=3, prompts=prompts, warmup=0
    )
    sent = [b["messages"] for b in emu.stats.bodies]
    assert sent == [prompts[0], prompts[1], prompts[0]]
    assert all(b["max_tokens"] == 64 for b in emu.stats.bodies)


async def test_stop_keeps_what_finished_and_closes_every_stream(
    emu: Emulator, client: Client
) -> None:
    emu.cadence = Cadence(0.01, 0.01)
    bench = Benchmark(
        BenchConfig(models=["openai/m"], concurrency=3, requests=500, max_tokens=10),
        client=client,
        progress=False,
    )
    async with anyio.create_task_group() as tg:

        async def stop_later() -> None:
            with anyio.fail_after(10):
                while sum(s.completed for s in bench.result().runs) < 4:
                    await anyio.sleep(0.01)
            bench.stop()

        tg.start_soon(stop_later)
        result = await bench.run()
    (s,) = result.runs
    assert result.interrupted and s.interrupted and bench.stopped
    assert 4 <= s.completed < 500 and s.failed == 0
    assert s.cancelled == 3
    assert "stopped" in result.table()
    with anyio.fail_after(10):
        while emu.stats.open_streams:
            await anyio.sleep(0.01)


async def test_stop_before_run_reports_nothing(emu: Emulator, client: Client) -> None:
    bench = Benchmark(BenchConfig(models=["openai/m"], requests=5), client=client, progress=False)
    bench.stop()
    result = await bench.run()
    assert result.runs == [] and result.interrupted
    assert emu.stats.requests["openai.chat"] == 0
    assert "nothing to report" in result.table()


@pytest.mark.parametrize(
    ("fault", "key"),
    [
        (Fault("error", code="invalid_api_key", status=401, route="chat"), "AuthenticationError"),
        (Fault("error", code="model_not_found", status=404, route="chat"), "NotFoundError"),
    ],
)
async def test_a_failure_no_retry_fixes_stops_after_the_first_request(
    emu: Emulator, client: Client, fault: Fault, key: str
) -> None:
    emu.script("openai", fault)
    result = await run(
        models=["openai/m"], client=client, concurrency=4, requests=50, warmup=0, max_tokens=3
    )
    (s,) = result.runs
    assert result.stopped_by is not None and result.stopped_by.startswith(key)
    assert s.failed == 1 and s.completed < 50
    assert emu.stats.requests["openai.chat"] < 50
    assert "no retry can fix" in result.table()


async def test_a_missing_key_stops_at_once_and_the_library_prints_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with Client(env={}) as bare:
        result = await run(models=["dashscope/qwen-turbo"], client=bare, requests=20)
    assert result.stopped_by is not None and "ConfigurationError" in result.stopped_by
    assert sum(r.failed for r in result.runs) <= 1
    assert capsys.readouterr() == ("", "")


# -- the command line ------------------------------------------------------------------------
def test_cli_bench_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    code = main(
        [
            "bench",
            "--model",
            "openai/m",
            "--emulator",
            "--first-token",
            "0",
            "--per-token",
            "0",
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--max-tokens",
            "5",
            "--goodput",
            "ttft:1000",
            "tpot:100",
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "openai/m @ concurrency 2" in captured.out and "goodput" in captured.out
    data = json.loads(out.read_text())
    assert data["completed"] == 4 and data["request_goodput"] > 0
    assert len((tmp_path / "result.requests.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "result.requests.csv").read_text().startswith("model,")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-concurrency", "4"], "go with --request-rate"),
        (["--request-rate", "inf", "--burstiness", "0.5"], "no meaning"),
        (["--goodput", "speed:5"], "unknown goodput metric"),
        (["--model", "nosuch/m"], "unknown provider"),
        (["--model", "no-slash"], "must be '<provider>/<model>'"),
    ],
)
def test_cli_bench_rejects_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_bench_plot_needs_matplotlib(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    assert main(["bench", "--plot", "x.png"]) == 2
    assert "aiollm-client[plot]" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_cleanly_and_writes_what_it_has(tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiollm.cli",
            "bench",
            "--emulator",
            "--model",
            "openai/m",
            "--requests",
            "100000",
            "--concurrency",
            "4",
            "--first-token",
            "0.005",
            "--per-token",
            "0.002",
            "--max-tokens",
            "10",
            "--output",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        assert "Ctrl-C stops" in proc.stderr.readline()
        # let some requests finish, then interrupt
        deadline = 200
        while not out.exists() and deadline:
            deadline -= 1
            try:
                proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
            if deadline == 180:
                proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "stopped early" in stdout
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["completed"] > 0 and data["failed"] == 0
    assert (tmp_path / "partial.requests.csv").exists()


async def test_default_run_covers_every_emulated_provider() -> None:
    import io

    from aiollm.bench import EMULATOR_MODELS

    out = io.StringIO()
    bench = Benchmark(
        BenchConfig(first_token=0.0, per_token=0.0, concurrency=2, requests=3, max_tokens=8),
        progress=out,
    )
    result = await bench.run()
    assert [r.model for r in result.runs] == list(EMULATOR_MODELS)
    for run_ in result.runs:
        assert (run_.completed, run_.failed) == (3, 0), (run_.model, run_.errors)
        assert run_.figures["total_output_tokens"] == 3 * 8
    assert result.emulator_url and result.emulator_url.startswith("http://127.0.0.1:")
    assert out.getvalue().count("3/3") == len(EMULATOR_MODELS)  # one final progress line each
