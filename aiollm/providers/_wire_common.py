"""Wire structs that more than one provider's format shares: tool calls and token counts."""

from __future__ import annotations

import msgspec

from ..events import Usage

__all__ = ["OutputDetails", "PromptDetails", "TokenCounts", "WireFunction", "WireToolCall"]


class WireFunction(msgspec.Struct, gc=False):
    """A tool call's (or a legacy ``function_call``'s) function: its name and arguments."""

    name: str | None = None
    arguments: str | None = None


class WireToolCall(msgspec.Struct, gc=False):
    """One entry of a message's ``tool_calls``."""

    index: int | None = None
    id: str | None = None
    function: WireFunction | None = None


class PromptDetails(msgspec.Struct, gc=False):
    """``prompt_tokens_details``: the prompt tokens served from a cache."""

    cached_tokens: int | None = None


class OutputDetails(msgspec.Struct, gc=False):
    """``completion_tokens_details`` or ``output_tokens_details``: the reasoning tokens."""

    reasoning_tokens: int | None = None


class TokenCounts(msgspec.Struct, gc=False):
    """``usage`` as prompt, completion and total tokens."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def event(self) -> Usage:
        """As a uniform :class:`~aiollm.Usage` event."""
        return Usage(self.prompt_tokens, self.completion_tokens, self.total_tokens)
