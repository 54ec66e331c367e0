"""What the emulator answers: scripted replies (text, reasoning, tool calls) cut into paced pieces."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

__all__ = ["Piece", "Reply", "ToolCall", "default_tokens", "prompt_text", "split_tokens"]

_WORDS = (
    "the quick brown fox jumps over a lazy dog while streams of tokens flow through "
    "async pipelines and every frame arrives in order 你好 世界 模型 回答 问题"
).split()

_TOKEN_RE = re.compile(r"\s*\S+|\s+")

ARGUMENT_PIECE = 8
"""Characters of a tool call's arguments sent per frame."""


def split_tokens(text: str) -> list[str]:
    """Split text into tokens whose concatenation is exactly ``text`` (CJK per character)."""
    tokens: list[str] = []
    for piece in _TOKEN_RE.findall(text):
        if any("\u3000" <= ch <= "\u9fff" for ch in piece) and len(piece.strip()) > 1:
            tokens.extend(piece)
        else:
            tokens.append(piece)
    return tokens


def prompt_text(request: dict[str, Any]) -> str:
    """The text a reply is derived from: the last message's content, else the prompt, of a
    request object holding ``messages`` or ``prompt`` (OpenAI's body, DashScope's ``input``)."""
    messages = request.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(request.get("prompt", ""))


def default_tokens(prompt: str, count: int) -> list[str]:
    """A deterministic reply of ``count`` tokens derived from ``prompt``."""
    seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
    n = len(_WORDS)
    tokens = []
    for i in range(count):
        word = _WORDS[(seed // (i + 1) + i * 7919) % n]
        tokens.append(word if i == 0 else " " + word)
    return tokens


@dataclass
class ToolCall:
    """One scripted tool call: the function ``name`` and its JSON ``arguments`` string.

    ``id`` defaults to ``call_<n>_<index>`` (unique per request).
    """

    name: str
    arguments: str = "{}"
    id: str | None = None


@dataclass
class Reply:
    """A scripted answer: reasoning first, then text, then tool calls (each part optional).

    ``refusal`` is OpenAI's refusal text (sent after the text as ``delta.refusal``; the other
    providers have no such field and leave it out).

    Every provider streams it in its own frame shapes (see ``docs/wire/``). The OpenAI-compatible
    dialect can be varied: ``reasoning_field`` (``"reasoning_content"`` as DeepSeek and vLLM's
    older parsers send, or ``"reasoning"``), ``tool_index`` (``"each"``: index 0, 1, …;
    ``"zero"``: every call says index 0, as some servers do), ``legacy_function_call`` (the
    deprecated ``delta.function_call``, one call only) and ``cached_tokens`` (reported in
    ``usage.prompt_tokens_details``). ``finish_reason`` defaults to ``tool_calls`` when there
    are tool calls (``function_call`` for Qianfan and the legacy shape), else ``stop``.
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str = ""
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    tool_index: Literal["each", "zero"] = "each"
    legacy_function_call: bool = False
    cached_tokens: int | None = None


PieceKind = Literal["reasoning", "text", "refusal", "tool"]


class Piece(NamedTuple):
    """One paced unit of an answer: a token of reasoning or text, or a tool-call fragment.

    A tool fragment belongs to call ``call`` and ``text`` is the next piece of its arguments
    string; each call starts with a ``first`` fragment that carries its id and name and no
    arguments (as OpenAI streams them).
    """

    kind: PieceKind
    text: str
    call: int = -1
    first: bool = False


@dataclass
class Answer:
    """One request's answer as the provider encoders see it."""

    pieces: list[Piece]
    calls: list[ToolCall]
    finish_reason: str
    reply: Reply

    @property
    def text(self) -> str:
        """The whole answer text."""
        return "".join(p.text for p in self.pieces if p.kind == "text")

    @property
    def refusal(self) -> str:
        """The whole refusal text."""
        return "".join(p.text for p in self.pieces if p.kind == "refusal")

    @property
    def reasoning(self) -> str:
        """The whole reasoning text."""
        return "".join(p.text for p in self.pieces if p.kind == "reasoning")

    def count(self, kind: PieceKind) -> int:
        """How many pieces of ``kind`` the answer has."""
        return sum(1 for p in self.pieces if p.kind == kind)


def build_answer(
    reply: Reply, text_tokens: list[str], max_tokens: int | None, request_id: str
) -> Answer:
    """Cut ``reply`` into pieces; ``text_tokens`` are its text (``max_tokens`` cuts them)."""
    truncated = max_tokens is not None and max_tokens >= 0 and len(text_tokens) >= max_tokens
    if max_tokens is not None and max_tokens >= 0:
        text_tokens = text_tokens[:max_tokens]
    pieces = [Piece("reasoning", t) for t in split_tokens(reply.reasoning)]
    pieces += [Piece("text", t) for t in text_tokens]
    pieces += [Piece("refusal", t) for t in split_tokens(reply.refusal)]
    calls = [
        ToolCall(c.name, c.arguments, c.id or f"call_{request_id}_{i}")
        for i, c in enumerate(reply.tool_calls)
    ]
    for i, call in enumerate(calls):
        args = call.arguments
        pieces.append(Piece("tool", "", call=i, first=True))
        pieces += [
            Piece("tool", args[j : j + ARGUMENT_PIECE], call=i)
            for j in range(0, len(args), ARGUMENT_PIECE)
        ]
    if reply.finish_reason is not None:
        finish = reply.finish_reason
    elif calls:
        finish = "function_call" if reply.legacy_function_call else "tool_calls"
    else:
        finish = "length" if truncated else "stop"
    return Answer(pieces, calls, finish, reply)
