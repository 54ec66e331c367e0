"""Alibaba DashScope native text generation (``dashscope/<model>``).

Settings: ``api_key`` (``DASHSCOPE_API_KEY``, required), ``base_url`` (``DASHSCOPE_BASE_URL``, the
origin, default ``https://dashscope.aliyuncs.com``; the client appends
``/api/v1/services/aigc/text-generation/generation``) and ``workspace`` (``DASHSCOPE_WORKSPACE``,
sent as ``X-DashScope-WorkSpace``).

Requests carry ``input.messages`` (or ``input.prompt``) and every other keyword argument in
``parameters``, unchanged. Streaming is switched on by the ``X-DashScope-SSE: enable`` header;
the event stream has ``id:``/``event:``/``:HTTP_STATUS/NNN``/``data:`` lines.

Stream text modes (the codec turns both into deltas whose concatenation is the final text, with
work linear in the bytes received):

- ``incremental_output=False``: every frame carries the whole text so far (the service's own
  default). A frame must start with the text so far; the part after it is the delta. A frame
  that does not is a :class:`~aiollm.ProtocolError`. An empty text means "no new text".
- Not given (or ``True``): the request asks for ``incremental_output: true``, where every frame
  carries only new text, and the codec checks that the server obliged, because some models and
  gateways ignore the parameter (see :class:`ModeDetector` for the exact rule). Once a stream
  is known to be cumulative, it is checked as above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgspec

from ..auth import StaticToken
from ..errors import (
    APIError,
    AuthenticationError,
    ContentFilterError,
    ContextOverflowError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from ..events import Event, Finish, TextDelta, Usage
from ..framing import ServerSentEvent, SSEItem
from ._base import Call, Codec, HTTPRequest, Provider, TokenSourceLike, json_body, parse_retry_after

__all__ = [
    "DEFAULT_BASE_URL",
    "GENERATION_PATH",
    "MODEL_LIMITS",
    "DashScopeCodec",
    "DashScopeProvider",
    "ModeDetector",
    "ParamRange",
    "error_for",
]

PROVIDER: Final = "dashscope"
DEFAULT_BASE_URL: Final = "https://dashscope.aliyuncs.com"
GENERATION_PATH: Final = "/api/v1/services/aigc/text-generation/generation"


# -- validation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamRange:
    """A documented parameter range: ``[low, high]``, or ``[low, high)`` when ``high_open``."""

    low: float
    high: float
    high_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else str(x)

        return f"[{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number of the right kind inside the range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if value < self.low:
            return False
        return value < self.high if self.high_open else value <= self.high


_BAICHUAN: Final = {
    "temperature": ParamRange(0, 1),
    "top_p": ParamRange(0, 1, high_open=True),
    "top_k": ParamRange(0, 20, integer=True),
    "max_tokens": ParamRange(1, 8192, integer=True),
}

MODEL_LIMITS: Final[Mapping[str, Mapping[str, ParamRange]]] = {
    "baichuan2-turbo": _BAICHUAN,
    "baichuan2-turbo-192k": {**_BAICHUAN, "max_tokens": ParamRange(1, 2048, integer=True)},
}
"""Parameter ranges checked before sending, per documented model (others pass unchecked)."""

PROMPT_ONLY_MODELS: Final = frozenset({"chatyuan-large-v2"})
"""Models that take ``input.prompt`` only; ``messages`` for them are refused, not converted."""


# -- wire structs (only the fields read) -----------------------------------------------------
class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _Output(msgspec.Struct):
    text: str | None = None
    finish_reason: str | None = None
    choices: list[_Choice] | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


class WireResponse(msgspec.Struct):
    """A result (whole or one stream frame) or an error body."""

    output: _Output | None = None
    usage: _Usage | None = None
    request_id: str | None = None
    code: str | int | None = None
    message: str | None = None


class _TextOutput(msgspec.Struct, gc=False):
    text: str | None = None
    finish_reason: str | None = None
    choices: list[_Choice] | None = None


class _TextFrame(msgspec.Struct, gc=False):
    """What a stream frame must show to be a plain text frame (the common frame)."""

    output: _TextOutput | None = None


class _FrameUsage(msgspec.Struct, gc=False):
    usage: _Usage | None = None


_decode_response = msgspec.json.Decoder(WireResponse).decode
_decode_text_frame = msgspec.json.Decoder(_TextFrame).decode
_decode_frame_usage = msgspec.json.Decoder(_FrameUsage).decode


# -- errors ----------------------------------------------------------------------------------
_BILLING_CODES: Final = frozenset({"Arrearage", "CommodityNotPurchased"})
_SERVER_CODE_PREFIXES: Final = (
    "InternalError",
    "SystemError",
    "ModelUnavailable",
    "RequestTimeOut",
)


def _class_for(code: str, status: int | None, message: str) -> type[APIError]:
    """The error class for a DashScope ``code`` and the real HTTP ``status`` (None if unknown)."""
    if "DataInspectionFailed" in code:
        return ContentFilterError
    if code in _BILLING_CODES or code.endswith("BillOverdue"):
        return QuotaExceededError
    if code.startswith("Throttling") or code == "LimitRequests":
        return RateLimitError
    if code == "InvalidApiKey":
        return AuthenticationError
    if code.startswith("AccessDenied") or code.endswith(".AccessDenied"):
        return PermissionDeniedError
    if code in ("ModelNotFound", "WorkSpaceNotFound"):
        return NotFoundError
    if code == "InvalidParameter" and "input length" in message.lower():
        return ContextOverflowError
    if status is not None and status >= 400:
        if status >= 500 or status == 408:
            return ServerError
        if status == 401:
            return AuthenticationError
        if status == 403:
            return PermissionDeniedError
        if status == 404:
            return NotFoundError
        if status == 429:
            return RateLimitError
        return InvalidRequestError
    # No usable status (an error inside a 200 body without HTTP_STATUS): go by the code.
    if code.startswith(_SERVER_CODE_PREFIXES):
        return ServerError
    if code.startswith(("InvalidParameter", "BadRequest", "InvalidURL", "UnsupportedOperation")):
        return InvalidRequestError
    return APIError


def error_for(
    code: str | int | None,
    message: str | None,
    *,
    status: int | None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The :class:`~aiollm.APIError` for a DashScope error (HTTP body or ``event:error`` frame)."""
    code_text = "" if code is None else str(code)
    text = message or code_text or (f"HTTP {status}" if status else "error")
    cls = _class_for(code_text, status, text)
    if cls is AuthenticationError:
        text += " (check the api_key setting or DASHSCOPE_API_KEY)"
    return cls(
        text,
        provider=PROVIDER,
        status=status,
        code=code if code not in (None, "") else None,
        request_id=request_id,
        retry_after=retry_after,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, item in headers.items():
            if key.lower() == lower:
                return item
    return value


def _event_status(event: ServerSentEvent) -> int | None:
    """The status in an event's ``:HTTP_STATUS/NNN`` comment, if any."""
    for comment in event.comments:
        if comment.startswith("HTTP_STATUS/"):
            try:
                return int(comment[12:].strip())
            except ValueError:
                return None
    return None


# -- text modes ------------------------------------------------------------------------------
_NOT_FINISHED: Final = frozenset({None, "null", ""})
"""``finish_reason`` values of a frame that is not the last (DashScope sends the string "null")."""
INCREMENTAL: Final = "incremental"
CUMULATIVE: Final = "cumulative"


class ModeDetector:
    """Tells a cumulative stream from an incremental one when the caller did not choose.

    The request asked for incremental frames, so the server either obliged or ignored the
    parameter. The first non-empty text is emitted at once (it reads the same either way).
    Until the mode is known, each later non-empty text ``t`` is compared with the previous
    non-empty text ``p``:

    1. ``t`` does not start with ``p`` (or is shorter) → **incremental** (certain: a cumulative
       frame always starts with the one before it);
    2. ``t == p`` → held back, undecided (a repeated token, or a frame that added no text);
    3. ``t`` extends ``p`` → held back; the **second** extension → **cumulative**;
    4. the last frame (with a ``finish_reason``) or the end of the body while frames are held
       back → **cumulative**.

    Held frames are then emitted: the part beyond the text already emitted (cumulative), or as
    they are (incremental). So a server that ignores the parameter is always read exactly, at
    the cost of holding back its second frame until the third arrives. An obliging server is
    misread only when its first frames each repeat or extend the one before up to a second
    extension or the end (e.g. ``"ha"``, ``"haha"``, ``"hahaha"``, or a whole answer of one
    repeated token); ``incremental_output=False`` reads every frame as cumulative without
    detection.
    """

    __slots__ = ("emitted", "extensions", "held", "prev")

    def __init__(self) -> None:
        self.emitted: str | None = None
        """The first text (the only one emitted while undecided)."""
        self.prev = ""
        self.held: list[str] = []
        self.extensions = 0

    def feed(self, text: str) -> tuple[str | None, list[str]]:
        """Take one non-empty text: ``(mode, or None while undecided; texts to emit)``."""
        if self.emitted is None:
            self.emitted = self.prev = text
            return None, [text]
        prev = self.prev
        if len(text) < len(prev) or not text.startswith(prev):
            return INCREMENTAL, [*self.held, text]
        self.held.append(text)
        if len(text) > len(prev):
            self.prev = text
            self.extensions += 1
            if self.extensions >= 2:
                return CUMULATIVE, self._cumulative_tail()
        return None, []

    def finish(self) -> tuple[str | None, list[str]]:
        """The last frame arrived (or the body ended): held frames are read as cumulative."""
        if not self.held:
            return None, []
        return CUMULATIVE, self._cumulative_tail()

    def _cumulative_tail(self) -> list[str]:
        assert self.emitted is not None
        tail = self.prev[len(self.emitted) :]
        self.held = []
        return [tail] if tail else []


# -- codec -----------------------------------------------------------------------------------
class DashScopeCodec(Codec):
    """Decodes DashScope text-generation bodies: whole results, stream frames and errors."""

    provider: ClassVar[str] = PROVIDER

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        choice = call.params.get("incremental_output")
        self.mode: str | None
        if not call.stream:
            self.mode = INCREMENTAL  # one whole result
        elif choice is False:
            self.mode = CUMULATIVE
        else:
            self.mode = None
        self._detector: ModeDetector | None = ModeDetector() if self.mode is None else None
        if call.stream and self.mode is not None:
            self.extra["stream_mode"] = self.mode
        self._text = ""
        """Cumulative mode: the text so far (the last frame's text object, never rebuilt)."""
        self.finished = False
        self._sse = False
        self._wire_usage: _Usage | None = None
        """The usage of the last frame that carried one (a running total)."""
        self._status_of: tuple[tuple[str, ...], int | None] = ((), None)
        """The last comments seen and the status they carry (the same on every frame)."""
        self._warm = False
        """A first stream frame went through on_frame, and its status was not an error."""
        self._usage_frame: bytes | None = None
        """The latest text frame taken inline: its usage is read only when needed."""
        self._documents = 0

    # -- public hooks ----------------------------------------------------------------------
    def on_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Take the ``x-request-id`` header (the body's ``request_id`` wins when present)."""
        request_id = _header(headers, "x-request-id")
        if request_id:
            self.request_id = request_id

    def on_sse_batch(self, events: Sequence[SSEItem], out: list[Event]) -> None:
        append = out.append
        for item in events:
            # DashScope frames carry an id and a status comment: they come as events.
            event = item if isinstance(item, ServerSentEvent) else ServerSentEvent(raw=item)
            raw = event.raw
            if (
                self._warm
                and raw
                and event.comments == self._status_of[0]
                and event.event != "error"
            ):
                # The common frame, decoded with only the fields that tell it apart: text
                # that is not the last, in a stream whose status is not an error. Its usage
                # (a running total) is read later, from the latest such frame, if needed.
                try:
                    frame = _decode_text_frame(raw)
                except msgspec.DecodeError:
                    pass
                else:
                    output = frame.output
                    if output is not None:
                        choices = output.choices
                        if choices is None:
                            text = output.text
                            finish = output.finish_reason
                        elif choices:
                            choice = choices[0]
                            message = choice.message
                            text = message.content if message is not None else None
                            finish = choice.finish_reason
                        else:
                            text = finish = "?"  # no choice at all: on_frame reads it
                        if finish is None or finish == "null" or finish == "":
                            self._usage_frame = raw
                            if text:
                                mode = self.mode
                                if mode is INCREMENTAL:
                                    append(TextDelta(text))
                                elif mode is CUMULATIVE:
                                    self._cumulative(text, event.id, out)
                                else:
                                    assert self._detector is not None
                                    self._resolve(self._detector.feed(text), out)
                            continue
            out += self.on_frame(event)
            if self.done:
                return

    def on_frame(self, event: ServerSentEvent) -> list[Event]:
        """One server-sent event, any kind (:meth:`on_sse_batch` takes plain text inline)."""
        self._sse = True
        self._read_usage_frame()
        raw = event.raw
        data = event.data if raw is None else raw
        if not data:
            return []
        comments = event.comments
        if comments != self._status_of[0]:
            self._status_of = (comments, _event_status(event))
        status = self._status_of[1]
        if event.event == "error":
            try:
                wire = _decode_response(data)
            except (msgspec.DecodeError, UnicodeDecodeError):
                message = event.text()
                try:
                    wire = _decode_response(message)
                except msgspec.DecodeError:
                    raise error_for(
                        None, message[:300], status=status, request_id=self.request_id
                    ) from None
        else:
            try:
                wire = _decode_response(data)
            except (msgspec.DecodeError, UnicodeDecodeError):
                # Invalid UTF-8 in undecoded bytes reads as U+FFFD; else the ProtocolError.
                wire = self.decode(event.text(), event)
        if event.event == "error" or (status is not None and status >= 400) or self.is_error(wire):
            raise error_for(
                wire.code,
                wire.message,
                status=status,
                request_id=wire.request_id or self.request_id,
            )
        events = self.events_of(wire, event.id)
        self._warm = self.call.stream
        return events

    def on_json(self, document: bytes) -> list[Event]:
        wire = self.decode(document, None)
        if self.is_error(wire):
            raise error_for(
                wire.code, wire.message, status=None, request_id=wire.request_id or self.request_id
            )
        self._documents += 1
        return self.events_of(wire, None)

    def on_end(self) -> list[Event]:
        out: list[Event] = []
        if self._detector is not None and not self.finished:
            self._resolve(self._detector.finish(), out)
        if self._sse:
            if not self.finished:
                raise ProtocolError(
                    "the event stream ended before a frame with a finish_reason",
                    provider=self.provider,
                )
        elif not self._documents:
            raise ProtocolError("the response body held no result", provider=self.provider)
        return out

    def http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        retry_after = parse_retry_after(headers)
        header_id = _header(headers, "x-request-id")
        try:
            wire = _decode_response(body)
        except (msgspec.DecodeError, ValueError):
            wire = None
        if wire is not None and (wire.code or wire.message):
            return error_for(
                wire.code,
                wire.message,
                status=status,
                request_id=wire.request_id or header_id,
                retry_after=retry_after,
            )
        snippet = body[:300].decode("utf-8", "replace").strip()
        return error_for(
            None,
            snippet or f"HTTP {status}",
            status=status,
            request_id=header_id,
            retry_after=retry_after,
        )

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, document: bytes | str, event: ServerSentEvent | None) -> WireResponse:
        """One JSON document (ProtocolError if it is not a DashScope object)."""
        try:
            return _decode_response(document)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            where = f" in event id {event.id!r}" if event is not None and event.id else ""
            raise ProtocolError(
                f"malformed JSON frame{where} ({exc}): {str(document)[:120]!r}",
                provider=self.provider,
            ) from None

    @staticmethod
    def is_error(wire: WireResponse) -> bool:
        """An error body: a non-empty ``code`` and no ``output``."""
        return wire.output is None and wire.code not in (None, "", 0, "0")

    def events_of(self, wire: WireResponse, frame_id: str | None) -> list[Event]:
        """The events of one result document or stream frame."""
        if wire.request_id:
            self.request_id = wire.request_id
        out: list[Event] = []
        text: str | None = None
        finish: str | None = None
        output = wire.output
        if output is not None:
            choices = output.choices
            if choices:
                choice = choices[0]
                if choice.message is not None:
                    text = choice.message.content
                finish = choice.finish_reason
            else:
                text = output.text
                finish = output.finish_reason
        last = finish is not None and finish != "null" and finish != ""
        if text:
            mode = self.mode
            if mode is INCREMENTAL:
                out.append(TextDelta(text))
            elif mode is CUMULATIVE:
                self._cumulative(text, frame_id, out)
            else:
                assert self._detector is not None
                self._resolve(self._detector.feed(text), out)
        if last and self._detector is not None:
            self._resolve(self._detector.finish(), out)
        if wire.usage is not None:
            self._wire_usage = wire.usage
        if last or not self.call.stream:
            usage = self.partial_usage()
            if usage is not None:
                out.append(usage)
        if last:
            out.append(Finish(finish))
            self.finished = True
            self.done = True
        elif not self.call.stream:
            self.finished = True
        return out

    def partial_usage(self) -> Usage | None:
        """The running usage total of the last frame that carried one."""
        try:
            self._read_usage_frame()
        except ProtocolError:
            pass  # a stream cut short keeps the last usage it could read
        usage = self._wire_usage
        if usage is None:
            return None
        total = usage.total_tokens
        if total is None and usage.input_tokens is not None and usage.output_tokens is not None:
            total = usage.input_tokens + usage.output_tokens
        return Usage(usage.input_tokens, usage.output_tokens, total)

    def _read_usage_frame(self) -> None:
        """Take the usage of the latest frame :meth:`on_sse_batch` took inline."""
        raw = self._usage_frame
        if raw is not None:
            self._usage_frame = None
            try:
                usage = _decode_frame_usage(raw).usage
            except msgspec.DecodeError as exc:
                raise ProtocolError(
                    f"malformed usage in a stream frame ({exc})", provider=self.provider
                ) from None
            if usage is not None:
                self._wire_usage = usage

    def _cumulative(self, text: str, frame_id: str | None, out: list[Event]) -> None:
        """Emit what a cumulative frame adds to the text so far (its own length in work)."""
        so_far = self._text
        n = len(so_far)
        if len(text) < n or not text.startswith(so_far):
            where = f" (event id {frame_id})" if frame_id else ""
            why = (
                "incremental_output=False was given, but the server may send only new text"
                if self.call.params.get("incremental_output") is False
                else "the first frames each extended the one before, so the stream was read "
                "as cumulative"
            )
            raise ProtocolError(
                f"a cumulative frame{where} does not continue the {n} characters received so "
                f"far (it has {len(text)}); {why}",
                provider=self.provider,
            )
        if len(text) > n:
            out.append(TextDelta(text[n:]))
            self._text = text

    def _resolve(self, result: tuple[str | None, list[str]], out: list[Event]) -> None:
        mode, texts = result
        out += [TextDelta(t) for t in texts if t]
        if mode is not None:
            detector = self._detector
            assert detector is not None
            self.mode = mode
            self.extra["stream_mode"] = mode
            if mode is CUMULATIVE:
                self._text = detector.prev
            self._detector = None


# -- provider --------------------------------------------------------------------------------
class DashScopeProvider(Provider):
    """``dashscope/<model>``: DashScope native text generation with an API key."""

    name: ClassVar[str] = PROVIDER
    operations: ClassVar[frozenset[str]] = frozenset({"chat", "complete"})
    setting_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "base_url", "workspace"})
    codec_class: ClassVar[type[DashScopeCodec]] = DashScopeCodec

    @property
    def base_url(self) -> str:
        """The origin (a trailing ``/api/v1`` is tolerated)."""
        url = str(self.setting("base_url", "DASHSCOPE_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")
        return url.removesuffix("/api/v1")

    @property
    def workspace(self) -> str | None:
        """The workspace id sent as ``X-DashScope-WorkSpace``, if set."""
        value = self.setting("workspace", "DASHSCOPE_WORKSPACE")
        return str(value) if value else None

    def make_auth(self) -> TokenSourceLike:
        return StaticToken(self.require("api_key", "DASHSCOPE_API_KEY"))

    def check(self, call: Call) -> None:
        super().check(call)
        if call.model in PROMPT_ONLY_MODELS and call.messages is not None:
            raise InvalidRequestError(
                f"{call.model} takes a prompt only, not messages: pass prompt=... in its own "
                "convention, e.g. prompt='用户：<question>\\n小元：'",
                provider=self.name,
                code="InvalidParameter",
            )
        limits = MODEL_LIMITS.get(call.model)
        if limits:
            for param, allowed in limits.items():
                value = call.params.get(param)
                if value is not None and not allowed.contains(value):
                    kind = "an integer" if allowed.integer else "a number"
                    raise InvalidRequestError(
                        f"{call.model}: {param}={value!r} is out of range; it must be {kind} "
                        f"in {allowed}",
                        provider=self.name,
                        code="InvalidParameter",
                    )

    def body(self, call: Call) -> dict[str, Any]:
        """The JSON body of ``call``: model, input and parameters."""
        if call.messages is not None and call.op == "chat":
            input_: dict[str, Any] = {"messages": call.messages}
        else:
            input_ = {"prompt": call.prompt or ""}
        parameters = dict(call.params)
        if call.stream and parameters.get("incremental_output") is None:
            parameters["incremental_output"] = True
        body: dict[str, Any] = {"model": call.model, "input": input_}
        if parameters:
            body["parameters"] = parameters
        return body

    def build_request(self, call: Call, credential: str) -> HTTPRequest:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        if call.stream:
            headers["Accept"] = "text/event-stream"
            headers["X-DashScope-SSE"] = "enable"
        else:
            headers["Accept"] = "application/json"
        workspace = self.workspace
        if workspace:
            headers["X-DashScope-WorkSpace"] = workspace
        return HTTPRequest(
            "POST",
            self.base_url + GENERATION_PATH,
            headers=headers,
            body=json_body(self.body(call)),
            secrets=(credential,),
        )

    def new_codec(self, call: Call) -> Codec:
        return self.codec_class(call)
