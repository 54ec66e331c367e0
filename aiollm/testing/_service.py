"""What every emulated provider shares: one request's lifecycle and the one fault dispatch.

A provider is a :class:`Service` subclass: it adds its routes, checks requests in its own way,
and says how its wire writes an answer (frames, a whole document, error answers). This module
paces the frames at the emulator's cadence, applies scripted and random faults and the quota,
and logs every frame it sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from ._faults import COMMON_MENU, Fault, FaultChoice
from ._quota import Quota, QuotaState
from ._reply import Answer, Reply, build_answer, split_tokens
from ._stats import RequestRecord, SentFrame

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["Call", "ClientGone", "Frame", "Service", "add_rate_limit_headers"]

HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>"
)
KEEPALIVE = b": keep-alive\n\n"
STALL_POLL = 0.01
"""Seconds between checks whether a stalled client has left."""


RATE_LIMIT_HEADERS: Any = (
    web.RequestKey("aiollm.emulator.rate_limit_headers", dict)
    if hasattr(web, "RequestKey")  # aiohttp >= 3.12
    else "aiollm.emulator.rate_limit_headers"
)


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Copy a call's quota headers onto its answer (an ``on_response_prepare`` hook)."""
    headers = request.get(RATE_LIMIT_HEADERS)
    if headers:
        response.headers.update(headers)


class ClientGone(Exception):
    """The client went away while the server was answering."""


@dataclass(slots=True)
class Frame:
    """One frame of a streamed answer and what it delivers.

    ``paced`` frames carry content: each waits for the cadence and counts as one token for
    :attr:`Fault.after_tokens`; the others (finish, usage, ``[DONE]``) follow at once.
    """

    data: bytes
    text: str = ""
    reasoning: str = ""
    tool: str = ""
    paced: bool = True
    refusal: str = ""


def dumps(obj: Any) -> bytes:
    """Compact JSON with non-ASCII text as is (as the services send it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """``{"Retry-After": ...}`` when ``seconds`` is set."""
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


class Call:
    """One request being answered: its body, fault, log record and cadence clock."""

    def __init__(self, service: Service, request: web.Request, route: str, body: Any) -> None:
        self.service = service
        self.request = request
        self.route = route
        self.body = body
        emu = service.emu
        name = f"{service.name}.{route}"
        stats = emu.stats
        stats.requests[name] += 1
        self.number = stats.requests[name]
        now = time.monotonic()
        self.request_id = service.request_id(self)
        self.record = RequestRecord(name, self.request_id, now)
        stats.add(self.record, body)
        self.fault: Fault | None = None
        self.token: str | None = None
        """The access token the request carried (providers that use one)."""
        self.extra: dict[str, Any] = {}
        """What a provider keeps about the call between checking it and answering."""
        self.stream: web.StreamResponse | None = None
        """The streamed answer once its head is sent."""
        self._quota: QuotaState | None = None
        self._t0 = now
        self._released = now

    @property
    def emu(self) -> Emulator:
        """The emulator serving this call."""
        return self.service.emu

    def take_fault(self, frames: int, *, exact: bool = False, random: bool = True) -> Fault | None:
        """The scripted fault for this route, else (``random``) a random one.

        ``frames``: how many content frames the answer has. ``exact``: take only faults
        scripted for this route (token endpoints); it also turns random faults off.
        """
        emu = self.emu
        fault = emu.take_fault(self.service.name, self.route, exact=exact)
        if fault is None and emu.random_faults is not None and random and not exact:
            fault = emu.random_faults.draw(self.service.name, self.service.menu(), frames)
        if fault is not None:
            emu.stats.faults[fault.label] += 1
            self.record.fault = fault.label
            if fault.expire_token and self.token is not None:
                self.service.expire(self.token)
        self.fault = fault
        return fault

    def admit(self) -> web.Response | None:
        """None when the provider's quota admits this call, else its throttle answer."""
        state = self.service.quota_state
        if state is None:
            return None
        refused = state.admit()
        if self.service.rate_limit_headers:
            self.request[RATE_LIMIT_HEADERS] = state.headers()
        if refused is None:
            self._quota = state
            return None
        limit, retry_after = refused
        self.emu.stats.throttled[self.service.name] += 1
        self.record.fault = "throttled"
        return self.service.throttle_response(self, limit, retry_after)

    def release(self) -> None:
        """Give back the quota slot taken by :meth:`admit`."""
        if self._quota is not None:
            self._quota.release()
            self._quota = None

    def start_clock(self) -> None:
        """Count the cadence from now (when a stream's head went out)."""
        self._t0 = self._released = time.monotonic()

    async def pace(self, position: int) -> None:
        """Wait until content frame ``position`` is due.

        The first is due ``first_token`` after the start, each next one ``per_token`` after the
        previous one was released: a late frame delays the rest, none are sent in a burst.
        """
        cadence = self.emu.cadence
        if position == 0:
            due = self._t0 + cadence.first_token
        else:
            due = self._released + cadence.per_token
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._released = time.monotonic()

    def sent(self, frame: Frame, at: float | None = None) -> None:
        """Log a frame written at ``at`` (default: now; ``time.monotonic()``)."""
        self.record.frames.append(
            SentFrame(
                time.monotonic() if at is None else at,
                frame.text,
                frame.reasoning,
                frame.tool,
                len(frame.data),
                frame.refusal,
            )
        )

    async def drop(self) -> None:
        """Abort the connection (a reset), once what was written has left the process.

        Frames already written reach the client before the connection dies, so the log of
        sent frames stays true.
        """
        transport = self.request.transport
        if transport is None:
            return
        for _ in range(200):
            if transport.is_closing() or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        transport.abort()

    async def wait_gone(self, keepalive: float | None = None) -> None:
        """Stall until the client closes the connection, then raise :class:`ClientGone`.

        With ``keepalive`` (a stream), write a keep-alive comment every that many seconds.
        """
        resp = self.stream
        next_beat = time.monotonic()
        while True:
            transport = self.request.transport
            if transport is None or transport.is_closing():
                raise ClientGone("client left during a stall")
            if keepalive is not None and resp is not None and time.monotonic() >= next_beat:
                at = time.monotonic()
                await resp.write(KEEPALIVE)
                self.sent(Frame(KEEPALIVE, paced=False), at)
                next_beat = time.monotonic() + keepalive
            await asyncio.sleep(STALL_POLL)


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
