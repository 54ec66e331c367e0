"""Keep keys, secrets and tokens out of logs, messages and reprs."""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

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


def redact_url(url: str) -> str:
    """A URL without the password of its user info (``redis://user:***@host``)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"


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


_MAX_DEPTH = 12
"""How deep :func:`scrub_exception` follows attributes and containers (chains have no bound)."""


class _Scrubber:
    """Masks secrets in an exception and everything reachable from it, in place."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in set(secrets) if s and len(s) >= 4)
        self.secret_bytes = tuple(s.encode() for s in self.secrets)
        self.seen: set[int] = set()

    def text(self, text: str) -> str:
        return redact_text(text, self.secrets)

    def value(self, value: object, depth: int) -> object:
        """``value`` with secrets masked: a new object when it held one (never mutated)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            for secret in self.secret_bytes:
                data = data.replace(secret, REDACTED.encode())
            masked = self.text(data.decode("utf-8", "surrogateescape"))
            return masked.encode("utf-8", "surrogateescape")
        if isinstance(value, BaseException):
            self.exception(value, depth)
            return value
        if depth > _MAX_DEPTH:
            return value if not self.leaks(repr(value)) else self.text(repr(value))
        kind = type(value)
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            assert isinstance(value, list | tuple | set | frozenset)
            items = [self.value(item, depth + 1) for item in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return kind(items)
        if kind is dict:
            assert isinstance(value, dict)
            pairs = {self.value(k, depth + 1): self.value(v, depth + 1) for k, v in value.items()}
            same = all(a is b and pairs[a] is value[b] for a, b in zip(pairs, value, strict=False))
            return value if same and len(pairs) == len(value) else pairs
        if isinstance(value, tuple) and hasattr(value, "_replace") and hasattr(value, "_fields"):
            # A named tuple (aiohttp's RequestInfo): the same type, its fields masked.
            fields = {f: getattr(value, f) for f in value._fields}
            new = {f: self.value(v, depth + 1) for f, v in fields.items()}
            changed = {f: v for f, v in new.items() if v is not fields[f]}
            return value._replace(**changed) if changed else value
        if isinstance(value, msgspec.Struct):
            fields = {f: getattr(value, f) for f in value.__struct_fields__}
            new = {f: self.value(v, depth + 1) for f, v in fields.items()}
            changed = {f: v for f, v in new.items() if v is not fields[f]}
            return msgspec.structs.replace(value, **changed) if changed else value
        # Anything else (a URL, request info, a header mapping, a live response): it is never
        # mutated; when its text shows a secret, the masked text stands in for it.
        if self.leaks(repr(value)) or self.leaks(str(value)):
            return self.text(str(value))
        return value

    def leaks(self, text: str) -> bool:
        return self.text(text) != text

    def exception(self, exc: BaseException, depth: int = 0) -> None:
        while exc is not None and id(exc) not in self.seen:
            self.seen.add(id(exc))
            exc.args = tuple(self.value(arg, depth + 1) for arg in exc.args)
            for name, attr in list(vars(exc).items()):
                masked = self.value(attr, depth + 1)
                if masked is not attr:
                    try:
                        setattr(exc, name, masked)
                    except (AttributeError, TypeError):
                        pass
            if exc.__cause__ is not None:
                self.exception(exc.__cause__, depth)
            context = exc.__context__
            if context is None:
                return
            exc = context


def scrub_exception(exc: BaseException, secrets: Iterable[str]) -> BaseException:
    """Mask ``secrets`` (and secret-looking query values and bearer tokens) in ``exc``.

    Everything reachable from ``exc`` is covered: its message and ``args``, its attributes
    (recursively through containers and msgspec structs), ``__notes__``, and the same for
    every exception in its ``__cause__`` / ``__context__`` chain, suppressed ones included.
    Exceptions are masked in place; other objects are never mutated: one whose text shows a
    secret (e.g. aiohttp's ``request_info`` with the URL and headers) is replaced by that
    text, masked. Returns ``exc``.
    """
    _Scrubber(secrets).exception(exc)
    return exc
