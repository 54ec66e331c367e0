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

import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from ..errors import (
    AiollmError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ContentFilterError,
    ContextOverflowError,
    InvalidRequestError,
    QuotaExceededError,
    ServerError,
    StreamingRefusedError,
)
from ..request import TokenEndpoint
from ._base import Call, HTTPRequest, Prepared, ResponseDecoder, json_body
from ._gateway_token import (
    TOKEN_PATH,
    GatewayToken,
    jwt_claims,
    mask_jwts,
    parse_token_response,
    token_lifetime,
)
from ._openai_errors import ErrorCode
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
_TOKEN_WORDS = ("token", "令牌")
_REJECT_WORDS = ("expire", "invalid", "illegal", "过期", "失效", "无效", "非法")
_TRUE = frozenset({"1", "true", "yes", "on"})


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
        return mask_jwts(super().clean_message(message))

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
