"""One exception hierarchy for every provider.

Every error aiollm raises is an :class:`AiollmError`. Messages say what happened and
what to do; no API key, secret or access token ever appears in a message or a repr.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Completion, ToolCall

__all__ = [
    "APIError",
    "AiollmError",
    "AuthenticationError",
    "ConfigurationError",
    "ContentFilterError",
    "ContextOverflowError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "StreamInterrupted",
    "StreamOptionsRejectedError",
    "StreamingRefusedError",
    "TimeoutError",
    "ToolArgumentsError",
    "TransportError",
    "UnsupportedOperationError",
    "error_for_status",
    "status_class",
]


class AiollmError(Exception):
    """Base class of every error aiollm raises."""

    provider: str | None

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider

    def __str__(self) -> str:
        return f"[{self.provider}] {self.message}" if self.provider else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigurationError(AiollmError):
    """A setting is missing or wrong (e.g. no API key); the message names what to set."""


class TransportError(AiollmError):
    """The HTTP exchange failed below the API: connection refused or reset, DNS, TLS.

    ``response_started`` is true when the failure came after response headers arrived.
    """

    def __init__(
        self, message: str, *, provider: str | None = None, response_started: bool = False
    ) -> None:
        super().__init__(message, provider=provider)
        self.response_started = response_started


class TimeoutError(TransportError, builtins.TimeoutError):
    """A timeout expired. ``phase`` names which of :class:`~aiollm.Timeout`'s: ``connect``,
    ``first_byte``, ``first_event``, ``idle``, ``read`` or ``total``.

    It is also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        phase: str = "total",
        response_started: bool = False,
    ) -> None:
        super().__init__(message, provider=provider, response_started=response_started)
        self.phase = phase


class ProtocolError(AiollmError):
    """The peer sent bytes that break the wire format: malformed frame, oversized line, truncation."""

    @classmethod
    def wrapping(cls, exc: Exception, provider: str | None = None) -> ProtocolError:
        """The typed error for a bare exception raised while reading a response."""
        error = cls(
            f"could not decode the response ({type(exc).__name__}: {exc})", provider=provider
        )
        error.__cause__ = exc
        return error


class UnsupportedOperationError(AiollmError):
    """The provider has no endpoint for the requested operation (e.g. embeddings)."""


class StreamInterrupted(AiollmError):
    """A stream ended early after text had reached the caller.

    ``partial`` is the :class:`~aiollm.Completion` built from what arrived; the underlying
    error (an :class:`APIError`, :class:`TransportError` or :class:`ProtocolError`) is
    ``__cause__`` and also ``error``. A stream that already delivered text is never retried.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: Completion,
        error: AiollmError | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.partial = partial
        self.error: AiollmError | None = error
        """The library's error that ended the stream (always set on one aiollm raised)."""


class APIError(AiollmError):
    """The provider answered with an error.

    ``status`` is the real HTTP status (for DashScope in-stream errors the event's own status),
    ``code`` the provider's code (a string for DashScope, an int for Qianfan and the gateway),
    ``retryable`` whether retrying the same request may succeed, ``retry_after`` seconds the
    server asked to wait (or None).
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        code: str | int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None and self.code != "":
            parts.append(f"code {self.code}")
        if self.request_id:
            parts.append(f"request_id {self.request_id}")
        where = f" ({', '.join(parts)})" if parts else ""
        head = f"[{self.provider}] " if self.provider else ""
        return f"{head}{self.message}{where}"


class AuthenticationError(APIError):
    """The credentials were rejected: check the API key / secret (or the token source)."""


class PermissionDeniedError(APIError):
    """The credentials are valid but may not use this model or workspace."""


class RateLimitError(APIError):
    """Throttled: back off and retry (``retry_after`` when the server said how long)."""

    default_retryable = True


class QuotaExceededError(APIError):
    """A billing or daily/total quota is exhausted: retrying will not help until it is raised."""


class InvalidRequestError(APIError):
    """The request was rejected as invalid (or failed validation before it was sent)."""


class ContentFilterError(APIError):
    """The input or output was blocked by the provider's content inspection."""


class ContextOverflowError(InvalidRequestError):
    """The input is longer than the model's context window: shorten it."""


class NotFoundError(APIError):
    """The model, endpoint or workspace does not exist."""


class ServerError(APIError):
    """The provider failed (5xx or an internal error code): usually worth retrying."""

    default_retryable = True


class ToolArgumentsError(AiollmError):
    """A tool call's ``arguments`` are not valid JSON (raised by ``ToolCall.parsed()``).

    ``call`` is the :class:`~aiollm.ToolCall`, with the text exactly as the model wrote it.
    """

    def __init__(self, message: str, *, call: ToolCall, provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.call = call


class StreamingRefusedError(InvalidRequestError):
    """The server does not stream: the same call can be sent again without streaming.

    ``retryable`` is true when that fallback applies (the call asked to stream and the
    provider can answer it whole); the retry loop then sends the non-streaming request.
    """


class StreamOptionsRejectedError(InvalidRequestError):
    """The server rejected ``stream_options``, which aiollm adds to ask for usage.

    Retryable: the retry loop sends the call again without the option (and the provider
    leaves it out from then on). Usage is then whatever the server reports unasked.
    """

    default_retryable = True


def status_class(status: int) -> type[APIError]:
    """The error class of an HTTP status: the one table every provider starts from."""
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDeniedError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitError
    if status == 408 or status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return APIError


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    code: str | int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    body: Any = None,
) -> APIError:
    """The error an HTTP status stands for, when the body names nothing more specific."""
    return status_class(status)(
        message,
        provider=provider,
        status=status,
        code=code,
        request_id=request_id,
        retry_after=retry_after,
        body=body,
    )
