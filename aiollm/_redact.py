"""Keep keys, secrets and tokens out of logs, messages and reprs."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"

# Query parameters and header names whose values are secret wherever they appear.
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "accesstoken",
        "client_secret",
        "secret",
        "api_key",
        "apikey",
        "key",
        "token",
        "refresh_token",
    }
)
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})

_QUERY_SECRET = re.compile(
    r"(?i)(?<=[?&;])(" + "|".join(sorted(SECRET_PARAMS, key=len, reverse=True)) + r")=[^&#\s'\"]*"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with secret query values, bearer tokens and the given literal secrets masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with secret header values masked."""
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


class Secret:
    """A string that never shows itself in a repr, str or f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value itself."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
