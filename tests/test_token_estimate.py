"""The tokens a call is expected to use (:mod:`aiollm._token_estimate`)."""

from __future__ import annotations

from typing import Any

from quota_server import MSGS

from aiollm._token_estimate import estimate_tokens
from aiollm.providers import Call


def test_estimate_counts_max_tokens_and_the_prompt() -> None:
    def call(**kw: Any) -> Call:
        return Call(op="chat", model="m", stream=True, **kw)

    assert estimate_tokens(call(messages=MSGS)) == 512 + 2 + 4
    assert estimate_tokens(call(messages=MSGS, params={"max_tokens": 7})) == 7 + 6
    assert estimate_tokens(call(prompt="你好世界", params={"max_output_tokens": 1})) == 1 + 4 + 4
    assert estimate_tokens(call(input=["ab", "cd"]), default_max_tokens=0) == 2 * (1 + 4)
