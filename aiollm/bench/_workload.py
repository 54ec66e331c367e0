"""What the benchmark sends.

Prompts from a JSONL file of message lists, a ShareGPT-format JSON file, or synthetic prompts
of a target length (optionally spread over a range, behind a shared prefix); a trace of
arrival times and lengths to replay; conversations for multi-turn sessions. Lengths are exact
in tokens with a local tokenizer file (``tokenizers``; never downloaded), else in words for
synthetic prompts and characters for reports.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .. import ConfigurationError

__all__ = [
    "LocalTokenizer",
    "Messages",
    "Prompt",
    "TraceEntry",
    "load_prompts",
    "load_sharegpt",
    "load_trace",
    "synthetic_prompt",
]

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Prompt:
    """One request's input: ``messages``, and the output length it asks for (None: the default)."""

    messages: Messages
    output_len: int | None = None


@dataclass(frozen=True)
class TraceEntry:
    """One request of a trace: when it arrived (seconds from the start) and its lengths."""

    at: float
    input_len: int | None = None
    output_len: int | None = None


class LocalTokenizer:
    """A ``tokenizers`` tokenizer read from a local ``tokenizer.json`` (never downloaded)."""

    def __init__(self, path: str | Path) -> None:
        try:
            tokenizers = importlib.import_module("tokenizers")
        except ImportError:
            raise ConfigurationError(
                "a tokenizer file needs the tokenizers package: pip install tokenizers"
            ) from None
        p = Path(path)
        if not p.is_file():
            raise ConfigurationError(f"tokenizer file {str(p)!r} does not exist")
        try:
            self._tok: Any = tokenizers.Tokenizer.from_file(str(p))
        except Exception as exc:
            raise ConfigurationError(f"cannot read tokenizer {str(p)!r}: {exc}") from None
        self.path = str(p)

    def count(self, text: str) -> int:
        """Tokens in ``text`` (no special tokens added)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def cut(self, text: str, length: int) -> str:
        """``text`` cut to ``length`` tokens (it must hold at least that many).

        Decoding and encoding again may merge tokens differently: the cut is adjusted until
        the text counts exactly ``length`` tokens (a few tries; the nearest otherwise).
        """
        ids = self._tok.encode(text, add_special_tokens=False).ids
        take = length
        out = str(self._tok.decode(ids[:take]))
        for _ in range(8):
            got = self.count(out)
            if got == length or take < 1 or take > len(ids):
                break
            take += length - got
            out = str(self._tok.decode(ids[: max(0, take)]))
        return out


_VOCAB = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force"
).split()


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_VOCAB) for _ in range(max(0, count)))


def synthetic_prompt(
    index: int,
    length: int,
    seed: int = 0,
    *,
    tokenizer: LocalTokenizer | None = None,
    prefix: str = "",
) -> Messages:
    """One user message of about ``length`` tokens (exactly, with a ``tokenizer``).

    Short common words are about one token each. Deterministic in ``(seed, index)`` and
    different for every index, so no request is a verbatim repeat of another (no prompt
    cache helps) — except a shared ``prefix``, sent as a system message before it.
    """
    rng = random.Random(seed * 1_000_003 + index)
    head = f"Request {index}: write about"
    if tokenizer is None:
        text = " ".join([head, _words(rng, length - 4)])
    else:
        text = f"{head} {_words(rng, length * 2 + 8)}"
        while tokenizer.count(text) < length:
            text += " " + _words(rng, length)
        text = tokenizer.cut(text, length)
    messages: Messages = []
    if prefix:
        messages.append({"role": "system", "content": prefix})
    messages.append({"role": "user", "content": text})
    return messages


def shared_prefix(length: int, seed: int = 0, tokenizer: LocalTokenizer | None = None) -> str:
    """A long system prompt of ``length`` tokens that every request shares."""
    rng = random.Random(seed * 7_777_777 + 1)
    text = "You are a careful assistant. Context: " + _words(rng, length * 2 + 8)
    if tokenizer is not None:
        while tokenizer.count(text) < length:
            text += " " + _words(rng, length)
        return tokenizer.cut(text, length)
    return " ".join(text.split()[:length])


def spread(rng: random.Random, mean: int, ratio: float) -> int:
    """A length drawn uniformly from ``[mean * (1 - ratio), mean * (1 + ratio)]`` (at least 1)."""
    if ratio <= 0:
        return mean
    return max(1, round(rng.uniform(mean * (1 - ratio), mean * (1 + ratio))))


def _messages_of(value: Any, where: str) -> Messages:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict):
        if "messages" in value:
            return _messages_of(value["messages"], where)
        if "prompt" in value and isinstance(value["prompt"], str):
            return [{"role": "user", "content": value["prompt"]}]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        for m in value:
            if not isinstance(m.get("role"), str) or "content" not in m:
                raise ConfigurationError(f"{where}: every message needs a 'role' and a 'content'")
        return [dict(m) for m in value]
    raise ConfigurationError(
        f'{where}: expected a list of messages, {{"messages": [...]}}, '
        f'{{"prompt": "..."}} or a string'
    )


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path`` (a clear error when it cannot be read or decoded)."""
    p = Path(path)
    try:
        return msgspec.json.decode(p.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {str(p)!r}: {exc.strerror}") from None
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"{p.name}: not valid JSON ({exc})") from None


