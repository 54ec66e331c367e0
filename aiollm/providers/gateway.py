"""The token-protected OpenAI-compatible gateway (``gateway/<model>``).

Settings (constructor key ← environment variable):

- ``url`` ← ``AIOLLM_GATEWAY_URL``: the gateway's origin, e.g. ``http://10.0.0.5:8080``;
- ``appid`` ← ``AIOLLM_GATEWAY_APPID`` and ``secret`` ← ``AIOLLM_GATEWAY_SECRET``: the
  subscription's credentials, exchanged for an access token;
- ``ability`` ← ``AIOLLM_GATEWAY_ABILITY``: the ability id in the call URLs (when unset, the
  ``abilityId`` the token names is used);
- ``stream`` ← ``AIOLLM_GATEWAY_STREAM`` (off by default): ask the gateway to stream.

**Token.** ``GET {url}/api/v1/ability_sub/external/getToken?appid=..&secret=..`` answers a JWT,
as JSON (under ``data``, ``token``, ``accessToken`` or ``access_token``, possibly nested in
``data``) or as the bare token. Its lifetime is read from the JWT payload (``exp``, and ``iat``
to stay right when the clocks disagree; no signature check) and the token is refreshed ahead
of expiry, single flight (:class:`GatewayToken`). A token the gateway rejects is replaced once.
The token travels as the ``accessToken`` query parameter and is masked in every message.

**Calls.** ``POST {url}/{ability}/v1/chat/completions`` (and ``/v1/completions``,
``/v1/embeddings``) with the OpenAI body: the OpenAI decoder reads the answers.

**Streaming.** The gateway answers JSON only, so by default ``client.stream("gateway/...")``
sends one non-streaming request and yields its text as one :class:`~aiollm.TextDelta`, then
:class:`~aiollm.Usage` and :class:`~aiollm.Finish`. With ``stream`` on, the request asks to
stream; if the gateway refuses with -98434, that is a retryable
:class:`~aiollm.StreamingRefusedError`: the retry (under the client's
:class:`~aiollm.RetryPolicy`) is a non-streaming request, and the provider remembers the
refusal (for the life of the client) so every later call is one too (with
``max_retries=0`` the first call fails with the -98434 error; later calls still fall back).
Without a fallback, -98434 is a :class:`~aiollm.StreamingRefusedError` that is not retryable
(an :class:`~aiollm.InvalidRequestError`).

**Errors.** -98432 → :class:`~aiollm.ContentFilterError`, -98433 →
:class:`~aiollm.QuotaExceededError`, -98434 → :class:`~aiollm.StreamingRefusedError`, 40303 →
:class:`~aiollm.ContextOverflowError`, 50002 → :class:`~aiollm.ServerError` (retryable), read
from ``{"code", "msg"|"message"}``, ``{"error": {"code", "message", "type"}}`` or a non-2xx
status; the code may also come as a string or as its name (``"SENSITIVE_WORD_ERROR"``).
``APIError.code`` is the int. A rejected or expired token (HTTP 401, code 401, or a message
saying the token expired or is invalid) is an :class:`~aiollm.AuthenticationError`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import msgspec

from .._redact import REDACTED, Secret, redact_text
from ..errors import (
    AiollmError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ContentFilterError,
    ContextOverflowError,
    InvalidRequestError,
    ProtocolError,
    QuotaExceededError,
    ServerError,
    StreamingRefusedError,
    status_class,
)
from ..request import TokenEndpoint
from ._base import Call, HTTPRequest, Prepared, ResponseDecoder, json_body
from ._openai_errors import ErrorCode, normalize_code
from .openai import OpenAIDecoder, OpenAIProvider, WireResponse

__all__ = [
    "GATEWAY_ERRORS",
    "TOKEN_PATH",
    "GatewayDecoder",
    "GatewayProvider",
    "GatewayToken",
    "jwt_claims",
    "parse_token_response",
    "token_lifetime",
]

log = logging.getLogger("aiollm.providers.gateway")

TOKEN_PATH = "/api/v1/ability_sub/external/getToken"
ENV_URL = "AIOLLM_GATEWAY_URL"
ENV_APPID = "AIOLLM_GATEWAY_APPID"
ENV_SECRET = "AIOLLM_GATEWAY_SECRET"
ENV_ABILITY = "AIOLLM_GATEWAY_ABILITY"
ENV_STREAM = "AIOLLM_GATEWAY_STREAM"

STREAM_REFUSED = -98434
GATEWAY_ERRORS: dict[int, tuple[str, type[APIError]]] = {
    -98432: ("SENSITIVE_WORD_ERROR", ContentFilterError),
    -98433: ("TOKEN_LIMIT_DAY", QuotaExceededError),
    STREAM_REFUSED: ("INVALID_RESPONSE_CONTENT_TYPE", StreamingRefusedError),
    40303: ("CONTEXT_OVERFLOW", ContextOverflowError),
    50002: ("CUDA_OUT_OF_MEMORY", ServerError),
}
"""The gateway's documented error codes: ``code → (name, error class)``."""
_CODE_OF_NAME = {name: code for code, (name, _) in GATEWAY_ERRORS.items()}

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BARE_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{8,16384}")
_TOKEN_KEYS = ("accessToken", "access_token", "token", "data")
_EXPIRES_KEYS = ("expires_in", "expiresIn", "expire_in", "expireIn")
_TOKEN_WORDS = ("token", "令牌")
_REJECT_WORDS = ("expire", "invalid", "illegal", "过期", "失效", "无效", "非法")
_TRUE = frozenset({"1", "true", "yes", "on"})


