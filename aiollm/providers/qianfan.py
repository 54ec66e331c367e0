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
from typing import Any, ClassVar

import msgspec

from .._redact import redact_text
from ..errors import (
    APIError,
    ConfigurationError,
    InvalidRequestError,
    ProtocolError,
    error_for_status,
)
from ..events import (
    Event,
    Finish,
    ReasoningDelta,
    ResponseInfo,
    SafetyNotice,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from ..framing import SSEItem
from ..request import TokenEndpoint
from ._base import (
    Call,
    HTTPRequest,
    Prepared,
    Provider,
    ResponseDecoder,
    data_of,
    json_body,
    parse_retry_after,
)
from ._qianfan_rules import (
    DEFAULT_TOKEN_TIMEOUT,
    HTML_CODE,
    HTML_MSG,
    MAX_CONTENT_CHARS,
    PROVIDER,
    QianfanToken,
    error_code_of,
    error_from_code,
    json_string,
    native_messages,
    snippet,
    trim_history,
    validate_messages,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_CONTENT_CHARS",
    "QianfanDecoder",
    "QianfanProvider",
    "QianfanToken",
    "SentenceOrderWarning",
    "error_from_code",
    "trim_history",
    "validate_messages",
]

DEFAULT_BASE_URL = "https://aip.baidubce.com"
CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
MAX_RECORDED_ANOMALIES = 100


_ENDPOINT_RE = re.compile(r"[A-Za-z0-9._~-]+")


class SentenceOrderWarning(UserWarning):
    """A Qianfan stream's ``sentence_id`` s skipped or repeated a number.

    The text is kept as it arrived (the frames come in order over one connection); the
    anomalies are listed in ``Completion.extra["sentence_anomalies"]``. Some test servers and
    gateways always send ``0``: silence it with ``warnings.simplefilter("ignore",
    SentenceOrderWarning)``.
    """


# -- wire structs (only the fields we read) ---------------------------------------------------
class _WireUsage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class _FunctionCall(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None
    thoughts: str | None = None


class WireChat(msgspec.Struct, gc=False):
    """A chat response, a stream frame, or an error body."""

    id: str | None = None
    result: str | None = None
    sentence_id: int | None = None
    is_end: bool | None = None
    is_truncated: bool | None = None
    need_clear_history: bool | None = None
    ban_round: int | None = None
    finish_reason: str | None = None
    function_call: _FunctionCall | None = None
    usage: msgspec.Raw = msgspec.Raw()
    """Read from the ``is_end`` frame only (earlier frames' running counts are not used)."""
    error_code: int | str | None = None
    error_msg: str | None = None


_decode_chat = msgspec.json.Decoder(WireChat).decode
_decode_usage = msgspec.json.Decoder(_WireUsage).decode


# -- decoder ------------------------------------------------------------------------------------
class QianfanDecoder(ResponseDecoder):
    """Decodes Qianfan chat bodies: sentence frames, whole responses and error bodies.

    ``notes`` (e.g. ``trimmed_messages``) are reported with the first frame.
    """

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        call: Call,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        notes: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(call, status, headers)
        self._next_sentence = 0
        self._frames = 0
        self._warned = False
        self._safety_sent = False
        self._seen = False
        self._notes: dict[str, Any] = dict(notes or {})
        self._anomalies: list[dict[str, int]] = []
        self._clear: bool | None = None  # the last need_clear_history noted

    # -- the decoder contract ----------------------------------------------------------------
    def frames(self, items: Sequence[SSEItem], out: list[Event]) -> None:
        append = out.append
        sentence, clear, seen = self._next_sentence, self._clear, self._seen
        try:
            for item in items:
                data = item if type(item) is bytes else data_of(item)
                try:
                    wire = _decode_chat(data)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    if not data:
                        continue
                    # Invalid UTF-8 reads as U+FFFD; anything else is a malformed frame.
                    wire = self.decode(data.decode("utf-8", "replace"))
                if (
                    wire.sentence_id == sentence
                    and seen
                    and wire.error_code is None
                    and not wire.is_end
                    and wire.function_call is None
                    and wire.ban_round is None
                    and (wire.need_clear_history is None or wire.need_clear_history is clear)
                ):  # the common frame: the next sentence, nothing else to note (see _frame)
                    sentence += 1
                    if wire.result:
                        append(TextDelta(wire.result))
                    continue
                self._count(sentence)
                self.check_error(wire)
                self._frame(wire, False, out)
                sentence, clear, seen = self._next_sentence, self._clear, True
                if self.finished:
                    return
        finally:
            self._count(sentence)

    def _count(self, sentence: int) -> None:
        """Take in the common frames read since the counters were last written."""
        self._frames += sentence - self._next_sentence
        self._next_sentence = sentence

    def document(self, document: bytes, out: list[Event]) -> None:
        # A whole response; on a stream request an error body (or a server that ignored
        # ``stream``), which is then the whole answer too.
        wire = self.decode(document)
        self.check_error(wire)
        self._frame(wire, wire.is_end is None, out)

    def other(self, body: bytes) -> None:
        text = body[:4096].decode("utf-8", "replace")
        match = HTML_CODE.search(text)
        if match is not None:
            msg = HTML_MSG.search(text)
            message = json_string(msg.group(1)) if msg is not None else snippet(body)
            raise error_from_code(
                int(match.group(1)),
                message,
                status=self.status,
                retry_after=parse_retry_after(self.headers),
            )
        raise ProtocolError(
            f"expected an event stream or JSON but got a {self.content_type or 'untyped'} "
            f"body with no error_code: {snippet(body)!r}; check QIANFAN_BASE_URL",
            provider=self.provider,
        )

    def finish(self, out: list[Event]) -> None:
        if self.call.stream and self._seen:
            raise ProtocolError(
                f"the stream ended after {self._frames} frame(s) without its is_end frame "
                "(cut short)",
                provider=self.provider,
            )
        raise ProtocolError("the response body ended with no result", provider=self.provider)

    def http_error(self, body: bytes) -> APIError:
        status, headers = self.status, self.headers
        try:
            wire = _decode_chat(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            wire = None
        if wire is not None:
            code = error_code_of(wire.error_code)
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
            snippet(body, 300) or f"HTTP {status}",
            provider=self.provider,
            retry_after=parse_retry_after(headers),
        )

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
        if wire.error_code is None:
            return
        code = error_code_of(wire.error_code)
        if code is not None:
            raise error_from_code(
                code,
                wire.error_msg,
                status=self.status,
                request_id=wire.id,
                retry_after=parse_retry_after(self.headers),
            )

    def _frame(self, wire: WireChat, final: bool, out: list[Event]) -> None:
        """The events of one frame (``final``: a whole non-streamed response)."""
        self._frames += 1
        if not self._seen:
            self._seen = True
            notes = self._notes
            if wire.need_clear_history is not None:
                notes["need_clear_history"] = wire.need_clear_history
            if wire.ban_round is not None:
                notes["ban_round"] = wire.ban_round
            out.append(ResponseInfo(request_id=wire.id or None, notes=dict(notes)))
        sentence_id = wire.sentence_id
        if sentence_id is not None:
            if sentence_id == self._next_sentence:
                self._next_sentence = sentence_id + 1
            else:
                self._anomaly(sentence_id, out)
        if wire.result:
            out.append(TextDelta(wire.result))
        call = wire.function_call
        if call is not None:
            # ERNIE function calling: the model's reasoning for the call, then the call.
            if call.thoughts:
                out.append(ReasoningDelta(call.thoughts))
            out.append(ToolCallDelta(index=0, name=call.name, arguments=call.arguments or ""))
        clear, ban = wire.need_clear_history, wire.ban_round
        if (clear is not None and clear is not self._clear) or ban is not None:
            self._clear = clear if clear is not None else self._clear
            self._safety(wire, out)
        if final or wire.is_end:
            if wire.is_truncated is not None:
                self._note(out, is_truncated=wire.is_truncated)
            if len(wire.usage) and wire.usage != b"null":
                usage = self._read_usage(wire.usage)
                out.append(Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens))
            if wire.is_truncated:
                reason = "length"
            elif wire.finish_reason and wire.finish_reason != "normal":
                reason = wire.finish_reason
            else:
                reason = "stop"
            out.append(Finish(reason))
            self.finished = True

    def _read_usage(self, raw: msgspec.Raw) -> _WireUsage:
        try:
            return _decode_usage(raw)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"malformed usage ({exc})", provider=self.provider) from None

    def _note(self, out: list[Event], **notes: Any) -> None:
        """Report the notes whose values changed."""
        changed = {k: v for k, v in notes.items() if k not in self._notes or self._notes[k] != v}
        if changed:
            self._notes.update(changed)
            out.append(ResponseInfo(notes=changed))

    def _safety(self, wire: WireChat, out: list[Event]) -> None:
        notes: dict[str, Any] = {}
        if wire.need_clear_history is not None:
            notes["need_clear_history"] = wire.need_clear_history
        if wire.ban_round is not None:
            notes["ban_round"] = wire.ban_round
        self._note(out, **notes)
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

    def _anomaly(self, sentence_id: int, out: list[Event]) -> None:
        expected = self._next_sentence
        self._next_sentence = sentence_id + 1
        if len(self._anomalies) < MAX_RECORDED_ANOMALIES:
            self._anomalies.append(
                {"frame": self._frames - 1, "expected": expected, "sentence_id": sentence_id}
            )
            out.append(ResponseInfo(notes={"sentence_anomalies": list(self._anomalies)}))
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

    @property
    def base_url(self) -> str:
        """The service origin (token and chat URLs hang off it)."""
        return str(self.setting("base_url", "QIANFAN_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")

    def credential(self) -> str | TokenEndpoint:
        settings = self.settings
        if not (settings.get("ak") or settings.get("sk")):
            token = settings.get("access_token")
            if token:
                return str(token)
            if not (self.env.get("QIANFAN_AK") or self.env.get("QIANFAN_SK")):
                env_token = self.env.get("QIANFAN_ACCESS_TOKEN")
                if env_token:
                    return env_token
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

    def prepare(self, call: Call) -> Prepared:
        """Validate ``call`` and build its body once: the rules checked, the history trimmed."""
        self.check(call)
        system, messages, dropped = self.messages(call)
        notes = {"trimmed_messages": dropped} if call.params.get("trim_history") else {}
        return Prepared(call, json_body(self.body(call, system, messages)), notes)

    def messages(self, call: Call) -> tuple[str | None, list[dict[str, Any]], int]:
        """``(system, messages, dropped)``: the leading system message split off, the rules
        checked and, with ``trim_history=True``, the oldest pairs dropped (``dropped`` of them)."""
        if call.messages is not None:
            messages = native_messages(list(call.messages))
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

    def body(
        self,
        call: Call,
        system: str | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of ``call`` (with its checked ``system`` and ``messages``)."""
        if messages is None:
            system, messages, _ = self.messages(call)
        body: dict[str, Any] = {"messages": messages}
        if system is not None:
            body["system"] = system
        params = dict(call.params)
        params.pop("trim_history", None)
        tools = params.pop("tools", None)
        if tools and "functions" not in params:
            # OpenAI-style tools as the service's ``functions``.
            params["functions"] = [
                tool.get("function", tool) if isinstance(tool, Mapping) else tool for tool in tools
            ]
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

    def build_request(self, prepared: Prepared, credential: str) -> HTTPRequest:
        return HTTPRequest(
            "POST",
            self.chat_url(prepared.call),
            headers={"Content-Type": "application/json"},
            params={"access_token": credential},
            body=prepared.body,
            secrets=(credential,) if credential else (),
        )

    def decoder(
        self, prepared: Prepared, status: int, headers: Mapping[str, str]
    ) -> ResponseDecoder:
        return QianfanDecoder(prepared.call, status, headers, notes=prepared.notes)
