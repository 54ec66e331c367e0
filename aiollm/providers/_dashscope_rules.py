"""DashScope's sans-IO rules: documented parameter ranges, error codes, the text modes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

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
    status_class,
)

PROVIDER: Final = "dashscope"


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
        return status_class(status)
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


def event_status(comments: tuple[str, ...]) -> int | None:
    """The status in an event's ``:HTTP_STATUS/NNN`` comment, if any."""
    for comment in comments:
        if comment.startswith("HTTP_STATUS/"):
            try:
                return int(comment[12:].strip())
            except ValueError:
                return None
    return None


# -- text modes ------------------------------------------------------------------------------
INCREMENTAL: Final = "incremental"
CUMULATIVE: Final = "cumulative"


class Snapshot(NamedTuple):
    """What one frame says, channel by channel: reasoning, text and tool calls.

    ``tools`` holds ``(index, id, name, arguments)`` per call, in the frame's order. In a cumulative
    stream each frame's snapshot *extends* the one before it: every channel starts with the
    previous one's, and the calls so far keep their id and name.
    """

    reasoning: str = ""
    text: str = ""
    tools: tuple[tuple[int, str, str, str], ...] = ()

    def extends(self, prev: Snapshot) -> bool:
        """Whether this snapshot continues ``prev`` as a cumulative frame would."""
        if not (self.text.startswith(prev.text) and self.reasoning.startswith(prev.reasoning)):
            return False
        if len(self.tools) < len(prev.tools):
            return False
        return all(
            t[1] == p[1] and t[2] == p[2] and t[3].startswith(p[3])
            for t, p in zip(self.tools, prev.tools, strict=False)
        )


class ModeDetector:
    """Tells a cumulative stream from an incremental one when the caller did not choose.

    The request asked for incremental frames, so the server either obliged or ignored the
    parameter. Each non-empty frame is a :class:`Snapshot` (plain text works too). The first
    is applied at once (it reads the same either way). Until the mode is known, each later
    snapshot ``t`` is compared with the previous one ``p``:

    1. ``t`` does not extend ``p`` → **incremental** (certain: a cumulative frame always
       extends the one before it; e.g. a text that does not start with the previous text, or
       a tool-call fragment with an empty id after the call's first fragment);
    2. ``t == p`` → held back, undecided (a repeated token, or a frame that added nothing);
    3. ``t`` extends ``p`` → held back; the **second** extension → **cumulative**;
    4. the last frame (with a ``finish_reason``) or the end of the body while frames are held
       back → **cumulative**.

    The result says which frames to apply now: with ``incremental``, every held frame as it
    is; with ``cumulative``, the latest one, read against the first (the decoder emits what it
    adds). So a server that ignores the parameter is always read exactly, at the cost of
    holding back its second frame until the third arrives. An obliging server is misread only
    when its first frames each repeat or extend the one before up to a second extension or the
    end (e.g. ``"ha"``, ``"haha"``, ``"hahaha"``, or a whole answer of one repeated token);
    ``incremental_output=False`` reads every frame as cumulative without detection.
    """

    __slots__ = ("extensions", "held", "prev", "started")

    def __init__(self) -> None:
        self.started = False
        self.prev: Any = None
        self.held: list[Any] = []
        self.extensions = 0

    def feed(self, frame: Any) -> tuple[str | None, list[Any]]:
        """Take one non-empty frame: ``(mode, or None while undecided; frames to apply)``."""
        if not self.started:
            self.started = True
            self.prev = frame
            return None, [frame]
        prev = self.prev
        if not _extends(frame, prev):
            return INCREMENTAL, [*self.held, frame]
        self.held.append(frame)
        if frame != prev:
            self.prev = frame
            self.extensions += 1
            if self.extensions >= 2:
                self.held = []
                return CUMULATIVE, [frame]
        return None, []

    def finish(self) -> tuple[str | None, list[Any]]:
        """The last frame arrived (or the body ended): held frames are read as cumulative."""
        if not self.held:
            return None, []
        self.held = []
        return CUMULATIVE, [self.prev]


def _extends(frame: Any, prev: Any) -> bool:
    if isinstance(frame, str):
        return frame.startswith(prev)
    return bool(frame.extends(prev))