def read_jsonl(path: str | Path, what: str) -> list[tuple[str, Any]]:
    """Each line of a JSON-lines file (``what`` it holds, for errors), decoded, with its
    ``file:line`` place; blank lines are skipped."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {str(p)!r}: {exc.strerror}") from None
    rows: list[tuple[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p.name}:{n}"
        try:
            rows.append((where, msgspec.json.decode(line)))
        except msgspec.DecodeError as exc:
            raise ConfigurationError(f"{where}: not valid JSON ({exc})") from None
    return rows


def load_prompts(path: str | Path) -> list[Messages]:
    """Prompts from a JSONL file: one conversation per line.

    A line is a JSON list of ``{"role", "content"}`` messages, an object with ``"messages"``
    (or ``"prompt"``), or a plain JSON string (one user message). Blank lines are skipped.
    """
    p = Path(path)
    prompts = [_messages_of(value, where) for where, value in read_jsonl(p, "prompts file")]
    if not prompts:
        raise ConfigurationError(f"prompts file {str(p)!r} holds no prompts")
    return prompts


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_ROLES.update(
    {"system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
)


def load_sharegpt(path: str | Path) -> list[Messages]:
    """Conversations from a ShareGPT-format JSON file: a list of ``{"conversations": [...]}``.

    Each turn is ``{"from": "human" | "gpt" | "system", "value": "..."}``; conversations
    without a human turn are skipped. Returns each conversation as messages, in order.
    """
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, list):
        raise ConfigurationError(f"{p.name}: expected a JSON list of conversations")
    out: list[Messages] = []
    for n, item in enumerate(data):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list):
            raise ConfigurationError(f'{p.name}[{n}]: expected {{"conversations": [...]}}')
        messages: Messages = []
        for turn in turns:
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise ConfigurationError(f'{p.name}[{n}]: a turn needs "from" and "value"')
            role = _ROLES.get(str(turn.get("from", "")).lower())
            if role is None:
                raise ConfigurationError(f"{p.name}[{n}]: unknown speaker {turn.get('from')!r}")
            messages.append({"role": role, "content": turn["value"]})
        if any(m["role"] == "user" for m in messages):
            out.append(messages)
    if not out:
        raise ConfigurationError(f"{str(p)!r} holds no conversation with a human turn")
    return out


def first_exchange(conversation: Messages) -> tuple[Messages, str | None]:
    """The messages up to the first user turn, and the reply that followed it (if any)."""
    for i, message in enumerate(conversation):
        if message["role"] == "user":
            nxt = conversation[i + 1] if i + 1 < len(conversation) else None
            reply = nxt["content"] if nxt is not None and nxt["role"] == "assistant" else None
            return conversation[: i + 1], reply
    raise ConfigurationError("a conversation without a user turn")


def user_turns(conversation: Messages) -> tuple[Messages, list[str]]:
    """A conversation's leading system messages and its user turns in order (for sessions)."""
    system = [m for m in conversation if m["role"] == "system"]
    return system, [str(m["content"]) for m in conversation if m["role"] == "user"]


