"""What the fuzz tests drive: every sans-IO decoder of the project, as a :class:`Target`.

A target makes a fresh decoder that takes body chunks (``feed``) and the end of the body
(``end``), each returning a list of results. The fuzz tests (``test_fuzz.py``) check, on real
frames mutated and on random bytes, split anywhere: that only aiollm's own errors come out,
that any split gives the same results and the same error as the whole body, that the work is
linear in the input, and (for targets with ``valid`` bodies) the exact results.

Adding a decoder is one line at the end of this file, e.g.::

    TARGETS.append(Target("qianfan", lambda: QianfanDecoder(...), seeds=corpus("qianfan")))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from aiollm.framing import BodySniffer, JSONFramer, SSEDecoder, as_event

CORPUS = Path(__file__).parent / "corpus"


def corpus(prefix: str = "") -> tuple[bytes, ...]:
    """The real frames and bodies in ``corpus/`` whose file name starts with ``prefix``."""
    return tuple(p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.name.startswith(prefix))


@dataclass(frozen=True)
class Target:
    """A decoder under fuzzing.

    ``new`` makes one; ``feed`` and ``end`` name its methods (``feed(bytes) -> list``,
    ``end() -> list``); ``normal`` turns a result into a value to compare; ``seeds`` are real
    bodies to mutate (all of ``corpus/`` when empty); ``valid`` draws a valid body with the
    exact results expected, as ``exact`` gives them (``normal`` unless set).
    """

    name: str
    new: Callable[[], Any]
    feed: str = "feed"
    end: str = "end"
    normal: Callable[[Any], Any] = lambda result: result
    seeds: Sequence[bytes] = ()
    valid: st.SearchStrategy[tuple[bytes, list[Any]]] | None = field(default=None, compare=False)
    exact: Callable[[Any], Any] | None = None


# -- valid bodies -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
json_docs = st.lists(json_values, max_size=3) | st.dictionaries(
    st.text(max_size=5), json_values, max_size=3
)


@st.composite
def sse_bodies(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """JSON frames as servers send them: blank lines or none, pretty or not, CR/CRLF/LF."""
    docs = draw(st.lists(json_docs, min_size=1, max_size=4))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    blank = draw(st.booleans())
    indent = draw(st.sampled_from([None, 1, 2]))
    prefix = "data: " if indent else draw(st.sampled_from(["data: ", "data:"]))
    lines: list[str] = []
    expected: list[bytes] = []
    for doc in docs:
        text = json.dumps(doc, indent=indent, ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 5)) == 0:
            lines.append(": keep-alive")
        lines += [prefix + line for line in text.split("\n")]
        if blank:
            lines.append("")
        expected.append(text.encode())
        if draw(st.integers(0, 6)) == 0:
            error = '{"error_code":110,"error_msg":"Access token invalid"}'
            lines.append(error)  # a bare JSON line, its own event
            expected.append(error.encode())
    body = "".join(line + end for line in lines)
    if draw(st.booleans()):
        body = "\ufeff" + body
    if blank and draw(st.booleans()):
        body += f"data: [DONE]{end}{end}"
        expected.append(b"[DONE]")
    return body.encode(), expected


@st.composite
def json_bodies(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """JSON documents: one, pretty or not, NDJSON, or back to back."""
    docs = draw(st.lists(json_docs, min_size=1, max_size=4))
    texts = [json.dumps(d, indent=draw(st.sampled_from([None, 2]))).encode() for d in docs]
    seps = draw(st.lists(st.sampled_from([b"", b"\n", b" ", b"\r\n", b"\n\n"]), min_size=1))
    body = b"".join(t + seps[i % len(seps)] for i, t in enumerate(texts))
    return body, texts


@st.composite
def sniff_bodies(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """Bodies whose first bytes decide their kind."""
    lead = draw(st.sampled_from([b"", b"\n", b"\r\n\r\n", b"  \t", b"\xef\xbb\xbf"]))
    head, kind = draw(
        st.sampled_from(
            [
                (b"data: {}\n\n", "sse"),
                (b": ping\n\n", "sse"),
                (b"retry: 10\n", "sse"),
                (b'{"error_code":18}', "json"),
                (b"[1]", "json"),
                (b"<html>502</html>", "other"),
                (b"dat", "other"),
                (b"", "other"),
            ]
        )
    )
    return lead + head, [kind]


# -- the targets --------------------------------------------------------------------------


def _event(item: Any) -> tuple[str, bytes | None, str, int | None, tuple[str, ...]]:
    e = as_event(item)
    return (e.event, e.raw, e.id, e.retry, e.comments)


def _kind(result: Any) -> Any:
    return result.value


class _Sniffing:
    """:class:`BodySniffer` with list results, so it runs like the other targets."""

    def __init__(self) -> None:
        self.sniffer = BodySniffer(None)

    def feed(self, data: bytes) -> list[Any]:
        kind = self.sniffer.feed(data)
        return [] if kind is None else [kind]

    def end(self) -> list[Any]:
        kind = self.sniffer.end()
        return [] if kind is None else [kind]


TARGETS: list[Target] = [
    Target(
        "sse",
        SSEDecoder,
        feed="feed_raw",
        end="close_raw",
        normal=_event,
        valid=sse_bodies(),
        exact=lambda item: as_event(item).raw,  # the data bytes of each event
    ),
    Target("json", JSONFramer, end="close", valid=json_bodies()),
    Target("sniff", _Sniffing, normal=_kind, valid=sniff_bodies()),
]

# Every provider's response decoder and token parser (provider_targets.py imports Target above).
from provider_targets import PROVIDER_TARGETS  # noqa: E402

TARGETS += PROVIDER_TARGETS
