"""The DashScope response decoder: stream frames (incremental or cumulative), results and errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import msgspec

from .._redact import redact_text
from ..errors import APIError, ProtocolError
from ..events import Event, Finish, ReasoningDelta, ResponseInfo, TextDelta, ToolCallDelta, Usage
from ..framing import SSEItem
from ._base import Call, ResponseDecoder, header, parse_retry_after
from ._dashscope_rules import (
    CUMULATIVE,
    INCREMENTAL,
    PROVIDER,
    ModeDetector,
    Snapshot,
    error_for,
    event_status,
)
from ._dashscope_wire import (
    WireMessage,
    WireResponse,
    decode_response,
    error_of,
    snapshot,
    usage_of,
)

__all__ = ["DashScopeDecoder"]

_PLAIN = "message"
"""The event type of a plain event (the data bytes alone)."""
_READ_WHOLE = "(read whole)"
"""Stands for a frame's finish reason when the common path leaves the frame to ``_result``
(reasoning or tool calls, or no choice at all)."""


def _id_of(item: SSEItem) -> str:
    """The event ID of a frame (read only when a message or the cumulative check needs it)."""
    return "" if type(item) is bytes else item.id  # type: ignore[union-attr]


class DashScopeDecoder(ResponseDecoder):
    """Decodes DashScope text-generation bodies: whole results, stream frames and errors."""

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self, call: Call, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(call, status, headers)
        choice = call.params.get("incremental_output")
        self.mode: str | None
        if not call.stream:
            self.mode = INCREMENTAL  # one whole result
        elif choice is False:
            self.mode = CUMULATIVE
        else:
            self.mode = None
        self._detector: ModeDetector | None = ModeDetector() if self.mode is None else None
        self.request_id = header(self.headers, "x-request-id") or None
        self._text = ""
        """Cumulative mode: the text so far (the last frame's text object, never rebuilt)."""
        self._reasoning = ""
        """Cumulative mode: the reasoning so far."""
        self._tools: tuple[tuple[int, str, str, str], ...] = ()
        """Cumulative mode: the tool calls so far, ``(index, id, name, arguments)``."""
        self._latest = b""
        """The latest stream frame, whose usage is the running total (read when needed)."""
        self._status_of: tuple[tuple[str, ...], str, int | None, bool] = ((), _PLAIN, None, True)
        """The last comments and event type seen (the same on every frame), the status they
        carry and whether they say the frame is a success."""
        self._seen = False
        self._documents = 0

    # -- the decoder contract --------------------------------------------------------------
    def frames(self, items: Sequence[SSEItem], out: list[Event]) -> None:
        append = out.append
        ready = self.mode is not None and self.call.stream and self._seen
        incremental, request_id = self.mode is INCREMENTAL, self.request_id
        seen_comments, seen_kind, status, healthy = self._status_of
        common = ready and healthy  # a frame of this stream may take the common path
        latest: bytes | None = None  # the latest common frame, written back
        try:
            for item in items:
                if type(item) is bytes:
                    data: bytes = item
                    if seen_comments or seen_kind is not _PLAIN:  # plain: no status comment
                        status, healthy, seen_comments, seen_kind = None, True, (), _PLAIN
                        common = ready
                else:
                    data = item.raw or item.data.encode()  # type: ignore[union-attr]
                    if item.comments is not seen_comments or item.event is not seen_kind:  # type: ignore[union-attr]
                        # Most frames share their block's comments and type (the same objects).
                        seen_comments, seen_kind = item.comments, item.event  # type: ignore[union-attr]
                        status = event_status(seen_comments)
                        healthy = (status is None or status < 400) and seen_kind != "error"
                        self._status_of = (seen_comments, seen_kind, status, healthy)
                        common = ready and healthy
                if not data:
                    continue
                try:
                    wire = decode_response(data)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    kind = "message" if type(item) is bytes else item.event  # type: ignore[union-attr]
                    wire = self._undecodable(data, kind, status, _id_of(item))
                output = wire.output
                if (
                    common
                    and output is not None  # not an error body
                    and (wire.request_id == request_id or not wire.request_id)
                ):
                    # The common frame: text (incremental or cumulative) that is not the last.
                    choices = output.choices
                    if choices is None:
                        finish, text = output.finish_reason, output.text
                    elif choices:
                        finish, message = choices[0].finish_reason, choices[0].message
                        if message is None:
                            text = None
                        elif message.reasoning_content or message.tool_calls:
                            finish, text = _READ_WHOLE, None
                        else:
                            text = message.content
                    else:
                        finish, text = _READ_WHOLE, None  # no choice at all
                    if not finish or finish == "null":  # (compared: a new string each frame)
                        latest = data
                        if text:
                            if incremental:
                                append(TextDelta(text))
                            else:
                                self._cumulative(text, _id_of(item), out)
                        continue
                if latest is not None:  # _result reads and writes it
                    self._latest, latest = latest, None
                error = error_of(wire)
                if not healthy or error is not None:
                    code, why = error or (wire.code, wire.message)
                    raise error_for(
                        code, why, status=status, request_id=wire.request_id or self.request_id
                    )
                self._result(wire, data, _id_of(item), out)
                if self.finished:
                    return
                ready = self.mode is not None and self.call.stream and self._seen
                incremental, request_id = self.mode is INCREMENTAL, self.request_id
                common = ready and healthy
        finally:
            if latest is not None:
                self._latest = latest

    def _undecodable(
        self, data: bytes, kind: str, status: int | None, frame_id: str
    ) -> WireResponse:
        """A frame whose bytes did not decode: invalid UTF-8 reads as U+FFFD; an ``error``
        event with plain text is the error; anything else is a malformed frame."""
        text = data.decode("utf-8", "replace")
        if kind == "error":
            try:
                return decode_response(text)
            except msgspec.DecodeError:
                raise error_for(
                    None, text[:300], status=status, request_id=self.request_id
                ) from None
        return self.decode(text, frame_id)

    def document(self, document: bytes, out: list[Event]) -> None:
        wire = self.decode(document, "")
        error = error_of(wire)
        if error is not None:
            code, message = error
            raise error_for(
                code, message, status=None, request_id=wire.request_id or self.request_id
            )
        if wire.output is None:
            raise ProtocolError(
                f"the response has no output (neither a result nor a known error shape): "
                f"{redact_text(document[:200].decode('utf-8', 'replace'))!r}",
                provider=self.provider,
            )
        self._documents += 1
        self._result(wire, document, "", out)

    def finish(self, out: list[Event]) -> None:
        if self._detector is not None:
            self._resolve(self._detector.finish(), "", out)
        if self._sse is not None:
            raise ProtocolError(
                "the event stream ended before a frame with a finish_reason",
                provider=self.provider,
            )
        if not self._documents:
            raise ProtocolError("the response body held no result", provider=self.provider)

    def abort(self) -> list[Event]:
        """The running usage total of the latest frame (not yet emitted)."""
        try:
            usage = self._read_usage(self._latest)
        except ProtocolError:
            return []  # a cut stream whose latest usage is unreadable has none
        return [usage] if usage is not None else []

    def http_error(self, body: bytes) -> APIError:
        status, headers = self.status, self.headers
        retry_after = parse_retry_after(headers)
        header_id = header(self.headers, "x-request-id")
        try:
            wire = decode_response(body)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            wire = None
        error = error_of(wire) if wire is not None else None
        if wire is not None and (error is not None or wire.code or wire.message):
            code, message = error or (wire.code, wire.message)
            return error_for(
                code,
                message,
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
    def decode(self, document: bytes | str, frame_id: str) -> WireResponse:
        """One JSON document (ProtocolError if it is not a DashScope object)."""
        try:
            return decode_response(document)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            where = f" in event id {frame_id!r}" if frame_id else ""
            raise ProtocolError(
                f"malformed JSON frame{where} ({exc}): {str(document)[:120]!r}",
                provider=self.provider,
            ) from None

    def _result(self, wire: WireResponse, data: bytes, frame_id: str, out: list[Event]) -> None:
        """The events of one result document or stream frame (``data``, its bytes)."""
        request_id = wire.request_id
        if not self._seen:
            self._seen = True
            notes = {"stream_mode": self.mode} if self.call.stream and self.mode else {}
            if request_id:
                self.request_id = request_id
            if self.request_id or notes:
                out.append(ResponseInfo(request_id=self.request_id, notes=notes))
        elif request_id and request_id != self.request_id:
            self.request_id = request_id
            out.append(ResponseInfo(request_id=request_id))
        text: str | None = None
        message: WireMessage | None = None
        finish: str | None = None
        output = wire.output
        if output is not None:
            choices = output.choices
            if choices:
                choice = choices[0]
                message = choice.message
                if message is not None:
                    text = message.content
                    if not (message.reasoning_content or message.tool_calls):
                        message = None  # plain text: the common frame
                finish = choice.finish_reason
            else:
                text = output.text
                finish = output.finish_reason
        last = finish is not None and finish != "null" and finish != ""
        mode = self.mode
        if message is not None:
            frame = snapshot(message)
            if mode is INCREMENTAL:
                self._incremental(frame, out)
            elif mode is CUMULATIVE:
                self._cumulative_frame(frame, frame_id, out)
            else:
                assert self._detector is not None
                self._resolve(self._detector.feed(frame), frame_id, out)
        elif text:
            if mode is INCREMENTAL:
                out.append(TextDelta(text))
            elif mode is CUMULATIVE:
                self._cumulative(text, frame_id, out)
            else:
                assert self._detector is not None
                self._resolve(self._detector.feed(Snapshot(text=text)), frame_id, out)
        if last and self._detector is not None:
            self._resolve(self._detector.finish(), frame_id, out)
        if last or not self.call.stream:
            # The last frame's running total, or if it has none the one of the frame before.
            usage = self._read_usage(data) or self._read_usage(self._latest)
            if usage is not None:
                out.append(usage)
            self._latest = b""
        else:
            self._latest = data
        if last:
            out.append(Finish(finish))
            self.finished = True

    def _read_usage(self, data: bytes) -> Usage | None:
        if not data:
            return None
        try:
            return usage_of(data)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"malformed usage ({exc})", provider=self.provider) from None

    def _cumulative(self, text: str, frame_id: str, out: list[Event]) -> None:
        """Emit what a cumulative frame adds to the text so far (its own length in work)."""
        tail = self._tail(self._text, text, "text", frame_id)
        if tail:
            out.append(TextDelta(tail))
            self._text = text

    def _tail(self, so_far: str, now: str, what: str, frame_id: str) -> str:
        """What ``now`` adds to ``so_far`` in a cumulative stream (ProtocolError if nothing
        continues it; an empty ``now`` adds nothing)."""
        n = len(so_far)
        if not now or (len(now) == n and now == so_far):
            return ""
        if len(now) < n or not now.startswith(so_far):
            where = f" (event id {frame_id})" if frame_id else ""
            why = (
                "incremental_output=False was given, but the server may send only new text"
                if self.call.params.get("incremental_output") is False
                else "the first frames each extended the one before, so the stream was read "
                "as cumulative"
            )
            raise ProtocolError(
                f"a cumulative frame{where} does not continue the {n} characters of {what} "
                f"received so far (it has {len(now)}); {why}",
                provider=self.provider,
            )
        return now[n:]

    def _cumulative_frame(self, frame: Snapshot, frame_id: str, out: list[Event]) -> None:
        """Emit what a cumulative frame adds: reasoning, text, then each call's new part."""
        tail = self._tail(self._reasoning, frame.reasoning, "reasoning", frame_id)
        if tail:
            out.append(ReasoningDelta(tail))
            self._reasoning = frame.reasoning
        self._cumulative(frame.text, frame_id, out)
        calls = frame.tools
        if not calls:
            return  # no tool_calls in this frame: nothing new
        known = self._tools
        for i, (index, id_, name, arguments) in enumerate(calls):
            if i >= len(known):
                out.append(
                    ToolCallDelta(
                        index=index, id=id_ or None, name=name or None, arguments=arguments
                    )
                )
                continue
            _, known_id, known_name, so_far = known[i]
            if (id_ and known_id and id_ != known_id) or (
                name and known_name and name != known_name
            ):
                raise ProtocolError(
                    f"a cumulative frame (event id {frame_id}) changes tool call {i} "
                    f"({known_name!r} became {name!r})",
                    provider=self.provider,
                )
            tail = self._tail(so_far, arguments, f"tool call {i}'s arguments", frame_id)
            if tail:
                out.append(ToolCallDelta(index=index, arguments=tail))
        if len(calls) >= len(known):
            self._tools = calls
        else:
            self._tools = calls + known[len(calls) :]

    def _incremental(self, frame: Snapshot, out: list[Event]) -> None:
        """Emit an incremental frame as it is."""
        if frame.reasoning:
            out.append(ReasoningDelta(frame.reasoning))
        if frame.text:
            out.append(TextDelta(frame.text))
        for index, id_, name, arguments in frame.tools:
            out.append(
                ToolCallDelta(index=index, id=id_ or None, name=name or None, arguments=arguments)
            )

    def _resolve(
        self, result: tuple[str | None, list[Snapshot]], frame_id: str, out: list[Event]
    ) -> None:
        """Apply the detector's answer: the first frame (as the cumulative baseline), held
        frames as they are (incremental), or the latest against the first (cumulative)."""
        mode, frames = result
        if mode is None:
            for frame in frames:
                self._cumulative_frame(frame, frame_id, out)  # from nothing: as it is
            return
        self.mode = mode
        self._detector = None
        if mode is INCREMENTAL:  # the first frame's cumulative baseline is not needed
            self._text, self._reasoning, self._tools = "", "", ()
        out.append(ResponseInfo(notes={"stream_mode": mode}))
        for frame in frames:
            if mode is CUMULATIVE:
                self._cumulative_frame(frame, frame_id, out)
            else:
                self._incremental(frame, out)
