"""Baidu Qianfan / wenxinworkshop chat (``qianfan/<endpoint>``).

Settings: ``ak`` (``QIANFAN_AK``) and ``sk`` (``QIANFAN_SK``) — the application's API Key and
Secret Key, exchanged at ``/oauth/2.0/token`` for an access token that is cached, refreshed
ahead of ``expires_in`` and refreshed once more when the service rejects it — or a ready
``access_token`` (``QIANFAN_ACCESS_TOKEN``, used as is, never refreshed); ``base_url``
(``QIANFAN_BASE_URL``, an origin, default ``https://aip.baidubce.com``). AK/SK given as
settings win over a token given as a setting, which wins over the environment.

The model is the endpoint name: ``qianfan/llama_2_7b`` posts to
``{base_url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/llama_2_7b?access_token=...``.

Wire facts this module deals with (see the README's *Qianfan* section):

- errors are ``{"error_code": n, "error_msg": ...}`` bodies, usually with HTTP 200 and
  ``application/json`` even for stream requests, sometimes ``text/html``, sometimes a bare
  JSON line inside an event stream;
- streams are ``data: {json}`` frames with ``sentence_id`` and ``is_end`` (no ``[DONE]``); the
  text is the concatenation of the frames' ``result`` s; ``sentence_id`` gaps or repeats only
  raise a :class:`SentenceOrderWarning`; the final usage is the ``is_end`` frame's;
- ``messages`` must be non-empty, odd in number, ``user``/``assistant`` alternating from and
  to ``user``, with at most 2000 characters in the last one (checked before sending).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import msgspec

from .._redact import redact_text
from ..auth import CachedToken, StaticToken
from ..errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from ..events import Event, Finish, SafetyNotice, TextDelta, Usage
from ..framing import ServerSentEvent, SSEItem, as_event
from ..transport import Transport
from ._base import (
    Call,
    Codec,
    HTTPRequest,
    Provider,
    TokenSourceLike,
    error_for_status,
    json_body,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_CONTENT_CHARS",
    "QianfanCodec",
    "QianfanProvider",
    "QianfanToken",
    "SentenceOrderWarning",
    "error_from_code",
    "trim_history",
    "validate_messages",
]

DEFAULT_BASE_URL = "https://aip.baidubce.com"
TOKEN_PATH = "/oauth/2.0/token"
CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
MAX_CONTENT_CHARS = 2000
"""The service's limit on the last message, and on all contents together (older turns go)."""
MAX_RECORDED_ANOMALIES = 100
DEFAULT_TOKEN_TIMEOUT = 30.0

PROVIDER = "qianfan"

_ENDPOINT_RE = re.compile(r"[A-Za-z0-9._~-]+")


class SentenceOrderWarning(UserWarning):
    """A Qianfan stream's ``sentence_id`` s skipped or repeated a number.

    The text is kept as it arrived (the frames come in order over one connection); the
    anomalies are listed in ``Completion.extra["sentence_anomalies"]``. Some test servers and
    gateways always send ``0``: silence it with ``warnings.simplefilter("ignore",
    SentenceOrderWarning)``.
    """


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


# -- wire structs (only the fields we read) ---------------------------------------------------
class _WireUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class WireChat(msgspec.Struct):
    """A chat response, a stream frame, or an error body."""

    id: str | None = None
    result: str | None = None
    sentence_id: int | None = None
    is_end: bool | None = None
    is_truncated: bool | None = None
    need_clear_history: bool | None = None
    ban_round: int | None = None
    finish_reason: str | None = None
    usage: _WireUsage | None = None
    error_code: int | str | None = None
    error_msg: str | None = None


class _WireToken(msgspec.Struct):
    access_token: str | None = None
    expires_in: float | None = None
    error: str | None = None
    error_description: str | None = None
    error_code: int | str | None = None
    error_msg: str | None = None


class _Sentence(msgspec.Struct, gc=False):
    """What a stream frame must show to be a plain sentence (the common frame)."""

    result: str | None = None
    sentence_id: int | None = None
    is_end: bool | None = None
    need_clear_history: bool | None = None
    ban_round: int | None = None
    error_code: int | str | None = None


