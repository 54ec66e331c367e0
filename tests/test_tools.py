"""Tool-call fragments folded into calls, argument parsing, and ``<think>`` splitting (sans-IO)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiollm
from aiollm.events import ToolCall, ToolCallDelta
from aiollm.tools import ThinkSplitter, ToolCallMerger


def merged(*deltas: ToolCallDelta) -> list[ToolCall]:
    merger = ToolCallMerger()
    for delta in deltas:
        merger.add(delta)
    return merger.calls()


# -- merging ---------------------------------------------------------------------------------
def test_fragments_of_one_call_merge_by_index() -> None:
    calls = merged(
        ToolCallDelta(index=0, id="call_1", name="get_weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city": '),
        ToolCallDelta(index=0, arguments='"杭州"}'),
    )
    assert calls == [ToolCall(id="call_1", name="get_weather", arguments='{"city": "杭州"}')]
    assert calls[0].parsed() == {"city": "杭州"}


def test_parallel_calls_interleaved_by_index() -> None:
    calls = merged(
        ToolCallDelta(index=0, id="a", name="f", arguments='{"x"'),
        ToolCallDelta(index=1, id="b", name="g", arguments='{"y"'),
        ToolCallDelta(index=0, arguments=": 1}"),
        ToolCallDelta(index=1, arguments=": 2}"),
    )
    assert [(c.id, c.name, c.parsed()) for c in calls] == [
        ("a", "f", {"x": 1}),
        ("b", "g", {"y": 2}),
    ]


def test_a_reused_index_is_repaired_by_the_call_id() -> None:
    # Servers that send ``index: 0`` for every call: the new id starts a new call.
    calls = merged(
        ToolCallDelta(index=0, id="a", name="f", arguments='{"x": 1}'),
        ToolCallDelta(index=0, id="b", name="g", arguments='{"y":'),
        ToolCallDelta(index=0, arguments=" 2}"),
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("a", "f", '{"x": 1}'),
        ("b", "g", '{"y": 2}'),
    ]


def test_names_and_ids_repeated_in_every_fragment_are_not_concatenated() -> None:
    # DashScope incremental output repeats the id and the name with each piece.
    calls = merged(
        ToolCallDelta(index=0, id="call_9", name="lookup", arguments='{"q": '),
        ToolCallDelta(index=0, id="call_9", name="lookup", arguments='"a"}'),
        ToolCallDelta(index=1, id="call_10", name="lookup", arguments="{}"),
        ToolCallDelta(index=1, id="call_10", name="lookup", arguments=""),
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_9", "lookup", '{"q": "a"}'),
        ("call_10", "lookup", "{}"),
    ]


def test_fragments_without_an_index() -> None:
    calls = merged(
        ToolCallDelta(id="a", name="f", arguments="{"),
        ToolCallDelta(arguments="}"),
        ToolCallDelta(id="b", name="g", arguments="[]"),
    )
    assert [(c.id, c.name, c.arguments) for c in calls] == [("a", "f", "{}"), ("b", "g", "[]")]


def test_an_id_arriving_after_the_first_fragment_fills_in() -> None:
    calls = merged(ToolCallDelta(index=0, name="f"), ToolCallDelta(index=0, id="x", arguments="{}"))
    assert calls == [ToolCall(id="x", name="f", arguments="{}")]


def test_empty_merger() -> None:
    merger = ToolCallMerger()
    assert not merger and merger.calls() == []


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arguments", ['{"a": ', "not json", "[" * 100_000, "1" * 5_000, '{"a": 1e400}']
)
def test_malformed_arguments_are_a_typed_error_when_parsed(arguments: str) -> None:
    call = ToolCall(id="c", name="f", arguments=arguments)
    with pytest.raises(aiollm.ToolArgumentsError) as info:
        call.parsed()
    assert info.value.call is call and "'f'" in str(info.value)
    assert isinstance(info.value, aiollm.AiollmError)


def test_empty_arguments_parse_as_an_empty_object() -> None:
    assert ToolCall(name="f").parsed() == {}
    assert ToolCall(name="f", arguments="  ").parsed() == {}


# -- <think> ---------------------------------------------------------------------------------
def split_all(chunks: list[str], **kw: bool) -> tuple[str, str]:
    splitter = ThinkSplitter(**kw)
    pieces = [p for chunk in chunks for p in splitter.feed(chunk)] + splitter.end()
    reasoning = "".join(text for inside, text in pieces if inside)
    content = "".join(text for inside, text in pieces if not inside)
    assert all(text for _, text in pieces)  # no empty pieces
    return reasoning, content


def test_think_tags_split_reasoning_from_text() -> None:
    assert split_all(["<think>plan it</think>The answer"]) == ("plan it", "The answer")


def test_think_tags_split_across_chunks() -> None:
    chunks = ["<thi", "nk>pl", "an</th", "ink", ">Ans", "wer"]
    assert split_all(chunks) == ("plan", "Answer")


def test_text_that_only_looks_like_a_tag_is_kept() -> None:
    assert split_all(["a <thin", "g> b"]) == ("", "a <thing> b")
    assert split_all(["x <th"]) == ("", "x <th")  # held back, then given back at the end


def test_reasoning_without_an_opening_tag() -> None:
    assert split_all(["step 1", "</think>done"], inside=True) == ("step 1", "done")


@given(
    reasoning=st.text(alphabet="ab<>/thinkk 思", max_size=20).filter(
        lambda s: "<think>" not in s and "</think>" not in s
    ),
    answer=st.text(alphabet="ab<>/thinkk 答", max_size=20).filter(lambda s: "<think>" not in s),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=8),
)
def test_any_split_gives_the_same_pieces(reasoning: str, answer: str, cuts: list[int]) -> None:
    body = f"<think>{reasoning}</think>{answer}"
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert split_all(chunks) == split_all([body]) == (reasoning, answer)


# -- the next turn ---------------------------------------------------------------------------
def test_a_completion_becomes_the_assistant_message_of_the_next_turn() -> None:
    completion = aiollm.Completion(
        text="",
        reasoning="need the weather",
        tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"city":"北京"}')],
    )
    assert completion.to_message() == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"北京"}'},
            }
        ],
    }
    assert completion.to_message(reasoning=True)["reasoning_content"] == "need the weather"
    assert aiollm.Completion(text="hi").to_message() == {"role": "assistant", "content": "hi"}
