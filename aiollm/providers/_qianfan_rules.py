"""Qianfan's sans-IO rules: error codes, the ``/oauth/2.0/token`` exchange, the messages rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from .._redact import Secret, redact_text
from ..errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    error_for_status,
    status_class,
)
from ..request import HTTPRequest, TokenEndpoint, parse_retry_after

PROVIDER = "qianfan"
TOKEN_PATH = "/oauth/2.0/token"
MAX_CONTENT_CHARS = 2000
"""The service's limit on the last message, and on all contents together (older turns go)."""
DEFAULT_TOKEN_TIMEOUT = 30.0


# -- error codes ------------------------------------------------------------------------------
_RATE_LIMIT = frozenset({4, 18, 336100, 336501, 336502})
_SERVER = frozenset({1, 2, 336000})
_QUOTA = frozenset({17, 19})
_AUTH = frozenset({13, 14, 15, 100, 110, 111})
_PERMISSION = frozenset({6, 336004})
_NOT_FOUND = frozenset({3, 336005})


def _error_class(code: int | str) -> type[APIError]:
    if isinstance(code, str):
        return APIError
    if code in _RATE_LIMIT:
        return RateLimitError
    if code in _SERVER:
        return ServerError
    if code in _QUOTA:
        return QuotaExceededError
    if code in _AUTH:
        return AuthenticationError
    if code in _PERMISSION:
        return PermissionDeniedError
    if code in _NOT_FOUND:
        return NotFoundError
    if 336001 <= code <= 336003 or 336101 <= code <= 336105:
        return InvalidRequestError
    return APIError


