"""How many tokens a call is expected to use, before it is sent (pure: no clock, no IO).

A tokens-per-minute budget reserves this estimate when a call starts; the usage the
provider reports settles the difference when it ends (:meth:`aiollm.limits.Lease.settle`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = ["DEFAULT_MAX_TOKENS", "CallLike", "estimate_tokens"]

DEFAULT_MAX_TOKENS = 512
"""The completion tokens a call is assumed to use when it sets no ``max_tokens``."""

_MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")
"""The parameters that bound a call's completion, by provider."""


class CallLike(Protocol):
    """What :func:`estimate_tokens` reads of a call."""

    messages: list[dict[str, Any]] | None
    prompt: str | None
    input: str | list[str] | None
    params: dict[str, Any]


def _texts(call: CallLike) -> list[str]:
    texts: list[str] = []
    for message in call.messages or ():
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif content is not None:
            texts.append(str(content))
    if call.prompt:
        texts.append(call.prompt)
    if isinstance(call.input, str):
        texts.append(call.input)
    elif call.input:
        texts.extend(call.input)
    return texts


def estimate_tokens(call: CallLike, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """Tokens a call is expected to use: its ``max_tokens`` (or ``default_max_tokens``) plus
    its prompt, counted as one token per non-ASCII character and per 4 ASCII characters, plus
    4 per message (an approximation; the reported usage settles the difference)."""
    completion = default_max_tokens
    params = call.params
    for key in _MAX_TOKENS_KEYS:
        value = params.get(key)
        if isinstance(value, int) and value > 0:
            completion = value
            break
    prompt = 0
    for text in _texts(call):
        size = len(text)
        ascii_chars = len(text.encode("ascii", "ignore")) if not text.isascii() else size
        prompt += (size - ascii_chars) + math.ceil(ascii_chars / 4) + 4
    return completion + prompt