def load_trace(path: str | Path) -> list[TraceEntry]:
    """A trace to replay: JSONL, one request per line, in any order (sorted by time here).

    Each line has ``timestamp`` (seconds; or ``timestamp_ms``) and optionally
    ``input_length`` and ``output_length`` (tokens; ``input_len`` / ``output_len`` too).
    """
    p = Path(path)
    entries: list[TraceEntry] = []
    for where, row in read_jsonl(p, "trace"):
        if not isinstance(row, dict):
            raise ConfigurationError(f"{where}: expected an object with a timestamp")
        if isinstance(row.get("timestamp"), int | float):
            at = float(row["timestamp"])
        elif isinstance(row.get("timestamp_ms"), int | float):
            at = float(row["timestamp_ms"]) / 1000.0
        else:
            raise ConfigurationError(f"{where}: needs a numeric timestamp (s) or timestamp_ms")
        lengths: list[int | None] = []
        for names in (("input_length", "input_len"), ("output_length", "output_len")):
            value = next((row[k] for k in names if k in row), None)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{where}: {names[0]} must be an integer >= 1")
            lengths.append(value)
        entries.append(TraceEntry(at, lengths[0], lengths[1]))
    if not entries:
        raise ConfigurationError(f"trace {str(p)!r} holds no requests")
    entries.sort(key=lambda e: e.at)
    start = entries[0].at
    return [TraceEntry(e.at - start, e.input_len, e.output_len) for e in entries]


class Workload:
    """What request ``index`` sends: a :class:`Prompt` from the configured source.

    Sources, first match: a trace's lengths (``trace``), ``conversations`` (their first
    exchange), ``prompts`` (round robin), else synthetic prompts of ``input_len`` tokens
    (spread by ``input_len_range``). Output lengths: from the trace, from the dataset's reply
    (counted with the tokenizer), or ``output_len`` spread by ``output_len_range`` (None when
    no output length is set). ``shared_prefix_len`` puts one common system prompt first.
    """

    def __init__(
        self,
        *,
        prompts: list[Messages] | None = None,
        conversations: list[Messages] | None = None,
        trace: list[TraceEntry] | None = None,
        input_len: int = 32,
        input_len_range: float = 0.0,
        output_len: int | None = None,
        output_len_range: float = 0.0,
        shared_prefix_len: int = 0,
        tokenizer: LocalTokenizer | None = None,
        seed: int = 0,
    ) -> None:
        self.prompts = prompts
        self.conversations = conversations
        self.trace = trace
        self.input_len = input_len
        self.input_len_range = input_len_range
        self.output_len = output_len
        self.output_len_range = output_len_range
        self.tokenizer = tokenizer
        self.seed = seed
        self.prefix = shared_prefix(shared_prefix_len, seed, tokenizer) if shared_prefix_len else ""

    def _rng(self, index: int, salt: int) -> random.Random:
        return random.Random((self.seed * 1_000_003 + index) * 31 + salt)

    def _out(self, index: int) -> int | None:
        if self.output_len is None:
            return None
        return spread(self._rng(index, 2), self.output_len, self.output_len_range)

    def prompt(self, index: int) -> Prompt:
        """The prompt of request ``index`` (deterministic in the seed)."""
        if self.trace is not None:
            entry = self.trace[index % len(self.trace)]
            length = entry.input_len or self.input_len
            messages = synthetic_prompt(
                index, length, self.seed, tokenizer=self.tokenizer, prefix=self.prefix
            )
            return Prompt(messages, entry.output_len or self._out(index))
        if self.conversations is not None:
            messages, reply = first_exchange(self.conversations[index % len(self.conversations)])
            out = self._out(index)
            if reply is not None and self.tokenizer is not None and self.output_len is None:
                out = max(1, self.tokenizer.count(reply))
            return Prompt(self._prefixed(messages), out)
        if self.prompts is not None:
            return Prompt(self._prefixed(self.prompts[index % len(self.prompts)]), self._out(index))
        length = spread(self._rng(index, 1), self.input_len, self.input_len_range)
        messages = synthetic_prompt(
            index, length, self.seed, tokenizer=self.tokenizer, prefix=self.prefix
        )
        return Prompt(messages, self._out(index))

    def _prefixed(self, messages: Messages) -> Messages:
        if not self.prefix:
            return messages
        return [{"role": "system", "content": self.prefix}, *messages]

    def session(self, index: int, turns: int) -> tuple[Messages, list[str]]:
        """Session ``index``: its leading system messages and ``turns`` user messages in order."""
        if self.conversations is not None:
            system, users = user_turns(self.conversations[index % len(self.conversations)])
            return self._prefixed(system), users[:turns]
        head = [{"role": "system", "content": self.prefix}] if self.prefix else []
        users = [str(self.prompt(index * turns + t).messages[-1]["content"]) for t in range(turns)]
        return head, users

    def count(self, messages: Messages) -> tuple[int, int | None]:
        """The characters of ``messages``' contents, and their tokens with the tokenizer."""
        text = "\n".join(str(m.get("content") or "") for m in messages)
        return len(text), (self.tokenizer.count(text) if self.tokenizer is not None else None)
