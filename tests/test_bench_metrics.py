"""aiollm.bench: records, percentiles, summaries, goodput, error keys, workloads, reports (no I/O)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys
from pathlib import Path

import pytest

from aiollm import (
    APIError,
    ConfigurationError,
    ContextOverflowError,
    RateLimitError,
    StreamInterrupted,
    TimeoutError,
)
from aiollm.bench import (
    BenchConfig,
    BenchResult,
    RequestRecord,
    error_key,
    load_prompts,
    parse_goodput,
    percentile,
    summarize,
    synthetic_prompt,
)
from aiollm.bench._progress import ProgressLine
from aiollm.bench._report import CSV_COLUMNS, plot_title
from aiollm.bench._result import RunState
from aiollm.events import Completion

LOAD = {"concurrency": 2, "request_rate": None, "burstiness": None, "max_concurrency": None}


def rec(
    i: int,
    deltas: list[float],
    e2el: float,
    tokens: int | None = None,
    error: str | None = None,
    start: float = 0.0,
) -> RequestRecord:
    r = RequestRecord(model="openai/m", index=i, start=start, delta_times=list(deltas), e2el=e2el)
    r.output_tokens = len(deltas) if tokens is None else tokens
    r.tokens_from_usage = tokens is not None
    r.error = error
    return r


# -- records ---------------------------------------------------------------------------------
def test_record_derives_ttft_itl_tpot_and_rate() -> None:
    r = rec(0, [0.1, 0.12, 0.15, 0.2], e2el=0.25, tokens=6)
    assert r.ttft == 0.1
    assert r.itl == pytest.approx([0.02, 0.03, 0.05])
    assert r.tpot == pytest.approx((0.25 - 0.1) / 5)  # (e2el - ttft) / (output_tokens - 1)
    assert r.output_tps == pytest.approx(6 / 0.25)
    assert r.chunks == 4 and r.ok
    d = r.to_dict()
    assert d["ttft_ms"] == pytest.approx(100.0)
    assert d["itl_ms"] == pytest.approx([20.0, 30.0, 50.0])
    assert d["tpot_ms"] == pytest.approx(30.0)


def test_tpot_is_undefined_below_two_tokens_and_without_deltas() -> None:
    assert rec(0, [0.1], e2el=0.1, tokens=1).tpot is None
    assert rec(0, [0.5], e2el=0.5, tokens=40).tpot is None  # one chunk: not streamed
    assert rec(0, [], e2el=0.3).tpot is None
    assert rec(0, [], e2el=0.3).ttft is None


# -- percentiles -----------------------------------------------------------------------------
def test_percentile_matches_linear_interpolation() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 90) == pytest.approx(4 + 0.6 * 6)  # numpy: 7.6
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_percentile_against_a_reference_on_random_data() -> None:
    rng = random.Random(7)
    data = sorted(rng.random() for _ in range(101))
    # with 101 points the q-th percentile is exactly the q-th element
    for q in (10, 50, 90, 95, 99):
        assert percentile(data, q) == pytest.approx(data[q])


# -- summaries -------------------------------------------------------------------------------
def test_summarize_counts_and_throughputs() -> None:
    records = [
        rec(0, [0.1, 0.2, 0.3], e2el=0.3, tokens=3),
        rec(1, [0.2, 0.3, 0.4], e2el=0.4, tokens=3),
        rec(2, [], e2el=0.05, error="RateLimitError[18]"),
        rec(3, [], e2el=0.05, error="RateLimitError[18]"),
        rec(4, [], e2el=1.0, error="TimeoutError[first_byte]"),
    ]
    s = summarize("openai/m", dict(LOAD), records, 2.0)
    f = s.figures
    assert (f["completed"], f["failed"]) == (2, 3)
    assert f["request_throughput"] == pytest.approx(1.0)
    assert f["output_throughput"] == pytest.approx(3.0)
    assert f["median_ttft_ms"] == pytest.approx(150.0)
    assert f["mean_e2el_ms"] == pytest.approx(350.0)  # failed requests are not in the latencies
    assert f["median_itl_ms"] == pytest.approx(100.0)
    assert f["median_tpot_ms"] == pytest.approx(100.0)
    assert s.errors == {"RateLimitError[18]": 2, "TimeoutError[first_byte]": 1}
    assert f["request_goodput"] is None
    d = s.to_dict()
    for key in (
        "completed",
        "failed",
        "request_throughput",
        "output_throughput",
        *(
            f"{stat}_{m}_ms"
            for m in ("ttft", "tpot", "itl", "e2el")
            for stat in ("mean", "median", "p90", "p95", "p99")
        ),
    ):
        assert key in d, key
    assert d["errors"]["RateLimitError[18]"] == 2
    json.dumps(d)  # JSON-ready


def test_summary_of_nothing_is_json_ready() -> None:
    s = summarize("openai/m", dict(LOAD), [rec(0, [], e2el=0.1, error="X")], 1.0)
    d = s.to_dict()
    assert d["median_ttft_ms"] is None and d["completed"] == 0
    json.dumps(d, allow_nan=False)


def test_goodput_counts_requests_meeting_every_slo() -> None:
    records = [
        rec(0, [0.1, 0.11, 0.12], e2el=0.12, tokens=3),  # ttft 100, tpot 10: good
        rec(1, [0.6, 0.61, 0.62], e2el=0.62, tokens=3),  # ttft 600: misses ttft
        rec(2, [0.1, 0.3], e2el=0.3, tokens=2),  # tpot 200: misses tpot
        rec(3, [0.2], e2el=0.2, tokens=1),  # tpot undefined: meets it
        rec(4, [], e2el=0.1, error="ServerError"),  # failed: never good
    ]
    slos = parse_goodput(["ttft:500", "tpot:50"])
    s = summarize("openai/m", dict(LOAD), records, 2.0, goodput_slos=slos)
    assert s.figures["request_goodput"] == pytest.approx(2 / 2.0)
    e2e = summarize("m/x", dict(LOAD), records, 1.0, goodput_slos={"e2el": 150})
    assert e2e.figures["request_goodput"] == pytest.approx(1.0)


def test_parse_goodput_validates() -> None:
    assert parse_goodput(["TTFT:500", "tpot:50.5", "e2el:2000"]) == {
        "ttft": 500.0,
        "tpot": 50.5,
        "e2el": 2000.0,
    }
    assert parse_goodput({"ttft": 100}) == {"ttft": 100.0}
    assert parse_goodput(None) == {}
    for bad in (["ttft"], ["latency:5"], ["ttft:abc"], ["ttft:0"], ["tpot:-3"], ["ttft:inf"]):
        with pytest.raises(ConfigurationError):
            parse_goodput(bad)


# -- error keys ------------------------------------------------------------------------------
def test_error_keys_name_type_and_provider_code() -> None:
    assert error_key(RateLimitError("slow", provider="qianfan", code=18)) == "RateLimitError[18]"
    assert (
        error_key(ContextOverflowError("long", code="context_length_exceeded"))
        == "ContextOverflowError[context_length_exceeded]"
    )
    assert error_key(APIError("x")) == "APIError"
    assert error_key(TimeoutError("t", phase="first_byte")) == "TimeoutError[first_byte]"
    partial = Completion(text="ab")
    inner = APIError("boom", code="InternalError")
    assert (
        error_key(StreamInterrupted("cut", partial=partial, error=inner))
        == "StreamInterrupted/APIError[InternalError]"
    )
    assert error_key(StreamInterrupted("cut", partial=partial)) == "StreamInterrupted"
    assert error_key(KeyError("x")) == "KeyError"


# -- workloads -------------------------------------------------------------------------------
def test_synthetic_prompts_have_the_target_length_and_differ() -> None:
    a = synthetic_prompt(0, 50)
    b = synthetic_prompt(1, 50)
    assert a == synthetic_prompt(0, 50)
    assert a != b
    assert a[0]["role"] == "user"
    assert len(a[0]["content"].split()) == 50
    assert synthetic_prompt(0, 50, seed=1) != a


def test_load_prompts_accepts_three_shapes(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '[{"role": "user", "content": "hi"}]\n'
        "\n"
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}\n'
        '"plain text"\n'
        '{"prompt": "你好"}\n',
        encoding="utf-8",
    )
    prompts = load_prompts(path)
    assert prompts == [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        [{"role": "user", "content": "plain text"}],
        [{"role": "user", "content": "你好"}],
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[{]\n", "p.jsonl:1: not valid JSON"),
        ('[{"role": "user"}]\n', "p.jsonl:1: every message"),
        ('\n{"x": 1}\n', "p.jsonl:2: expected"),
        ("\n\n", "holds no prompts"),
    ],
)
def test_load_prompts_names_the_bad_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=match):
        load_prompts(path)


def test_load_prompts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read prompts file"):
        load_prompts(tmp_path / "nope.jsonl")


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"requests": 0},
        {"duration": 0},
        {"request_rate": 0},
        {"request_rate": -1.0},
        {"burstiness": 0},
        {"max_concurrency": 0},
        {"sweep": [4, 0]},
        {"warmup": -1},
        {"max_tokens": 0},
        {"input_len": 0},
        {"timeout": 0},
        {"first_token": -0.1},
        {"prompts": []},
        {"models": ["no-slash"]},
        {"goodput": ["ttft:x"]},
        {"request_rate": math.inf, "duration": 5.0},
        {"emulator": False},
    ],
)
def test_config_rejects_what_cannot_work(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        BenchConfig(**kwargs)  # type: ignore[arg-type]


def test_config_levels() -> None:
    cfg = BenchConfig(models=["openai/m"], sweep=[1, 4], requests=10)
    levels = cfg.levels()
    assert [lv["concurrency"] for lv in levels] == [1, 4]
    assert all(lv["num_requests"] == 10 for lv in levels)
    paced = BenchConfig(models=["openai/m"], request_rate=5, sweep=[2, 8]).levels()
    assert [lv["max_concurrency"] for lv in paced] == [2, 8]
    assert paced[0]["request_rate"] == 5 and paced[0]["num_requests"] == 50
    assert BenchConfig(request_rate=math.inf).levels()[0]["request_rate"] == "inf"
    assert BenchConfig().uses_emulator and not BenchConfig(models=["openai/m"]).uses_emulator
    assert BenchConfig(models=["openai/m"], emulator=True).uses_emulator
    assert BenchConfig(request_rate=3).connection_limit() == 0  # unbounded arrivals
    assert BenchConfig(models=["openai/m"], concurrency=500).connection_limit() >= 500


# -- report ----------------------------------------------------------------------------------
def _result(runs: int = 1, tokens_per_chunk: int = 1) -> BenchResult:
    summaries = []
    for n in range(runs):
        records = [
            rec(
                i,
                [0.05 + 0.01 * k for k in range(5)],
                e2el=0.1,
                tokens=5 * tokens_per_chunk,
                start=0.02 * i,
            )
            for i in range(8)
        ]
        records.append(rec(8, [], e2el=0.01, error="RateLimitError[18]"))
        load = dict(LOAD, concurrency=n + 1)
        summaries.append(summarize("openai/m", load, records, 1.0, goodput_slos={"ttft": 80}))
    return BenchResult(
        runs=summaries, config=BenchConfig().describe(), date="2024-01-01T00:00:00+00:00"
    )


def test_table_shows_every_metric_errors_and_a_comparison() -> None:
    text = _result(runs=2).table()
    for needle in (
        "TTFT",
        "TPOT",
        "ITL",
        "E2EL",
        "p99",
        "RateLimitError[18] × 1",
        "goodput",
        "openai/m @ concurrency 1",
        "openai/m @ concurrency 2",
        "TTFT p50",
        "input tokens",
        "total token throughput",
        "std",
    ):
        assert needle in text, needle
    assert "per chunk" not in text


def test_table_says_itl_is_per_chunk_when_chunks_carry_several_tokens() -> None:
    text = _result(tokens_per_chunk=4).table()
    assert "4.0 tokens on average" in text and "sentence per chunk" in text


def test_table_says_when_replies_were_not_streamed() -> None:
    records = [rec(i, [0.4], e2el=0.4, tokens=30) for i in range(3)]
    run = summarize("gateway/m", dict(LOAD), records, 1.0)
    text = BenchResult(runs=[run], config=BenchConfig().describe()).table()
    assert "not streamed" in text and "per chunk" not in text
    assert run.figures["median_tpot_ms"] is None


def test_outputs_json_jsonl_csv(tmp_path: Path) -> None:
    one = _result()
    one.write_json(str(tmp_path / "one.json"))
    data = json.loads((tmp_path / "one.json").read_text())
    assert isinstance(data, dict)
    assert data["completed"] == 8 and data["failed"] == 1 and data["backend"] == "aiollm"
    assert data["median_ttft_ms"] == pytest.approx(50.0)
    assert data["p99_e2el_ms"] == pytest.approx(100.0)
    two = _result(runs=2)
    two.write_json(str(tmp_path / "two.json"))
    data2 = json.loads((tmp_path / "two.json").read_text())
    assert isinstance(data2, list) and [d["concurrency"] for d in data2] == [1, 2]

    two.write_jsonl(str(tmp_path / "r.jsonl"))
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 18
    first = json.loads(lines[0])
    assert first["concurrency"] == 1 and first["ttft_ms"] == pytest.approx(50.0)
    assert len(first["delta_ms"]) == 5 and len(first["itl_ms"]) == 4

    two.write_csv(str(tmp_path / "r.csv"))
    with (tmp_path / "r.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and tuple(rows[0]) == CSV_COLUMNS
    assert float(rows[0]["mean_itl_ms"]) == pytest.approx(10.0)
    assert rows[-1]["error"] == "RateLimitError[18]" and rows[-1]["ttft_ms"] == ""


def test_output_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="folder does not exist"):
        _result().write_json(str(tmp_path / "nope" / "r.json"))


def test_plot_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigurationError, match=r"aiollm-client\[plot\]"):
        _result().plot(str(tmp_path / "p.png"))


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    _result(runs=2).plot(str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_title_names_date_model_and_load() -> None:
    result = _result(runs=2)
    title = plot_title(result.runs, {"date": result.date})
    assert title == "2024-01-01T00:00:00+00:00 — openai/m — concurrency 1, concurrency 2"


# -- progress line ---------------------------------------------------------------------------
def test_progress_line_renders_counts() -> None:
    state = RunState("openai/m", dict(LOAD, num_requests=10, duration_limit=None))
    state.started = 0.0
    state.records.extend([rec(0, [0.1], e2el=0.1), rec(1, [], e2el=0.1, error="X")])
    state.in_flight = 2
    out = io.StringIO()
    line = ProgressLine(out, live=True)
    text = line.render(state)
    assert "2/10" in text and "failed 1" in text and "in flight 2" in text and "[####" in text
    line.done(state, "(stopped)")
    assert out.getvalue().startswith("\r") and out.getvalue().endswith("(stopped)\n")
    quiet = io.StringIO()
    ProgressLine(quiet).done(state)  # StringIO is not a terminal: plain lines only
    assert "\r" not in quiet.getvalue() and quiet.getvalue().endswith("\n")
