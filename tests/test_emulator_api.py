"""The emulator's public surface: construction, typed state, the log's figures, the CLI."""

from __future__ import annotations

import argparse
import json

import msgspec
import pytest

from aiollm import Client
from aiollm.cli import main
from aiollm.testing import Cadence, Emulator, Quota, RequestRecord
from aiollm.testing._cli import parse_quota

MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.anyio
async def test_client_is_typed_and_the_log_gives_server_side_timings() -> None:
    async with Emulator(cadence=Cadence(first_token=0.03, per_token=0.01), reply_tokens=4) as emu:
        client = emu.client()
        assert isinstance(client, Client)
        async with client:
            completion = await client.stream("openai/m", MSGS).final()
        record = emu.stats.record(completion.request_id or "")
        assert record is not None and record.text == completion.text
        assert record.ttft is not None and record.ttft >= 0.03
        gaps = record.inter_frame_times
        assert len(gaps) == 3 and all(gap >= 0 for gap in gaps)
        # the last frame is due after the first token and three more (a lower bound only)
        assert record.content_times[-1] - record.started >= 0.03 + 3 * 0.01 - 0.001
        # the log is plain data: it travels as JSON
        (decoded,) = msgspec.json.decode(
            msgspec.json.encode(list(emu.stats.log)), type=list[RequestRecord]
        )
        assert decoded == record


def test_construction_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="unknown providers"):
        Emulator(providers=["openai", "nope"])
    emu = Emulator(providers=["openai"])
    assert list(emu.services) == ["dashscope", "qianfan", "gateway", "openai"]
    assert emu.state.dashscope.gzip is False and emu.state.gateway.token_shape == "data.accessToken"
    paths = {r.resource.canonical for r in emu.app.router.routes() if r.resource is not None}
    assert paths == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}


def test_quota_option() -> None:
    assert parse_quota("openai=20") == ("openai", Quota(rate=20.0))
    assert parse_quota("qianfan=-,concurrency=3") == ("qianfan", Quota(concurrency=3))
    assert parse_quota("dashscope=2.5,burst=5,retry_after=no") == (
        "dashscope",
        Quota(rate=2.5, burst=5.0, retry_after=False),
    )
    for bad in ("openai", "nope=1", "openai=0", "openai=x", "openai=1,concurrency=0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_quota(bad)


def test_emulator_command_runs_for_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["emulator", "--port", "0", "--duration", "0.2", "--quota", "openai=5"]
    args += ["--fault-rate", "0.1", "--seed", "2", "--fault-kinds", "reset,http"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "aiollm emulator listening on http://127.0.0.1:" in out
    summary = json.loads(out[out.index("{") :])
    assert summary["requests"] == {} and summary["throttled"] == {}
    assert main(["emulator", "--fault-rate", "2", "--duration", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["emulator", "--fault-kinds", "explode"])


@pytest.mark.anyio
@pytest.mark.aiollm_emulator(reply="marked reply", fault_rate=0.0)
async def test_fixture_takes_its_arguments_from_the_marker(aiollm_emulator: Emulator) -> None:
    assert aiollm_emulator.reply == "marked reply"
    async with aiollm_emulator.client() as client:
        assert (await client.chat("openai/m", MSGS)).text == "marked reply"
