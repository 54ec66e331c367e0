"""Configuration and per-call argument checks: mistakes are reported at once and by name.

:class:`~aiollm.Client` calls :func:`check_client_config` when it is built (unknown provider
names, unknown setting keys, limits of the wrong type) and :func:`check_call` before a call
sends anything (messages, timeout, max_retries). Each mistake is a
:class:`~aiollm.ConfigurationError` (an :class:`~aiollm.InvalidRequestError` for malformed
messages) naming what is wrong and what would be right.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError, InvalidRequestError
from .limits import Limits, RetryPolicy
from .providers import PROVIDERS, load_provider
from .transport import Timeout

__all__ = ["check_call", "check_client_config", "did_you_mean"]


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``"did you mean 'x'? valid: a, b"`` for an unknown ``name`` among ``valid``."""
    options = sorted(valid)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid: {', '.join(options)}"


def _check_provider_name(name: object, where: str) -> str:
    if not isinstance(name, str) or name not in PROVIDERS:
        raise ConfigurationError(
            f"unknown provider {name!r} in {where}; {did_you_mean(str(name), PROVIDERS)}"
        )
    return name


def _check_by_provider(
    arg: str, value: object, *, of: str, example: str, entry: type, must_be: str, hint: str = ""
) -> None:
    """``value`` (the ``arg=`` argument) is None or a mapping of known provider names to
    ``entry`` instances: ``of`` and ``example`` say what the mapping holds, ``must_be`` and
    ``hint`` what one entry must be."""
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{arg}= must be a mapping of provider name to {of}, e.g. {example}"
        )
    for name, item in value.items():
        _check_provider_name(name, f"{arg}=")
        if not isinstance(item, entry):
            raise ConfigurationError(
                f"{arg}[{name!r}] must be {must_be}, got {type(item).__name__}{hint}"
            )


def check_client_config(
    providers: Mapping[str, Mapping[str, Any]] | None,
    limits: Mapping[str, Limits] | None,
    timeout: object,
    retry: object,
    max_retries: object,
) -> None:
    """Check the arguments of :class:`~aiollm.Client` (raise :class:`ConfigurationError`)."""
    _check_by_provider(
        "providers",
        providers,
        of="settings",
        example="{'openai': {'api_key': '...'}}",
        entry=Mapping,
        must_be="a mapping of settings",
    )
    for name, settings in (providers or {}).items():
        keys = load_provider(name).setting_keys
        for key in settings:
            if key not in keys:
                raise ConfigurationError(
                    f"unknown setting {key!r} for provider {name!r}; {did_you_mean(str(key), keys)}"
                )
    _check_by_provider(
        "limits",
        limits,
        of="aiollm.Limits",
        example="{'openai': aiollm.Limits(requests_per_second=5)}",
        entry=Limits,
        must_be="an aiollm.Limits",
        hint=": write aiollm.Limits(requests_per_second=..., max_concurrency=..., "
        "tokens_per_minute=...)",
    )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(
            f"retry= must be an aiollm.RetryPolicy, got {type(retry).__name__}"
        )
    check_timeout(timeout)
    check_max_retries(max_retries)


def check_timeout(timeout: object) -> None:
    """``timeout`` is None, an :class:`~aiollm.Timeout` or a positive number of seconds."""
    if timeout is None or isinstance(timeout, Timeout):
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigurationError(
            f"timeout must be a number of seconds or an aiollm.Timeout, got {timeout!r}"
        )
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")


def check_max_retries(max_retries: object) -> None:
    """``max_retries`` is None or an integer >= 0."""
    if max_retries is None:
        return
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(
            f"max_retries must be an integer >= 0 (0 turns retries off), got {max_retries!r}"
        )


def check_messages(messages: object, provider: str) -> list[dict[str, Any]]:
    """``messages`` as a list of dicts, each with a string ``role`` and a ``content``."""
    example = "messages=[{'role': 'user', 'content': 'hello'}]"
    if type(messages) is not list and (
        isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable)
    ):
        raise InvalidRequestError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got "
            f"{type(messages).__name__}: write {example} (or prompt='...')",
            provider=provider,
        )
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        # An assistant message that carries tool calls may have no content.
        if (
            (type(message) is dict or isinstance(message, Mapping))
            and isinstance(message.get("role"), str)
            and ("content" in message or "tool_calls" in message)
        ):
            out.append(dict(message))
            continue
        raise InvalidRequestError(
            f"messages[{i}] {_fault(message)}: write {example}", provider=provider
        )
    return out


def _fault(message: object) -> str:
    """What keeps ``message`` from being a chat message (it is not one)."""
    if not isinstance(message, Mapping):
        return f"must be a dict with 'role' and 'content', got {type(message).__name__}"
    needed = ("role",) if "tool_calls" in message else ("role", "content")
    missing = [repr(k) for k in needed if k not in message]
    if missing:
        return f"has no {' or '.join(missing)}"
    return f"has a role that is not a string ({message['role']!r})"


def check_call(
    *, provider: str, messages: object, timeout: object, max_retries: object
) -> list[dict[str, Any]] | None:
    """Check one call's arguments before anything is sent; the messages as a list of dicts."""
    if timeout is not None:
        check_timeout(timeout)
    if max_retries is not None:
        check_max_retries(max_retries)
    return None if messages is None else check_messages(messages, provider)
