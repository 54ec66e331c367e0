"""One request being answered by the emulator: its :class:`Call` (body, fault, quota slot,
cadence clock, log of sent frames) and the :class:`Frame` s it sends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._stats import RequestRecord, SentFrame

if TYPE_CHECKING:
    from ._emulator import Emulator
    from ._faults import Fault
    from ._quota import QuotaState
    from ._service import Service

__all__ = ["Call", "ClientGone", "Frame", "add_rate_limit_headers"]

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