_decode_chat = msgspec.json.Decoder(WireChat).decode
_decode_sentence = msgspec.json.Decoder(_Sentence).decode
_decode_token = msgspec.json.Decoder(_WireToken).decode

_HTML_CODE = re.compile(r'"?error_code"?\s*[:=]\s*"?(\d+)')
_HTML_MSG = re.compile(r'"?error_msg"?\s*[:=]\s*"((?:[^"\\]|\\.)*)"')
_TAGS = re.compile(r"<[^>]*>|\s+")


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[: limit * 4].decode("utf-8", "replace")
    text = _TAGS.sub(" ", text).strip()
    return redact_text(text[:limit])


def _json_string(escaped: str) -> str:
    """The text of a JSON string literal's body (as is if it does not decode)."""
    try:
        return str(msgspec.json.decode(f'"{escaped}"'))
    except msgspec.DecodeError:
        return escaped


def _error_code(code: int | str | None) -> int | str | None:
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
class QianfanToken(CachedToken):
    """An access token from ``/oauth/2.0/token`` (AK/SK), cached and refreshed ahead of expiry.

    Single flight (see :class:`~aiollm.auth.CachedToken`): concurrent callers that find no
    valid token share one request. Failures are typed: a rejected AK/SK is an
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.url = base_url.rstrip("/") + TOKEN_PATH
        self._credentials = (ak, sk)
        self._timeout = timeout

    def request(self) -> HTTPRequest:
        """The token request: a POST with an empty body, the credentials in the query."""
        ak, sk = self._credentials
        return HTTPRequest(
            "POST",
            self.url,
            headers={"Accept": "application/json"},
            params={"grant_type": "client_credentials", "client_id": ak, "client_secret": sk},
            secrets=(ak, sk),
        )

    async def fetch(self, transport: Transport) -> tuple[str, float | None]:
        """Fetch a new access token: ``(token, expires_in)``."""
        timeout = transport.timeout
        if self._timeout is not None:
            timeout = replace(timeout, first_byte=self._timeout, total=self._timeout)
        status, headers, body = await transport.request_bytes(
            self.request(), timeout=timeout, provider=PROVIDER
        )
        return self.parse(status, headers, body)

    def parse(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, float | None]:
        """Read a token response (raising the typed error a failure stands for)."""
        secrets = self._credentials
        try:
            wire = _decode_token(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            snippet = redact_text(_snippet(body), secrets)
            retry_after = parse_retry_after(headers)
            if status >= 300:
                raise error_for_status(
                    status,
                    f"the access token request failed: {snippet or f'HTTP {status}'}",
                    provider=PROVIDER,
                    retry_after=retry_after,
                ) from None
            raise ProtocolError(
                f"the token endpoint {self.url} answered with something that is not a token "
                f"response: {snippet!r}",
                provider=PROVIDER,
            ) from None
        if wire.error or (status >= 300 and not wire.access_token):
            description = wire.error_description or wire.error_msg or wire.error or f"HTTP {status}"
            description = redact_text(description, secrets)
            cls: type[APIError] = AuthenticationError
            if status >= 500 or status == 408:
                cls = ServerError
            elif status == 429:
                cls = RateLimitError
            raise cls(
                f"the access token request was rejected: {description}; check QIANFAN_AK and "
                "QIANFAN_SK",
                provider=PROVIDER,
                status=status,
                code=wire.error or _error_code(wire.error_code),
                retry_after=parse_retry_after(headers),
            )
        code = _error_code(wire.error_code)
        if code is not None:
            raise error_from_code(code, redact_text(wire.error_msg or "", secrets), status=status)
        if not wire.access_token:
            raise ProtocolError("the token response has no access_token", provider=PROVIDER)
        return wire.access_token, wire.expires_in

    def __repr__(self) -> str:
        return f"QianfanToken({self.url!r}, {super().__repr__()})"


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
        if role != expected:
            raise fail(
                f"roles must alternate user, assistant, user, ... starting with user: "
                f"message {i} has role {role!r}, expected {expected!r}"
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


# -- codec --------------------------------------------------------------------------------------
class QianfanCodec(Codec):
    """Decodes Qianfan chat bodies: sentence frames, whole responses and error bodies."""

    provider: ClassVar[str] = PROVIDER

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self._next_sentence = 0
        self._frames = 0
        self._warned = False
        self._safety_sent = False
        self._seen = False
        self._status = 200
        self._retry_after: float | None = None

    def on_response(self, status: int, headers: Mapping[str, str]) -> None:
        self._status = status
        self._retry_after = parse_retry_after(headers)

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, document: bytes | str) -> WireChat:
        """One JSON document as a :class:`WireChat` (ProtocolError if it is not one)."""
        try:
            return _decode_chat(document)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            text = document if isinstance(document, str) else document.decode("utf-8", "replace")
            raise ProtocolError(
                f"malformed JSON frame ({exc}): {redact_text(text[:120])!r}",
                provider=self.provider,
            ) from None

    def check_error(self, wire: WireChat) -> None:
        """Raise the typed error if ``wire`` is an error body (in a 2xx response)."""
        code = _error_code(wire.error_code)
        if code is not None:
            raise error_from_code(
                code,
                wire.error_msg,
                status=self._status,
                request_id=wire.id or self.request_id,
                retry_after=self._retry_after,
            )

    def on_sse_batch(self, events: Sequence[SSEItem], out: list[Event]) -> None:
        append = out.append
        for event in events:
            raw = event if type(event) is bytes else event.raw  # type: ignore[union-attr]
            if self._seen and raw:
                # The common frame, decoded with only the fields that tell it apart: the
                # next sentence, no error, end or safety flag. Any other goes to on_frame.
                try:
                    sentence = _decode_sentence(raw)
                except msgspec.DecodeError:
                    pass
                else:
                    if (
                        sentence.sentence_id == self._next_sentence
                        and sentence.error_code is None
                        and not sentence.is_end
                        and not sentence.need_clear_history
                        and sentence.ban_round is None
                    ):
                        self._next_sentence += 1
                        self._frames += 1
                        result = sentence.result
                        if result:
                            append(TextDelta(result))
                        continue
            out += self.on_frame(as_event(event))
            if self.done:
                return

    def on_frame(self, event: ServerSentEvent) -> list[Event]:
        """One server-sent event, any kind (:meth:`on_sse_batch` takes plain sentences inline)."""
        raw = event.raw
        data = event.data if raw is None else raw
        if not data:
            return []
        try:
            wire = _decode_chat(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            # Invalid UTF-8 in undecoded bytes reads as U+FFFD; else the ProtocolError.
            wire = self.decode(event.text())
        self.check_error(wire)
        return self._frame(wire, final=False)

    def on_json(self, document: bytes) -> list[Event]:
        # A whole response; on a stream request an error body (or a server that ignored
        # ``stream``), which is then the whole answer too.
        wire = self.decode(document)
        self.check_error(wire)
        return self._frame(wire, final=wire.is_end is None)

    def on_other(self, body: bytes, content_type: str) -> list[Event]:
        text = body[:4096].decode("utf-8", "replace")
        match = _HTML_CODE.search(text)
        if match is not None:
            msg = _HTML_MSG.search(text)
            message = _json_string(msg.group(1)) if msg is not None else _snippet(body)
            raise error_from_code(
                int(match.group(1)),
                message,
                status=self._status,
                request_id=self.request_id,
                retry_after=self._retry_after,
            )
        raise ProtocolError(
            f"expected an event stream or JSON but got a {content_type or 'untyped'} body "
            f"with no error_code: {_snippet(body)!r}; check QIANFAN_BASE_URL",
            provider=self.provider,
        )

    def on_end(self) -> list[Event]:
        if self.done:
            return []
        if self.call.stream and self._seen:
            raise ProtocolError(
                f"the stream ended after {self._frames} frame(s) without its is_end frame "
                "(cut short)",
                provider=self.provider,
            )
        raise ProtocolError("the response body ended with no result", provider=self.provider)

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        try:
            wire = _decode_chat(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            wire = None
        if wire is not None:
            code = _error_code(wire.error_code)
            if code is not None:
                return error_from_code(
                    code,
                    wire.error_msg,
                    status=status,
                    request_id=wire.id,
                    retry_after=parse_retry_after(headers),
                )
        return error_for_status(
            status,
            _snippet(body, 300) or f"HTTP {status}",
            provider=self.provider,
            retry_after=parse_retry_after(headers),
        )

    # -- frames -----------------------------------------------------------------------------
    def _frame(self, wire: WireChat, *, final: bool) -> list[Event]:
        """The events of one frame (``final``: a whole non-streamed response)."""
        self._seen = True
        self._frames += 1
        if wire.id and self.request_id is None:
            self.request_id = wire.id
        if wire.sentence_id is not None:
            self._check_sentence(wire.sentence_id)
        out: list[Event] = []
        if wire.result:
            out.append(TextDelta(wire.result))
        if wire.need_clear_history is not None:
            self.extra["need_clear_history"] = wire.need_clear_history
        if wire.ban_round is not None:
            self.extra["ban_round"] = wire.ban_round
        if wire.need_clear_history and not self._safety_sent:
            self._safety_sent = True
            out.append(
                SafetyNotice(
                    clear_history=True,
                    ban_round=wire.ban_round,
                    message="the input was judged unsafe: reset the conversation"
                    + (
                        " (the current question)"
                        if wire.ban_round == -1
                        else f" (round {wire.ban_round})"
                        if wire.ban_round is not None
                        else ""
                    ),
                )
            )
        if final or wire.is_end:
            usage = wire.usage
            if usage is not None:
                out.append(Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens))
            if wire.is_truncated:
                reason = "length"
            elif wire.finish_reason and wire.finish_reason != "normal":
                reason = wire.finish_reason
            else:
                reason = "stop"
            if wire.is_truncated is not None:
                self.extra["is_truncated"] = wire.is_truncated
            out.append(Finish(reason))
            self.done = True
        return out

    def _check_sentence(self, sentence_id: int) -> None:
        expected = self._next_sentence
        self._next_sentence = sentence_id + 1
        if sentence_id == expected:
            return
        anomalies: list[dict[str, int]] = self.extra.setdefault("sentence_anomalies", [])
        if len(anomalies) < MAX_RECORDED_ANOMALIES:
            anomalies.append(
                {"frame": self._frames - 1, "expected": expected, "sentence_id": sentence_id}
            )
        if not self._warned:
            self._warned = True
            kind = "repeated" if sentence_id < expected else "skipped"
            warnings.warn(
                f"qianfan stream sentence_id {kind}: expected {expected}, got {sentence_id} "
                "(text kept in arrival order; see Completion.extra['sentence_anomalies'])",
                SentenceOrderWarning,
                stacklevel=2,
            )


# -- provider -----------------------------------------------------------------------------------
_BODY_FIELDS = (
    "temperature",
    "top_p",
    "penalty_score",
    "system",
    "stop",
    "max_output_tokens",
    "user_id",
)


class QianfanProvider(Provider):
    """``qianfan/<endpoint>``: wenxinworkshop chat with an OAuth access token."""

    name: ClassVar[str] = PROVIDER
    setting_keys: ClassVar[frozenset[str]] = frozenset(
        {"ak", "sk", "access_token", "base_url", "token_timeout"}
    )
    operations: ClassVar[frozenset[str]] = frozenset({"chat"})
    sse_data_line_events: ClassVar[bool] = True
    sse_json_line_events: ClassVar[bool] = True

    @property
    def base_url(self) -> str:
        """The service origin (token and chat URLs hang off it)."""
        return str(self.setting("base_url", "QIANFAN_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")

    def make_auth(self) -> TokenSourceLike:
        settings = self.settings
        if not (settings.get("ak") or settings.get("sk")):
            token = settings.get("access_token")
            if token:
                return StaticToken(str(token))
            if not (self.env.get("QIANFAN_AK") or self.env.get("QIANFAN_SK")):
                env_token = self.env.get("QIANFAN_ACCESS_TOKEN")
                if env_token:
                    return StaticToken(env_token)
                raise ConfigurationError(
                    "missing Qianfan credentials: set QIANFAN_AK and QIANFAN_SK (the "
                    "application's API Key and Secret Key) or QIANFAN_ACCESS_TOKEN, or pass "
                    "providers={'qianfan': {'ak': ..., 'sk': ...}} to aiollm.Client",
                    provider=self.name,
                )
        ak = self.require("ak", "QIANFAN_AK")
        sk = self.require("sk", "QIANFAN_SK")
        timeout = self.setting("token_timeout", None, DEFAULT_TOKEN_TIMEOUT)
        return QianfanToken(self.base_url, ak, sk, timeout=float(timeout))

    # -- requests -----------------------------------------------------------------------------
    def check(self, call: Call) -> None:
        super().check(call)
        if not _ENDPOINT_RE.fullmatch(call.model):
            raise InvalidRequestError(
                f"the model must be a Qianfan endpoint name such as 'llama_2_7b' "
                f"(letters, digits, '_', '-', '.'), got {call.model!r}",
                provider=self.name,
            )
        trim = call.params.get("trim_history", False)
        if not isinstance(trim, bool):
            raise InvalidRequestError("trim_history must be True or False", provider=self.name)
        if "stream" in call.params:
            raise InvalidRequestError(
                "do not pass stream=: use client.stream() or client.chat()", provider=self.name
            )
        self.prepare(call)

    def prepare(self, call: Call) -> tuple[str | None, list[dict[str, Any]], int]:
        """``(system, messages, dropped)``: the leading system message split off, the rules
        checked and, with ``trim_history=True``, the oldest pairs dropped (``dropped`` of them)."""
        if call.messages is not None:
            messages = list(call.messages)
        else:
            messages = [{"role": "user", "content": call.prompt or ""}]
        system: str | None = None
        if messages and isinstance(messages[0], Mapping) and messages[0].get("role") == "system":
            content = messages[0].get("content")
            if not isinstance(content, str):
                raise InvalidRequestError(
                    "messages rule: the system message must have a string 'content'",
                    provider=self.name,
                )
            if call.params.get("system") is not None:
                raise InvalidRequestError(
                    "pass the system prompt either as a leading system message or as system=, "
                    "not both",
                    provider=self.name,
                )
            system = content
            messages = messages[1:]
        validate_messages(messages)
        dropped = 0
        if call.params.get("trim_history"):
            trimmed = trim_history(messages)
            dropped = len(messages) - len(trimmed)
            messages = trimmed
        return system, messages, dropped

    def body(self, call: Call) -> dict[str, Any]:
        """The JSON body of ``call``."""
        system, messages, _ = self.prepare(call)
        body: dict[str, Any] = {"messages": messages}
        if system is not None:
            body["system"] = system
        params = dict(call.params)
        params.pop("trim_history", None)
        if "max_tokens" in params:
            max_tokens = params.pop("max_tokens")
            params.setdefault("max_output_tokens", max_tokens)
        for key, value in params.items():
            if value is not None or key not in _BODY_FIELDS:
                body[key] = value
        if call.stream:
            body["stream"] = True
        return body

    def chat_url(self, call: Call) -> str:
        """The chat URL of ``call``'s endpoint (without the access token)."""
        return f"{self.base_url}{CHAT_PATH}{call.model}"

    def build_request(self, call: Call, credential: str) -> HTTPRequest:
        return HTTPRequest(
            "POST",
            self.chat_url(call),
            headers={"Content-Type": "application/json"},
            params={"access_token": credential},
            body=json_body(self.body(call)),
            secrets=(credential,) if credential else (),
        )

    def new_codec(self, call: Call) -> Codec:
        codec = QianfanCodec(call)
        if call.params.get("trim_history"):
            codec.extra["trimmed_messages"] = self.prepare(call)[2]
        return codec
