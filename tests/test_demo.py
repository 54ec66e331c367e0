"""``aiollm demo``: the README's first command, against every provider of the emulator."""

from __future__ import annotations

import pytest

from aiollm.cli import DEMO_MODELS, main
from aiollm.providers import PROVIDERS


def test_demo_streams_every_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--first-token", "0", "--per-token", "0"]) == 0
    out = capsys.readouterr().out
    for model in DEMO_MODELS:
        assert f"── {model} ──" in out
        assert model in out.split("TTFT ms")[1]  # a row in the summary
    assert "failed" not in out
    assert {m.split("/")[0] for m in DEMO_MODELS} == set(PROVIDERS)