def error_from_code(
    code: int | str,
    message: str | None,
    *,
    status: int = 200,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The typed error for a Qianfan ``error_code`` (``code`` attribute = the number)."""
    cls = _error_class(code)
    text = redact_text(message) if message else f"error {code}"
    if code in (110, 111, 100):
        text += " (the access token was rejected)"
    return cls(
        text,
        provider=PROVIDER,
        status=status,
        code=code,
        request_id=request_id,
        retry_after=retry_after,
    )


class _WireToken(msgspec.Struct):
    access_token: str | None = None
    expires_in: float | None = None
    error: str | None = None
    error_description: str | None = None
    error_code: int | str | None = None
    error_msg: str | None = None


_decode_token = msgspec.json.Decoder(_WireToken).decode

HTML_CODE = re.compile(r'"?error_code"?\s*[:=]\s*"?(\d+)')
HTML_MSG = re.compile(r'"?error_msg"?\s*[:=]\s*"((?:[^"\\]|\\.)*)"')
_TAGS = re.compile(r"<[^>]*>|\s+")


def snippet(body: bytes, limit: int = 200) -> str:
    text = body[: limit * 4].decode("utf-8", "replace")
    text = _TAGS.sub(" ", text).strip()
    return redact_text(text[:limit])


def json_string(escaped: str) -> str:
    """The text of a JSON string literal's body (as is if it does not decode)."""
    try:
        return str(msgspec.json.decode(f'"{escaped}"'))
    except msgspec.DecodeError:
        return escaped


def error_code_of(code: int | str | None) -> int | str | None:
    """The error code as a number (a string only if it is not one); None for no error."""
    if code is None or code == "" or code == 0:
        return None
    if isinstance(code, str):
        text = code.strip()
        if text.lstrip("-").isdigit():
            return int(text) or None
        return text
    return code


# -- token source -------------------------------------------------------------------------------
class QianfanToken(TokenEndpoint):
    """The ``/oauth/2.0/token`` exchange (sans-IO): AK/SK in, an access token and its lifetime out.

    :mod:`aiollm.auth` fetches it, caches the token and refreshes it ahead of expiry, single
    flight. Failures are typed: a rejected AK/SK is an
    :class:`~aiollm.AuthenticationError` with the service's ``error_description``; a 5xx is a
    :class:`~aiollm.ServerError`; a body that is not the expected JSON a
    :class:`~aiollm.ProtocolError`; timeouts and connection failures are
    :class:`~aiollm.TransportError` s. No message contains the AK, the SK or a token.
    """

    def __init__(
        self,
        base_url: str,
        ak: str,
        sk: str,
        *,
        timeout: float | None = DEFAULT_TOKEN_TIMEOUT,
    ) -> None:
        self.url = base_url.rstrip("/") + TOKEN_PATH
        self._ak = Secret(ak)
        self._sk = Secret(sk)
        self.timeout = timeout

    def request(self) -> HTTPRequest:
        """The token request: a POST with an empty body, the credentials in the query."""
        ak, sk = self._ak.get(), self._sk.get()
        return HTTPRequest(
            "POST",
            self.url,
            headers={"Accept": "application/json"},
            params={"grant_type": "client_credentials", "client_id": ak, "client_secret": sk},
            secrets=(ak, sk),
        )

    def parse(
        self, status: int, headers: Mapping[str, str], body: bytes, *, now: float = 0.0
    ) -> tuple[str, float | None]:
        """Read a token response (raising the typed error a failure stands for)."""
        secrets = (self._ak.get(), self._sk.get())
        try:
            wire = _decode_token(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # or too deep
            shown = redact_text(snippet(body), secrets)
            retry_after = parse_retry_after(headers)
            if status >= 300:
                raise error_for_status(
                    status,
                    f"the access token request failed: {shown or f'HTTP {status}'}",
                    provider=PROVIDER,
                    retry_after=retry_after,
                ) from None
            raise ProtocolError(
                f"the token endpoint {self.url} answered with something that is not a token "
                f"response: {shown!r}",
                provider=PROVIDER,
            ) from None
        if wire.error or (status >= 300 and not wire.access_token):
            description = wire.error_description or wire.error_msg or wire.error or f"HTTP {status}"
            description = redact_text(description, secrets)
            # A refusal is about the credentials, unless the endpoint was down or throttling.
            retryable = status >= 500 or status in (408, 429)
            cls = status_class(status) if retryable else AuthenticationError
            raise cls(
                f"the access token request was rejected: {description}; check QIANFAN_AK and "
                "QIANFAN_SK",
                provider=PROVIDER,
                status=status,
                code=wire.error or error_code_of(wire.error_code),
                retry_after=parse_retry_after(headers),
            )
        code = error_code_of(wire.error_code)
        if code is not None:
            raise error_from_code(code, redact_text(wire.error_msg or "", secrets), status=status)
        if not wire.access_token:
            raise ProtocolError("the token response has no access_token", provider=PROVIDER)
        return wire.access_token, wire.expires_in

    def __repr__(self) -> str:
        return f"QianfanToken({self.url!r})"


# -- messages -----------------------------------------------------------------------------------
def validate_messages(messages: list[dict[str, Any]]) -> None:
    """Check the service's ``messages`` rules (InvalidRequestError naming the broken rule)."""

    def fail(rule: str) -> InvalidRequestError:
        return InvalidRequestError(f"messages rule: {rule}", provider=PROVIDER)

    if not messages:
        raise fail("messages must not be empty (add a user message)")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise fail(f"message {i} must be a mapping with 'role' and 'content'")
        role = message.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role == "system":
            raise fail(f"a system message is only allowed first (found one at {i})")
        if role == "function" and expected == "user" and i > 0:
            # A function's result answers the assistant's function_call just before it.
            if "function_call" not in messages[i - 1]:
                raise fail(f"message {i} (role 'function') must follow a function_call")
            if not isinstance(message.get("name"), str):
                raise fail(f"message {i} (role 'function') must name the function")
        elif role != expected:
            raise fail(
                f"roles must alternate user, assistant, user, ... starting with user "
                f"('function' results in the user's place): message {i} has role {role!r}, "
                f"expected {expected!r}"
            )
        if not isinstance(message.get("content"), str):
            raise fail(f"message {i} must have a string 'content'")
    if len(messages) % 2 == 0:
        raise fail(
            f"the number of messages must be odd and the last one from the user "
            f"(got {len(messages)})"
        )
    last = len(messages[-1]["content"])
    if last > MAX_CONTENT_CHARS:
        raise fail(
            f"the last message may have at most {MAX_CONTENT_CHARS} characters (it has {last})"
        )


def native_messages(messages: list[Any]) -> list[Any]:
    """Tool-call turns in the OpenAI shape (``Completion.to_message()``, ``role: tool``) as the
    service's own: an assistant ``function_call`` and a ``role: function`` result.

    The service takes one function call per assistant message. Other messages are kept as
    they are (and checked by :func:`validate_messages`).
    """
    out: list[Any] = []
    names: dict[Any, str] = {}
    for i, message in enumerate(messages):
        if (
            isinstance(message, Mapping)
            and message.get("role") == "assistant"
            and message.get("tool_calls")
        ):
            calls = message["tool_calls"]
            if not isinstance(calls, list) or len(calls) != 1:
                raise InvalidRequestError(
                    f"messages rule: message {i} has {len(calls) if isinstance(calls, list) else 0} "
                    "tool calls; the service takes one function call per assistant message",
                    provider=PROVIDER,
                )
            first = calls[0] if isinstance(calls[0], Mapping) else {}
            function = first.get("function")
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise InvalidRequestError(
                    f"messages rule: message {i}'s tool call needs a function with a name",
                    provider=PROVIDER,
                )
            name: str = function["name"]
            arguments = function.get("arguments") or ""
            names[first.get("id")] = names[None] = name
            native = {
                k: v for k, v in message.items() if k not in ("tool_calls", "reasoning_content")
            }
            native["content"] = message.get("content") or ""
            native["function_call"] = {"name": name, "arguments": arguments}
            out.append(native)
        elif isinstance(message, Mapping) and message.get("role") == "tool":
            called = (
                message.get("name") or names.get(message.get("tool_call_id")) or names.get(None)
            )
            out.append({"role": "function", "name": called, "content": message.get("content")})
        else:
            out.append(message)
    return out


def trim_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the oldest user/assistant pairs until all contents total at most 2000 characters.

    This mirrors what the service does on its own; doing it here makes it visible. ``messages``
    must already be valid (so the last message alone always fits).
    """
    total = sum(len(m["content"]) for m in messages)
    start = 0
    while total > MAX_CONTENT_CHARS and len(messages) - start > 1:
        total -= len(messages[start]["content"]) + len(messages[start + 1]["content"])
        start += 2
    return messages[start:] if start else messages