# -- the token --------------------------------------------------------------------------------
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
        return _JWT.sub(REDACTED, redact_text(text, secrets))

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


# -- the decoder -------------------------------------------------------------------------------
def _looks_like_rejected_token(message: str) -> bool:
    lower = message.lower()
    if "unauthorized" in lower or "unauthorised" in lower:
        return True
    return any(w in lower for w in _TOKEN_WORDS) and any(w in lower for w in _REJECT_WORDS)


class GatewayDecoder(OpenAIDecoder):
    """The OpenAI decoder with the gateway's error codes and token masking.

    ``fallback``: the request asked to stream and may be sent again without streaming, so a
    refusal to stream (-98434) is a retryable :class:`~aiollm.StreamingRefusedError`.
    """

    provider: ClassVar[str] = "gateway"

    def __init__(
        self,
        call: Call,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        fallback: bool = False,
    ) -> None:
        super().__init__(call, status, headers)
        self.fallback = fallback

    def clean_message(self, message: str) -> str:
        return _JWT.sub(REDACTED, super().clean_message(message))

    def error_fields(self, wire: WireResponse) -> tuple[ErrorCode, str, str | None]:
        code, message, type_ = super().error_fields(wire)
        if isinstance(code, str) and code.upper() in _CODE_OF_NAME:
            code = _CODE_OF_NAME[code.upper()]
        elif not (isinstance(code, int) and code in GATEWAY_ERRORS):
            for word in (type_, message):
                if word and word.strip().upper() in _CODE_OF_NAME:
                    code = _CODE_OF_NAME[word.strip().upper()]
                    break
        return code, message, type_

    def error_class(
        self, code: ErrorCode, type_: str | None, message: str, status: int
    ) -> type[APIError]:
        if isinstance(code, int) and code in GATEWAY_ERRORS:
            return GATEWAY_ERRORS[code][1]
        if code == 401 or (status < 500 and _looks_like_rejected_token(message)):
            return AuthenticationError
        return super().error_class(code, type_, message, status)

    def error_from(self, wire: WireResponse, status: int, headers: Mapping[str, str]) -> APIError:
        code, message, _ = self.error_fields(wire)
        if code != STREAM_REFUSED:
            return super().error_from(wire, status, headers)
        name = GATEWAY_ERRORS[STREAM_REFUSED][0]
        if name not in message:
            message = f"{message} ({name})"
        if self.fallback:
            message += ": the gateway does not stream; retrying without streaming"
        else:
            message += ": the gateway does not stream (do not ask it to)"
        return StreamingRefusedError(
            message,
            provider=self.provider,
            status=status,
            code=code,
            request_id=wire.id or self.request_id,
            retryable=self.fallback,
        )


