"""The gateway's access token: the sans-IO getToken exchange and the JWT's claims and lifetime."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from .._redact import REDACTED, Secret, redact_text
from ..errors import AuthenticationError, ProtocolError, status_class
from ..request import HTTPRequest, TokenEndpoint
from ._openai_errors import normalize_code

__all__ = [
    "TOKEN_PATH",
    "GatewayToken",
    "jwt_claims",
    "mask_jwts",
    "parse_token_response",
    "token_lifetime",
]

log = logging.getLogger("aiollm.providers.gateway")

TOKEN_PATH = "/api/v1/ability_sub/external/getToken"

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BARE_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{8,16384}")
_TOKEN_KEYS = ("accessToken", "access_token", "token", "data")
_EXPIRES_KEYS = ("expires_in", "expiresIn", "expire_in", "expireIn")


def mask_jwts(text: str) -> str:
    """``text`` with every JWT in it masked."""
    return _JWT.sub(REDACTED, text)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (base64url JSON, signature not checked), or None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def token_lifetime(token: str, *, now: float, expires_in: float | None = None) -> float | None:
    """Seconds ``token`` stays valid from ``now`` (epoch seconds), from its JWT ``exp``/``iat``.

    With both claims the lifetime is at most ``exp - iat``, so a local clock that runs behind
    the gateway's does not keep a token past its end; one that runs ahead (past ``exp``) falls
    back to ``exp - iat``. Without ``exp``: ``expires_in`` from the response, else None
    (kept until the gateway rejects it).
    """
    claims = jwt_claims(token)
    exp = _seconds(claims.get("exp")) if claims else None
    if exp is None or claims is None:
        return expires_in
    iat = _seconds(claims.get("iat"))
    nominal = exp - iat if iat is not None and exp > iat else None
    remaining = exp - now
    if remaining > 0:
        return min(remaining, nominal) if nominal is not None else remaining
    return nominal if nominal is not None else 0.0


def _find_token(doc: dict[str, Any], depth: int = 0) -> tuple[str | None, float | None]:
    """The token and its ``expires_in`` under the usual keys (one ``data`` level deep)."""
    expires = next((s for k in _EXPIRES_KEYS if (s := _seconds(doc.get(k))) is not None), None)
    for key in _TOKEN_KEYS:
        value = doc.get(key)
        if isinstance(value, str) and value.strip():
            return value, expires
        if key == "data" and isinstance(value, dict) and depth == 0:
            token, inner = _find_token(value, depth + 1)
            if token is not None:
                return token, inner if inner is not None else expires
    return None, expires


def _clean_token(token: str, provider: str) -> str:
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token or any(ch.isspace() for ch in token):
        raise ProtocolError("the getToken response holds no usable token", provider=provider)
    return token


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    provider: str = "gateway",
    secrets: tuple[str, ...] = (),
) -> tuple[str, float | None]:
    """``(token, expires_in or None)`` from a getToken response, or a typed error.

    Errors never show the appid, the secret or a token: a non-2xx status or an error body is
    an :class:`AuthenticationError` (401/403 or a refusal code) or the status's error class;
    a 2xx body with no token in any known place is a :class:`ProtocolError`.
    """

    def clean(text: str) -> str:
        return mask_jwts(redact_text(text, secrets))

    text = body.removeprefix(b"\xef\xbb\xbf").strip()
    doc: Any = None
    if text[:1] in (b"{", b"[", b'"'):
        try:
            doc = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):  # malformed, or nested too deep
            if status < 300:
                raise ProtocolError(
                    "the getToken response is not valid JSON", provider=provider
                ) from None
    if status >= 300:
        message, code = f"HTTP {status}", None
        if isinstance(doc, dict):
            error: dict[str, Any] = doc["error"] if isinstance(doc.get("error"), dict) else doc
            code = normalize_code(error.get("code"))
            message = str(error.get("msg") or error.get("message") or message)
        elif text:
            message = text[:200].decode("utf-8", "replace")
        cls = AuthenticationError if status in (401, 403) else status_class(status)
        raise cls(
            f"getToken failed: {clean(message)}"
            + ("; check the appid and secret" if cls is AuthenticationError else ""),
            provider=provider,
            status=status,
            code=code if isinstance(code, int | str) else None,
        )
    if not text:
        raise ProtocolError("the getToken response is empty", provider=provider)
    if isinstance(doc, str):
        return _clean_token(doc, provider), None
    if isinstance(doc, dict):
        token, expires_in = _find_token(doc)
        if token is not None:
            return _clean_token(token, provider), expires_in
        code = normalize_code(doc.get("code"))
        note = doc.get("msg") or doc.get("message")
        succeeded = code in (0, 200, "", "success", "SUCCESS", "ok", "OK")
        if (code is not None and not succeeded) or (code is None and note):
            raise AuthenticationError(
                f"the gateway issued no token: {clean(str(note or 'no message'))}; "
                "check the appid and secret",
                provider=provider,
                status=status,
                code=code if isinstance(code, int | str) else None,
            )
        keys = ", ".join(sorted(map(str, doc))[:10])
        raise ProtocolError(
            "the getToken response has no token under data, token or accessToken "
            f"(keys: {keys or 'none'})",
            provider=provider,
        )
    if doc is not None:
        raise ProtocolError(
            f"the getToken response is a JSON {type(doc).__name__}, not a token", provider=provider
        )
    raw = text.decode("utf-8", "replace")
    if _BARE_TOKEN.fullmatch(raw):
        return raw, None
    raise ProtocolError(
        f"the getToken response is neither JSON nor a bare token: {clean(raw[:120])!r}",
        provider=provider,
    )


class GatewayToken(TokenEndpoint):
    """The gateway's getToken exchange (sans-IO): appid + secret in, a JWT and its lifetime out.

    The lifetime comes from the JWT's ``exp``/``iat`` (see :func:`token_lifetime`);
    ``lifetime`` is that of the last token read.
    """

    def __init__(self, url: str, appid: str, secret: str, *, provider: str = "gateway") -> None:
        self.url = url.rstrip("/")
        self.provider = provider
        self._appid = Secret(appid)
        self._secret = Secret(secret)
        self.lifetime: float | None = None

    def request(self) -> HTTPRequest:
        """``GET {url}/api/v1/ability_sub/external/getToken?appid=..&secret=..``."""
        appid, secret = self._appid.get(), self._secret.get()
        return HTTPRequest(
            "GET",
            self.url + TOKEN_PATH,
            headers={"Accept": "application/json"},
            params={"appid": appid, "secret": secret},
            secrets=(appid, secret),
        )

    def parse(
        self, status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> tuple[str, float | None]:
        """``(token, lifetime)`` of a getToken answer, or its typed error."""
        secrets = (self._appid.get(), self._secret.get())
        token, expires_in = parse_token_response(
            status, headers, body, provider=self.provider, secrets=secrets
        )
        self.lifetime = token_lifetime(token, now=now, expires_in=expires_in)
        log.debug(
            "%s: new access token, lifetime %s",
            self.provider,
            "unknown" if self.lifetime is None else f"{self.lifetime:.1f} s",
        )
        return token, self.lifetime

    def __repr__(self) -> str:
        return f"GatewayToken(url={self.url!r}, appid='***', secret='***')"
