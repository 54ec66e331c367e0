"""OpenAI-format error classification and embedding helpers (sans-IO)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping

import msgspec

from ..errors import (
    APIError,
    AuthenticationError,
    ContentFilterError,
    ContextOverflowError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from ._base import parse_retry_after

ErrorCode = str | int | None

_INT_CODE = re.compile(r"-?\d+")
_CONTEXT_WORDS = re.compile(r"(?i)context[ _-]?(length|window)|maximum context|prompt is too long")


def normalize_code(code: ErrorCode) -> ErrorCode:
    """A numeric code as an ``int`` (``"-98432"`` → ``-98432``), anything else unchanged."""
    if isinstance(code, str):
        code = code.strip()
        if _INT_CODE.fullmatch(code):
            return int(code)
    return code


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``Retry-After`` in seconds, or None."""
    return parse_retry_after(headers)


def specific_class(
    code: ErrorCode, type_: str | None, message: str, status: int
) -> type[APIError] | None:
    """Classes an OpenAI-style code/type names whatever the HTTP status says."""
    text = f"{code if isinstance(code, str) else ''} {type_ or ''}".lower()
    if "context_length" in text or "context_window" in text:
        return ContextOverflowError
    if status < 500 and status != 429 and _CONTEXT_WORDS.search(message):
        # vLLM, LiteLLM and others say it only in words ("maximum context length is ...").
        return ContextOverflowError
    if "insufficient_quota" in text or "billing" in text or "quota_exceeded" in text:
        return QuotaExceededError
    if "content_filter" in text or "content_policy" in text:
        return ContentFilterError
    return None


def class_by_name(code: ErrorCode, type_: str | None) -> type[APIError] | None:
    """A class from an error's ``type``/``code`` words (for errors without a real status)."""
    text = f"{code if isinstance(code, str) else ''} {type_ or ''}".lower()
    if "auth" in text or "api_key" in text:
        return AuthenticationError
    if "permission" in text or "forbidden" in text:
        return PermissionDeniedError
    if "not_found" in text or "notfound" in text:
        return NotFoundError
    if "rate_limit" in text or "ratelimit" in text or "throttl" in text:
        return RateLimitError
    if "server_error" in text or "internal" in text or "overloaded" in text or "api_error" in text:
        return ServerError
    if "invalid_request" in text or "badrequest" in text or "bad_request" in text:
        return InvalidRequestError
    return None


def detail_text(detail: msgspec.Raw) -> str | None:
    if not len(detail):
        return None
    try:
        value = msgspec.json.decode(detail)
    except msgspec.DecodeError:
        return bytes(detail).decode("utf-8", "replace")[:300]
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()[:300]


def base64_floats(data: str) -> list[float]:
    """``encoding_format="base64"`` embeddings: little-endian float32s."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None
    if len(raw) % 4:
        raise ValueError("not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
