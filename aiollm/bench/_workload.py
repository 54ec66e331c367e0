"""What the benchmark sends: prompts from a JSONL file, or synthetic prompts of a target length."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec

from .. import ConfigurationError

__all__ = ["Messages", "load_prompts", "synthetic_prompt"]

Messages = list[dict[str, Any]]

_VOCAB = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force"
).split()


def synthetic_prompt(index: int, length: int, seed: int = 0) -> Messages:
    """One user message of about ``length`` tokens (short common words ≈ one token each).

    Deterministic in ``(seed, index)`` and different for every index, so no request is a
    verbatim repeat of another (no prompt cache helps).
    """
    rng = random.Random(seed * 1_000_003 + index)
    head = f"Request {index}: write about"
    words = [rng.choice(_VOCAB) for _ in range(max(0, length - 4))]
    return [{"role": "user", "content": " ".join([head, *words])}]


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


def load_prompts(path: str | Path) -> list[Messages]:
    """Prompts from a JSONL file: one conversation per line.

    A line is a JSON list of ``{"role", "content"}`` messages, an object with ``"messages"``
    (or ``"prompt"``), or a plain JSON string (one user message). Blank lines are skipped.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read prompts file {str(p)!r}: {exc.strerror}") from None
    prompts: list[Messages] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p.name}:{n}"
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise ConfigurationError(f"{where}: not valid JSON ({exc})") from None
        prompts.append(_messages_of(value, where))
    if not prompts:
        raise ConfigurationError(f"prompts file {str(p)!r} holds no prompts")
    return prompts
