"""Fuzzing the sans-IO decoders (``fuzz_targets.TARGETS``): typed errors, split invariance,
linear work, exact results of valid bodies."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import LONG_SECONDS, QUICK, TRIED, spend
from fuzz_targets import TARGETS, Target, corpus
from hypothesis import given
from hypothesis import strategies as st

from aiollm.errors import AiollmError

Outcome = tuple[list[Any], tuple[type, str] | None]

INTERESTING = [
    b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r", b"\x00", b"\xff", b"\xc3", b"\xe4\xbd", b"\xef\xbb\xbf",
    b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b" ", b"data:", b"data: ", b"id:", b"event:",
    b"event: error\n", b"id: 7\x00\n", b"retry: 99999999999999999999999\n", b": keep-alive\n\n",
    b'{"error_code":110,"error_msg":"Access token invalid"}\n', b"data: [DONE]\n\n",
    b"1e999999", b"-0.0e-400", b"9" * 400, b"[" * 3000, b"]" * 3000, b'{"a":' * 1000,
    b'"\\u00', b'"\\ud800"', b"true", b"null", b"{}", b'"x"', b'{"usage":{"total_tokens":"x"}}',
    b'{"output":{}}', b'{"choices":5}', b'{"result":[1]}', b"<html>", b"\t",
]  # fmt: skip
payloads = st.sampled_from(INTERESTING) | st.binary(max_size=8)


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed body with a few random edits: inserts, deletions, replacements, repeats, cuts."""
    body = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(body)))
        j = draw(st.integers(i, min(len(body), i + 64)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "repeat", "cut"]))
        if kind == "insert":
            body[i:i] = draw(payloads)
        elif kind == "delete":
            del body[i:j]
        elif kind == "replace":
            body[i:j] = draw(payloads)
        elif kind == "repeat":
            body[i:i] = body[i:j] * draw(st.integers(1, 50))
        else:
            del body[i:]
    return bytes(body)


def bodies(target: Target) -> st.SearchStrategy[bytes]:
    seeds = tuple(target.seeds) or corpus()
    return st.one_of(
        mutated(seeds),
        mutated(corpus()),
        st.lists(payloads, max_size=30).map(b"".join),
        st.binary(max_size=300),
    )


def split_at(body: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(body) + 1) for p in points})
    return [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]


def run(target: Target, chunks: list[bytes], normal: Callable[[Any], Any] | None = None) -> Outcome:
    """Results and error (class and text) of feeding ``chunks``, then the end of the body.

    Only aiollm's own errors are caught: any other exception fails the test.
    """
    decoder = target.new()
    feed, end = getattr(decoder, target.feed), getattr(decoder, target.end)
    normal = normal or target.normal
    out: list[Any] = []
    try:
        for chunk in chunks:
            out += map(normal, feed(chunk))
        out += map(normal, end())
    except AiollmError as exc:
        return out, (type(exc), str(exc))
    return out, None


ids = [t.name for t in TARGETS]
points = st.lists(st.integers(0, 10**6), max_size=12)


@pytest.mark.fuzz_budget
@pytest.mark.parametrize("target", TARGETS, ids=ids)
def test_typed_errors_and_split_invariance(target: Target) -> None:
    @QUICK
    @given(body=bodies(target), points=points, bytewise=st.booleans())
    def search(body: bytes, points: list[int], bytewise: bool) -> None:
        TRIED[target.name] += 1
        whole = run(target, [body])
        assert run(target, split_at(body, points)) == whole
        if bytewise and len(body) <= 400:
            assert run(target, [body[i : i + 1] for i in range(len(body))]) == whole

    spend(search)


@pytest.mark.fuzz_budget
@pytest.mark.parametrize(
    "target",
    [t for t in TARGETS if t.valid is not None],
    ids=[t.name for t in TARGETS if t.valid is not None],
)
def test_valid_bodies_give_exact_results(target: Target) -> None:
    assert target.valid is not None

    @QUICK
    @given(valid=target.valid, points=points)
    def search(valid: tuple[bytes, list[Any]], points: list[int]) -> None:
        TRIED[target.name] += 1
        body, expected = valid
        exact = target.exact or target.normal
        assert run(target, [body], exact) == (expected, None)
        assert run(target, split_at(body, points), exact) == (expected, None)

    spend(search)


# Bodies that cost some decoders more than linear time, by size (a number of repeats).
HOSTILE: dict[str, Callable[[int], bytes]] = {
    "comment lines": lambda n: b":\n" * n,
    "data lines, no blank line": lambda n: b"data: x\n" * n,
    "open JSON over data lines": lambda n: b"data: [\n" + b"data: [],\n" * n,
    "JSON frames, no blank line": lambda n: b"data: {}\n" * n,
    "id lines": lambda n: b"id: 1\n" * n,
    "CR line ends": lambda n: b"data: x\r\r" * n,
    "one long line": lambda n: b"data: " + b"x" * (8 * n),
    "deep nesting": lambda n: b"[" * n + b"]" * n,
    "long string": lambda n: b'["' + b'ab\\"' * n + b'"]',
    "many documents": lambda n: b"{}\n" * n,
    "bare JSON lines": lambda n: b'{"error_code":1}\n' * (n // 4),
}


def cpu_seconds(target: Target, body: bytes) -> float:
    """The least CPU time of three runs over ``body`` in 4 KiB chunks."""
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        run(target, chunks, normal=lambda r: None)
        best = min(best, time.process_time() - t0)
    return best


@pytest.mark.parametrize("target", TARGETS, ids=ids)
def test_linear_work(target: Target) -> None:
    """10x the input costs about 10x the time (a quadratic cost would be 100x)."""
    base = 20_000 if LONG_SECONDS else 2_000
    for name, make in HOSTILE.items():
        small, large = cpu_seconds(target, make(base)), cpu_seconds(target, make(10 * base))
        # Generous: scheduling noise on a busy machine, and a floor for very cheap runs.
        assert large <= 30 * max(small, 0.002), (name, small, large)
