"""Workloads: ShareGPT, multi-turn sessions, trace replay, length spreads, shared prefix,
exact token lengths with a local tokenizer, pinned output, reasoning timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from aiollm import Client, ConfigurationError, Finish, ReasoningDelta, TextDelta, Usage
from aiollm.bench import BenchConfig, run
from aiollm.bench._workload import (
    LocalTokenizer,
    Workload,
    load_sharegpt,
    load_trace,
    synthetic_prompt,
)
from aiollm.cli import main
from aiollm.testing import Cadence, Emulator

pytestmark = pytest.mark.anyio

SHAREGPT = [
    {
        "id": "a",
        "conversations": [
            {"from": "system", "value": "be brief"},
            {"from": "human", "value": "first question"},
            {"from": "gpt", "value": "first answer"},
            {"from": "human", "value": "second question"},
            {"from": "gpt", "value": "second answer"},
        ],
    },
    {"id": "b", "conversations": [{"from": "gpt", "value": "no human here"}]},
    {"id": "c", "conversations": [{"from": "human", "value": "lonely question"}]},
]


def _sharegpt(tmp_path: Path) -> Path:
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(SHAREGPT))
    return path


def _chat_bodies(emu: Emulator) -> list[dict[str, Any]]:
    return [b for b in emu.stats.bodies if isinstance(b, dict) and "messages" in b]


def test_sharegpt_conversations_become_messages(tmp_path: Path) -> None:
    conversations = load_sharegpt(_sharegpt(tmp_path))
    assert len(conversations) == 2  # the one without a human turn is skipped
    assert [m["role"] for m in conversations[0]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    prompt = Workload(conversations=conversations).prompt(0)
    assert prompt.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{}", "list of conversations"),
        ('[{"conversations": [{"from": "robot", "value": "x"}]}]', "unknown speaker"),
        ('[{"turns": []}]', "conversations"),
        ("not json", "not valid JSON"),
    ],
)
def test_sharegpt_errors_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=match):
        load_sharegpt(path)


async def test_sessions_send_turns_in_order_with_the_history(
    emu: Emulator, client: Client, tmp_path: Path
) -> None:
    emu.cadence = Cadence(0.0, 0.0)
    cfg = BenchConfig(
        models=["openai/m"],
        conversations=load_sharegpt(_sharegpt(tmp_path))[:1],
        turns=2,
        think_time=0.05,
        concurrency=1,
        requests=4,
        warmup=0,
        max_tokens=3,
    )
    result = await run(cfg, client=client)
    (s,) = result.runs
    assert s.completed == 4
    records = sorted(s.records, key=lambda r: r.index)
    assert [(r.session, r.turn) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    bodies = _chat_bodies(emu)
    first, second = bodies[0]["messages"], bodies[1]["messages"]
    assert first == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
    ]
    assert second[:2] == first and second[2]["role"] == "assistant" and second[2]["content"]
    assert second[3] == {"role": "user", "content": "second question"}
    assert bodies[2]["messages"] == first  # the next session starts afresh
    # the think time separates a turn's end from the next turn's start (a lower bound)
    end_first = records[0].start + (records[0].e2el or 0.0)
    assert records[1].start >= end_first + 0.05


async def test_trace_replay_honours_timestamps_and_lengths(
    emu: Emulator, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "trace.jsonl"
    rows = [
        {"timestamp": 10.0, "input_length": 20, "output_length": 3},
        {"timestamp": 10.2, "input_length": 40, "output_length": 5},
        {"timestamp_ms": 10600, "input_length": 8},
    ]
    path.write_text("\n".join(json.dumps(r) for r in reversed(rows)) + "\n")
    trace = load_trace(path)
    assert [round(e.at, 3) for e in trace] == [0.0, 0.2, 0.6]
    cfg = BenchConfig(models=["openai/m"], trace=trace, trace_speed=2.0, warmup=0, max_tokens=7)
    result = await run(cfg, client=client)
    (s,) = result.runs
    assert s.completed == 3 and s.load["trace_speed"] == 2.0
    records = sorted(s.records, key=lambda r: r.index)
    for rec, entry in zip(records, trace, strict=True):
        assert rec.start >= entry.at / 2.0 - 0.001  # never early; late only by scheduling
    bodies = _chat_bodies(emu)
    assert [b["max_tokens"] for b in bodies] == [3, 5, 7]
    words = [len(b["messages"][-1]["content"].split()) for b in bodies]
    assert words == [20, 40, 8]
    assert "trace replay x2" in result.table()


def test_trace_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 1}\n{"input_length": 3}\n')
    with pytest.raises(ConfigurationError, match=r"t\.jsonl:2: needs a numeric timestamp"):
        load_trace(path)


async def test_spread_lengths_shared_prefix_and_pinned_output(
    emu: Emulator, client: Client
) -> None:
    emu.cadence = Cadence(0.0, 0.0)
    cfg = BenchConfig(
        models=["openai/m"],
        input_len=40,
        input_len_range=0.5,
        output_len=10,
        output_len_range=0.5,
        pin_output=True,
        shared_prefix_len=50,
        concurrency=2,
        requests=12,
        warmup=0,
    )
    result = await run(cfg, client=client)
    assert result.runs[0].completed == 12
    bodies = _chat_bodies(emu)
    systems = {b["messages"][0]["content"] for b in bodies}
    assert len(systems) == 1 and len(next(iter(systems)).split()) == 50
    lengths = [len(b["messages"][1]["content"].split()) for b in bodies]
    assert all(20 <= n <= 60 for n in lengths) and len(set(lengths)) > 3
    outs = [b["max_tokens"] for b in bodies]
    assert all(5 <= n <= 15 for n in outs) and len(set(outs)) > 2
    assert all(b["ignore_eos"] is True and b["min_tokens"] == b["max_tokens"] for b in bodies)
    assert result.runs[0].figures["mean_prompt_chars"] > 0


def _word_tokenizer(tmp_path: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    from aiollm.bench._workload import _VOCAB

    vocab = {"[UNK]": 0}
    extra = ["Request", "write", "about", "You", "are", "a", "careful", "Context", ":", "."]
    for word in [*_VOCAB, *extra, *"0123456789"]:
        vocab.setdefault(word, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_a_local_tokenizer_makes_lengths_exact(tmp_path: Path) -> None:
    tokenizer = LocalTokenizer(_word_tokenizer(tmp_path))
    for n in (5, 17, 64):
        (message,) = synthetic_prompt(3, n, tokenizer=tokenizer)
        assert tokenizer.count(message["content"]) == n
    work = Workload(input_len=30, shared_prefix_len=12, tokenizer=tokenizer)
    prompt = work.prompt(0)
    assert tokenizer.count(prompt.messages[0]["content"]) == 12
    assert tokenizer.count(prompt.messages[1]["content"]) == 30
    chars, tokens = work.count(prompt.messages)
    assert tokens is not None and tokens >= 42 and chars > tokens


def test_a_tokenizer_path_that_is_not_there_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        BenchConfig(tokenizer=str(tmp_path / "missing.json"))
    assert main(["bench", "--tokenizer", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


class _ReasoningStream:
    """Streams reasoning, then text, as a reasoning model does (no codec emits it yet)."""

    attempts = 1
    read_at = None

    def __init__(self) -> None:
        self.events: list[Any] = [
            ReasoningDelta("let me"),
            ReasoningDelta(" think"),
            TextDelta("four"),
            Usage(input_tokens=3, output_tokens=3),
            Finish("stop"),
        ]

    async def __aenter__(self) -> _ReasoningStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _ReasoningStream:
        return self

    async def __anext__(self) -> Any:
        if not self.events:
            raise StopAsyncIteration
        await anyio.sleep(0.005)
        return self.events.pop(0)


class _ReasoningClient:
    def stream(self, model: str, messages: Any, **kwargs: Any) -> _ReasoningStream:
        return _ReasoningStream()


async def test_reasoning_and_answer_first_tokens_are_reported_apart() -> None:
    fake = cast(Client, _ReasoningClient())
    result = await run(models=["openai/m"], client=fake, concurrency=2, requests=4, warmup=0)
    (s,) = result.runs
    assert s.completed == 4
    for r in s.records:
        assert r.reasoning_ttft is not None and r.answer_ttft is not None
        assert r.ttft == r.reasoning_ttft < r.answer_ttft
        assert r.chunks == 3 and r.output_tokens == 3
    f = s.figures
    assert f["median_reasoning_ttft_ms"] < f["median_answer_ttft_ms"]
    assert f["median_ttft_ms"] == f["median_reasoning_ttft_ms"]
    assert "first reasoning token" in result.table()


def test_cli_runs_sharegpt_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["bench", "--emulator", "--model", "openai/m", "--first-token", "0"]
    argv += ["--per-token", "0", "--sharegpt", str(_sharegpt(tmp_path)), "--turns", "2"]
    argv += ["--concurrency", "2", "--requests", "4", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["completed"] == 4
    rows = [json.loads(line) for line in (tmp_path / "r.requests.jsonl").read_text().splitlines()]
    assert sorted((r["session"], r["turn"]) for r in rows)[:2] == [(0, 0), (0, 1)]