# -- the provider ------------------------------------------------------------------------------
class GatewayProvider(OpenAIProvider):
    """``gateway/<model>``: the token-protected gateway (see the module docs)."""

    name: ClassVar[str] = "gateway"
    setting_keys: ClassVar[frozenset[str]] = frozenset(
        {"url", "appid", "secret", "ability", "stream"}
    )
    operations: ClassVar[frozenset[str]] = frozenset({"chat", "complete", "embed"})
    decoder_class: ClassVar[type[OpenAIDecoder]] = GatewayDecoder

    def __init__(self, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
        super().__init__(settings, env)
        self.stream_refused = False
        """True once the gateway refused a streaming request (then none is asked again)."""
        self._token_ability: tuple[str, str] | None = None

    def explain(self, exc: APIError, request: HTTPRequest) -> APIError:
        return exc  # the gateway's own errors already say what to check

    @property
    def url(self) -> str:
        """The gateway's origin."""
        return self.require("url", ENV_URL).rstrip("/")

    @property
    def base_url(self) -> str:
        """``{url}/{ability}/v1`` for the configured ability."""
        return f"{self.url}/{quote(self.require('ability', ENV_ABILITY), safe='')}/v1"

    @property
    def streaming(self) -> bool:
        """Whether the settings ask the gateway to stream."""
        value = self.setting("stream", ENV_STREAM, False)
        return value is True or str(value).strip().lower() in _TRUE

    def credential(self) -> str | TokenEndpoint:
        return GatewayToken(
            self.url,
            self.require("appid", ENV_APPID),
            self.require("secret", ENV_SECRET),
            provider=self.name,
        )

    def ability(self, credential: str) -> str:
        """The ability id: the setting, else the ``abilityId`` the token names."""
        configured = self.setting("ability", ENV_ABILITY)
        if configured:
            return str(configured)
        cached = self._token_ability
        if cached is not None and cached[0] == credential:
            return cached[1]
        ability = (jwt_claims(credential) or {}).get("abilityId")
        if not isinstance(ability, str) or not ability:
            raise ConfigurationError(
                f"missing 'ability': set the {ENV_ABILITY} environment variable or pass "
                "providers={'gateway': {'ability': ...}} to aiollm.Client (the access token "
                "names no abilityId)",
                provider=self.name,
            )
        self._token_ability = (credential, ability)
        return ability

    def check(self, call: Call) -> None:
        super().check(call)
        temperature = call.params.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            raise InvalidRequestError(
                f"temperature must be a number from 0 to 2 (got {temperature!r})",
                provider=self.name,
            )

    def wants_stream(self, call: Call) -> bool:
        """Whether the request for ``call`` asks the gateway to stream."""
        return call.stream and self.streaming and not self.stream_refused

    def build_request(self, prepared: Prepared, credential: str) -> HTTPRequest:
        call = prepared.call
        stream = self.wants_stream(call)
        key = ("stream" if stream else "whole") + ("-bare" if self.no_stream_options else "")
        body = prepared.alternates.get(key)
        if body is None:
            body = prepared.alternates[key] = json_body(self.body(call, stream=stream))
        url = f"{self.url}/{quote(self.ability(credential), safe='')}/v1{self.path(call)}"
        return HTTPRequest(
            "POST",
            url,
            headers={
                "Content-Type": "application/json",
                "Accept": "text/event-stream" if stream else "application/json",
            },
            params={"accessToken": credential},
            body=body,
            secrets=(credential,),
        )

    def failed(self, prepared: Prepared, error: AiollmError) -> None:
        """A refusal to stream is remembered: every later request is a non-streaming one."""
        super().failed(prepared, error)
        if isinstance(error, StreamingRefusedError) and self.streaming and not self.stream_refused:
            self.stream_refused = True
            log.info("%s: the gateway refused to stream; using non-streaming requests", self.name)

    def decoder(
        self, prepared: Prepared, status: int, headers: Mapping[str, str]
    ) -> ResponseDecoder:
        call = prepared.call
        return GatewayDecoder(call, status, headers, fallback=call.stream and self.streaming)

    def prepare(self, call: Call) -> Prepared:
        self.check(call)
        stream = self.wants_stream(call)
        body = json_body(self.body(call, stream=stream))
        return Prepared(call, body, alternates={"stream" if stream else "whole": body})
