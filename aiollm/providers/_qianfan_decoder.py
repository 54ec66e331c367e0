"""The Qianfan response decoder: sentence frames, whole responses, safety notes and errors."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from .._redact import redact_text
from ..errors import APIError, ProtocolError, error_for_status
from ..events import (
    Event,
    Finish,
    ReasoningDelta,
    ResponseInfo,
    SafetyNotice,
    TextDelta,
    ToolCallDelta,
)
from ..framing import SSEItem
from ._base import Call, ResponseDecoder, data_of, parse_retry_after
from ._qianfan_rules import (
    HTML_CODE,
    HTML_MSG,
    PROVIDER,
    error_code_of,
    error_from_code,
    json_string,
    snippet,
)
from ._qianfan_wire import WireChat, decode_chat, decode_usage
from ._wire_common import TokenCounts

__all__ = ["MAX_RECORDED_ANOMALIES", "QianfanDecoder", "SentenceOrderWarning"]

MAX_RECORDED_ANOMALIES = 100


class SentenceOrderWarning(UserWarning):
    """A Qianfan stream's ``sentence_id`` s skipped or repeated a number.

    The text is kept as it arrived (the frames come in order over one connection); the
    anomalies are listed in ``Completion.extra["sentence_anomalies"]``. Some test servers and
    gateways always send ``0``: silence it with ``warnings.simplefilter("ignore",
    SentenceOrderWarning)``.
    """


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
                    wire = decode_chat(data)
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
            wire = decode_chat(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            wire = None
        error = self.error_of(wire) if wire is not None else None
        if error is not None:
            return error
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
            return decode_chat(document)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            text = document if isinstance(document, str) else document.decode("utf-8", "replace")
            raise ProtocolError(
                f"malformed JSON frame ({exc}): {redact_text(text[:120])!r}",
                provider=self.provider,
            ) from None

    def check_error(self, wire: WireChat) -> None:
        """Raise the typed error if ``wire`` is an error body (in a 2xx response)."""
        if wire.error_code is not None:
            error = self.error_of(wire)
            if error is not None:
                raise error

    def error_of(self, wire: WireChat) -> APIError | None:
        """The typed error of an error body (None if ``wire`` carries no error code)."""
        code = error_code_of(wire.error_code)
        if code is None:
            return None
        return error_from_code(
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
            elif wire.need_clear_history is False:
                self._clear = False  # reported just now, and nothing unsafe to say
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
                out.append(self._read_usage(wire.usage).event())
            if wire.is_truncated:
                reason = "length"
            elif wire.finish_reason and wire.finish_reason != "normal":
                reason = wire.finish_reason
            else:
                reason = "stop"
            out.append(Finish(reason))
            self.finished = True

    def _read_usage(self, raw: msgspec.Raw) -> TokenCounts:
        try:
            return decode_usage(raw)
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
