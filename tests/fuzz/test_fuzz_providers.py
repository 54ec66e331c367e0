"""Fuzzing the providers' decoders on valid streams: the exact text, whatever the split.

With ``provider_targets`` (every decoder and token parser under ``test_fuzz.py``'s typed
errors, split invariance and linear work), this adds: a valid stream of random text gives
exactly that text, in order, with ``Finish`` last, for any split and any frame shape; and no
error of a token parser shows the credentials it was built with.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import QUICK, TRIED, spend
from fuzz_targets import corpus
from hypothesis import assume, given
from hypothesis import strategies as st
from provider_targets import (
    SSE,
    TOKEN_SECRETS,
    Quiet,
    chat,
    gateway_token,
    qianfan_token,
)
from test_fuzz import bodies, run, split_at

from aiollm.events import Finish, TextDelta
from aiollm.providers.dashscope import DashScopeDecoder
from aiollm.providers.gateway import GatewayDecoder
from aiollm.providers.openai import OpenAIDecoder
from aiollm.providers.qianfan import QianfanDecoder

texts = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8)
points = st.lists(st.integers(0, 10**6), max_size=12)
shapes = st.fixed_dictionaries(
    {"end": st.sampled_from(["\n", "\r\n", "\r"]), "blank": st.booleans(), "pretty": st.booleans()}
)


def sse(docs: list[dict[str, Any]], shape: dict[str, Any], *, head: str = "") -> bytes:
    end, blank, pretty = shape["end"], shape["blank"] or shape["pretty"], shape["pretty"]
    lines: list[str] = []
    for doc in docs:
        text = json.dumps(doc, ensure_ascii=False, indent=2 if pretty else None)
        lines += head.split("\n") if head else []
        lines += ["data: " + line for line in text.split("\n")]
        if blank:
            lines.append("")
    return "".join(line + end for line in lines).encode()


def openai_body(parts: list[str], shape: dict[str, Any]) -> bytes:
    docs: list[dict[str, Any]] = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in parts
    ]
    docs.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return sse(docs, shape)


def qianfan_body(parts: list[str], shape: dict[str, Any]) -> bytes:
    docs = [
        {"id": "as-1", "sentence_id": i, "is_end": i == len(parts) - 1, "result": p}
        for i, p in enumerate(parts)
    ]
    return sse(docs, shape)


def dashscope_body(parts: list[str], shape: dict[str, Any], cumulative: bool) -> bytes:
    docs, so_far = [], ""
    for p in parts:
        so_far += p
        docs.append({"output": {"text": so_far if cumulative else p, "finish_reason": "null"}})
    docs.append({"output": {"text": so_far if cumulative else "", "finish_reason": "stop"}})
    return sse(docs, {**shape, "blank": True}, head="event:result\n:HTTP_STATUS/200")


CASES = {
    "openai": (lambda: Quiet(OpenAIDecoder(chat(), 200, SSE)), openai_body),
    "qianfan": (lambda: Quiet(QianfanDecoder(chat(), 200, SSE)), qianfan_body),
    "dashscope incremental": (
        lambda: Quiet(DashScopeDecoder(chat(), 200, SSE)),
        lambda parts, shape: dashscope_body(parts, shape, False),
    ),
    "dashscope cumulative": (
        lambda: Quiet(DashScopeDecoder(chat(incremental_output=False), 200, SSE)),
        lambda parts, shape: dashscope_body(parts, shape, True),
    ),
}


class _Target:
    """The slice of ``fuzz_targets.Target`` that ``test_fuzz.run`` uses."""

    feed, end = "feed", "end"
    seeds: tuple[bytes, ...] = ()

    def __init__(self, new: Any) -> None:
        self.new = new

    @staticmethod
    def normal(event: Any) -> Any:
        return event


@pytest.mark.fuzz_budget
@pytest.mark.parametrize("case", list(CASES))
def test_valid_streams_give_the_exact_text(case: str) -> None:
    new, build = CASES[case]
    target = _Target(new)

    @QUICK
    @given(parts=texts, shape=shapes, points=points)
    def search(parts: list[str], shape: dict[str, Any], points: list[int]) -> None:
        if case == "dashscope incremental":
            # The documented limit of telling an obliging server from one that ignored the
            # parameter: frames that each repeat or extend the first read as cumulative.
            assume(len(parts) < 2 or not parts[1].startswith(parts[0]))
        TRIED[f"{case} valid"] += 1
        body = build(parts, shape)
        for chunks in ([body], split_at(body, points)):
            events, error = run(target, chunks)  # type: ignore[arg-type]
            assert error is None, error
            text = "".join(e.text for e in events if type(e) is TextDelta)
            assert text == "".join(parts)
            assert type(events[-1]) is Finish

    spend(search)


def test_a_whole_gateway_answer_gives_its_text() -> None:
    body = json.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"content": '你好 \\ "'}, "finish_reason": "stop"}],
        },
        ensure_ascii=False,
    ).encode()
    target = _Target(lambda: Quiet(GatewayDecoder(chat(False), 200, {})))
    for cut in range(len(body) + 1):
        events, error = run(target, [body[:cut], body[cut:]])  # type: ignore[arg-type]
        assert error is None
        assert "".join(e.text for e in events if type(e) is TextDelta) == '你好 \\ "'


@pytest.mark.fuzz_budget
@pytest.mark.parametrize("status", [200, 401, 500])
@pytest.mark.parametrize("parser", ["qianfan", "gateway"])
def test_token_parsers_show_no_credentials(parser: str, status: int) -> None:
    new = qianfan_token(status) if parser == "qianfan" else gateway_token(status)
    target = _Target(new)
    own = TOKEN_SECRETS[:2] if parser == "qianfan" else TOKEN_SECRETS[2:]  # what it was given
    echoes = st.sampled_from(own).map(
        lambda s: json.dumps({"error": "bad", "error_description": s, "msg": s, "code": 1})
    )

    @QUICK
    @given(body=bodies(target) | echoes.map(str.encode))  # type: ignore[arg-type]
    def search(body: bytes) -> None:
        TRIED[f"{parser} token secrets"] += 1
        _, error = run(target, [body])  # type: ignore[arg-type]
        if error is not None:
            assert not [s for s in own if s in error[1]], error

    spend(search)


def test_the_corpus_has_every_provider() -> None:
    for provider in ("openai", "qianfan", "dashscope", "gateway"):
        assert corpus(provider)


@pytest.mark.parametrize("status", [200, 401, 500])
@pytest.mark.parametrize("parser", ["qianfan", "gateway"])
def test_token_answers_nested_too_deep_are_typed_errors(parser: str, status: int) -> None:
    new = qianfan_token(status) if parser == "qianfan" else gateway_token(status)
    for body in (b'{"a":' * 5000 + b"[]" + b"}" * 5000, b"[" * 5000 + b"]" * 5000):
        _, error = run(_Target(new), [body])  # type: ignore[arg-type]
        assert error is not None  # and run() let no other exception through
