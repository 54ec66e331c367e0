"""What every emulated provider shares: the one fault dispatch around each request.

A provider is a :class:`Service` subclass: it adds its routes, checks requests in its own way,
and says how its wire writes an answer (frames, a whole document, error answers). This module
paces the frames at the emulator's cadence, applies scripted and random faults and the quota,
and logs every frame it sends; one request's own state is its :class:`~._call.Call`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from ._call import Call, ClientGone, Frame
from ._faults import COMMON_MENU, Fault, FaultChoice
from ._quota import Quota, QuotaState
from ._reply import Answer, Reply, build_answer, split_tokens

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["HTML_PAGE", "Service", "dumps", "retry_after_header"]

HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>"
)
"""What an ``content_type`` fault answers: a proxy's error page."""


def dumps(obj: Any) -> bytes:
    """Compact JSON with non-ASCII text as is (as the services send it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """``{"Retry-After": ...}`` when ``seconds`` is set."""
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Service:
    """One emulated provider. Subclasses set :attr:`name`, add routes and write the wire."""

    name: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "text/event-stream; charset=utf-8"
    extra_faults: ClassVar[tuple[FaultChoice, ...]] = ()
    """Provider-specific entries of the random-fault menu."""
    rate_limit_headers: ClassVar[bool] = False
    """Whether answers under a quota carry ``x-ratelimit-*`` headers."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.quota_state: QuotaState | None = None

    # -- what subclasses provide ----------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        """Register this provider's routes."""
        raise NotImplementedError

    def request_id(self, call: Call) -> str:
        """The id the answer to ``call`` carries."""
        return ""

    def error_response(self, call: Call, fault: Fault) -> web.Response:
        """The provider's answer to an ``error`` fault before anything was sent."""
        raise NotImplementedError

    def http_response(self, call: Call, fault: Fault) -> web.Response:
        """A bare HTTP status (an ``http`` fault): plain text, ``Retry-After`` when set."""
        status = fault.status or 429
        return web.Response(
            status=status,
            text=f"{status} {fault.message}",
            headers=retry_after_header(fault.retry_after),
        )

    def throttle_response(self, call: Call, limit: str, retry_after: float | None) -> web.Response:
        """The provider's answer to a request over its quota (``limit``: rate or concurrency)."""
        raise NotImplementedError

    def stream_frames(self, call: Call, answer: Answer) -> Iterable[Frame]:
        """The frames of a streamed answer."""
        raise NotImplementedError

    def error_frame(self, call: Call, fault: Fault, position: int) -> bytes:
        """An ``error`` fault inside a stream."""
        raise NotImplementedError

    def malformed_frame(self, call: Call, position: int) -> bytes:
        """A frame whose data is not valid JSON."""
        return b'data: {"id": "broken", "choices": [\n\n'

    def document(self, call: Call, answer: Answer) -> bytes:
        """The JSON body of a non-streamed answer."""
        raise NotImplementedError

    def expire(self, token: str) -> None:
        """Invalidate an access token this provider issued (a fault's ``expire_token``)."""

    def compress(self) -> bool:
        """Whether answers are gzip-encoded."""
        return False

    def error_in_stream(self, fault: Fault) -> bool:
        """Whether an ``error`` fault at 0 comes as the first frame of a stream."""
        return fault.in_stream

    # -- shared -------------------------------------------------------------------------------
    def fault_response(self, call: Call, fault: Fault) -> web.Response:
        """The answer to an ``error`` or ``http`` fault before anything was sent."""
        if fault.kind == "http":
            return self.http_response(call, fault)
        return self.error_response(call, fault)

    def menu(self) -> tuple[FaultChoice, ...]:
        """The random-fault menu: the common faults and this provider's own."""
        return COMMON_MENU + self.extra_faults

    def set_quota(self, quota: Quota | None) -> None:
        """Apply ``quota`` to this provider's calls (None: unlimited)."""
        self.quota_state = None if quota is None else QuotaState(quota)

    def endpoint(
        self,
        route: str,
        handle: Callable[[Call], Awaitable[web.StreamResponse]],
        *,
        query: bool = False,
    ) -> Handler:
        """An aiohttp handler: read the body, log the call, run ``handle``, log the outcome.

        ``query``: the request's parameters are in its query string (logged without secrets).
        """

        async def handler(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            body: Any
            if query:
                body = {k: v for k, v in request.query.items() if "secret" not in k}
            else:
                try:
                    body = json.loads(raw) if raw else None
                except (ValueError, RecursionError):
                    body = None
            call = Call(self, request, route, body)
            try:
                resp = await handle(call)
            except asyncio.CancelledError:
                call.record.outcome = call.record.outcome or "disconnected"
                raise
            finally:
                call.release()
            call.record.status = call.record.status or resp.status
            if not call.record.outcome:
                call.record.outcome = "completed" if resp.status < 400 else "error"
            return resp

        return handler

    def respond(self, call: Call, resp: web.Response, outcome: str = "error") -> web.Response:
        """Send a whole answer (logged as one frame) with the given outcome."""
        body = resp.body if isinstance(resp.body, bytes) else b""
        call.sent(Frame(body, paced=False))
        call.record.outcome = outcome
        call.record.status = resp.status
        if self.compress():
            resp.enable_compression(force=web.ContentCoding.gzip)
        return resp

    async def answer(self, call: Call, answer: Answer, streamed: bool) -> web.StreamResponse:
        """Answer ``call`` with ``answer``, applying its fault: the one dispatch for every provider."""
        fault = call.fault
        if fault is not None:
            if fault.kind == "http":
                return self.respond(call, self.fault_response(call, fault))
            if fault.kind == "content_type":
                page = web.Response(body=HTML_PAGE, content_type="text/html")
                return self.respond(call, page)
            if (
                fault.kind == "error"
                and fault.after_tokens == 0
                and not (streamed and self.error_in_stream(fault))
            ):
                return self.respond(call, self.error_response(call, fault))
        if streamed:
            return await self._stream(call, answer)
        return await self._whole(call, answer)

    def make_answer(self, call: Call, tokens: list[str], max_tokens: int | None) -> Answer:
        """The call's answer: a scripted reply if one is queued or set for the model, else text."""
        model = self.model_of(call)
        reply = self.emu.next_reply(self.name, model)
        if reply is not None:
            tokens = split_tokens(reply.text)
        else:
            reply = Reply()
        return build_answer(reply, tokens, max_tokens, call.request_id)

    def model_of(self, call: Call) -> str:
        """The model a call asks for."""
        body = call.body
        return str(body.get("model", "")) if isinstance(body, dict) else ""

    async def _whole(self, call: Call, answer: Answer) -> web.StreamResponse:
        fault = call.fault
        stats = self.emu.stats
        content = len(answer.pieces)
        try:
            for position in range(content):
                await call.pace(position)
                if fault is not None and position == fault.after_tokens:
                    if fault.kind == "reset":
                        call.record.outcome = "reset"
                        await call.drop()
                        raise ClientGone("scripted reset")
                    if fault.kind in ("stall", "keepalive"):
                        call.record.outcome = "stall"
                        await call.wait_gone()
                    if fault.kind == "error":
                        return self.respond(call, self.error_response(call, fault))
        except ClientGone:
            stats.disconnects += 1
            return web.Response(status=499)
        document = self.document(call, answer)
        outcome = "completed"
        if fault is not None and fault.kind == "malformed":
            document, outcome = b'{"id": "broken", "choices": [{"message": oops}]}', "malformed"
        elif fault is not None and fault.kind == "truncate":
            document, outcome = document[: len(document) // 2], "truncate"
        stats.completed += 1
        if outcome == "completed":
            tool = "".join(p.text for p in answer.pieces if p.kind == "tool")
            call.sent(Frame(document, answer.text, answer.reasoning, tool, refusal=answer.refusal))
        else:  # a broken document delivers nothing
            call.sent(Frame(document, paced=False))
        call.record.outcome = outcome
        resp = web.Response(body=document, content_type="application/json")
        if self.compress():
            resp.enable_compression(force=web.ContentCoding.gzip)
        return resp

    async def open_stream(self, call: Call) -> web.StreamResponse:
        """Send the head of a streamed answer and count the open stream."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": self.stream_content_type})
        if self.compress():
            resp.enable_compression(force=web.ContentCoding.gzip)
        await resp.prepare(call.request)
        stats = self.emu.stats
        stats.open_streams += 1
        stats.max_open_streams = max(stats.max_open_streams, stats.open_streams)
        call.record.streamed = True
        call.record.status = 200
        return resp

    async def _stream(self, call: Call, answer: Answer) -> web.StreamResponse:
        stats = self.emu.stats
        resp = await self.open_stream(call)
        call.stream = resp
        call.start_clock()
        fault = call.fault
        position = 0
        tail: list[Frame] = []  # the last frames go out with the end of the body, in one write
        try:
            for frame in self.stream_frames(call, answer):
                if frame.paced:
                    await self._write(call, resp, tail)
                    await call.pace(position)
                if fault is not None and position == fault.after_tokens:
                    await self._write(call, resp, tail)
                    await self._fire(call, resp, fault, position)
                    break
                tail.append(frame)  # written when the next frame is made, or with the end
                position += frame.paced
            else:
                if fault is not None and fault.after_tokens >= position:
                    await self._write(call, resp, tail)
                    await self._fire(call, resp, fault, position)
            at = time.monotonic()
            await resp.write_eof(b"".join(f.data for f in tail))
            for frame in tail:
                call.sent(frame, at)
            stats.completed += 1
            call.record.outcome = call.record.outcome or "completed"
        except (ClientGone, ConnectionError):
            stats.disconnects += 1
            call.record.outcome = call.record.outcome or "disconnected"
        except asyncio.CancelledError:
            stats.disconnects += 1
            call.record.outcome = call.record.outcome or "disconnected"
            raise
        finally:
            stats.open_streams -= 1
        return resp

    @staticmethod
    async def _write(call: Call, resp: web.StreamResponse, frames: list[Frame]) -> None:
        """Write ``frames`` (and empty the list); each is logged once written."""
        if not frames:
            return
        at = time.monotonic()
        await resp.write(b"".join(f.data for f in frames))
        for frame in frames:  # a failed write delivered nothing: log after it
            call.sent(frame, at)
        frames.clear()

    async def _fire(
        self, call: Call, resp: web.StreamResponse, fault: Fault, position: int
    ) -> None:
        """Apply a fault inside a stream; returns when the body should end cleanly."""
        kind = fault.kind
        if kind == "reset":
            call.record.outcome = "reset"
            await call.drop()
            raise ClientGone("scripted reset")
        if kind in ("stall", "keepalive"):
            call.record.outcome = kind
            await call.wait_gone(fault.interval if kind == "keepalive" else None)
        data = b""
        if kind == "error":
            data = self.error_frame(call, fault, position)
            call.record.outcome = "error"
        elif kind == "malformed":
            data = self.malformed_frame(call, position)
            call.record.outcome = "malformed"
        elif kind == "truncate":
            call.record.outcome = "truncate"
        if data:
            at = time.monotonic()
            await resp.write(data)
            call.sent(Frame(data, paced=False), at)
