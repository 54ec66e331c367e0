"""A loopback OpenAI-compatible server that records what a quota holder sees.

It records every request's arrival time (``time.monotonic()``, one clock for every process
on the machine) and the number of requests open at once: a request is open from its arrival
until its response body ends (counted just before the end is sent) or its connection drops.
Knobs: frames per stream and the gap between them, ``tail`` (seconds between the last frame
and the end of the body), ``hold`` (an event every stream waits for after its first frame),
``usage`` (the total tokens reported), ``headers`` (extra response headers, a callable), and
``status`` answers (e.g. 429 with ``Retry-After``) for the next requests.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

MODEL = "openai/m"
MSGS = [{"role": "user", "content": "hello"}]


@dataclass
class QuotaServer:
    frames: int = 3
    gap: float = 0.0
    tail: float = 0.0
    usage: int = 10
    hold: asyncio.Event | None = None
    headers: Callable[[], dict[str, str]] | None = None
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    open: int = 0
    max_open: int = 0
    completed: int = 0
    dropped: int = 0
    """Responses whose connection the client closed before their body ended."""
    port: int = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        await request.read()
        if self.answers:
            status, headers = self.answers.pop(0)
            body = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}})
            return web.Response(status=status, text=body, headers=headers)
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        counted = True
        try:
            headers = {"Content-Type": "text/event-stream"}
            if self.headers is not None:
                headers.update(self.headers())
            resp = web.StreamResponse(headers=headers)
            await resp.prepare(request)
            for i in range(self.frames):
                delta = {"content": f"t{i} "}
                frame = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta}]}
                await resp.write(b"data: " + json.dumps(frame).encode() + b"\n\n")
                if i == 0 and self.hold is not None:
                    await self.hold.wait()
                if self.gap:
                    await asyncio.sleep(self.gap)
            done = {"index": 0, "delta": {}, "finish_reason": "stop"}
            usage = {"prompt_tokens": 1, "completion_tokens": self.usage - 1}
            usage["total_tokens"] = self.usage
            last = {"id": "c", "model": "m", "choices": [done], "usage": usage}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
            if self.tail:
                await asyncio.sleep(self.tail)
            if request.transport is None or request.transport.is_closing():
                self.dropped += 1
            self.open -= 1
            counted = False
            self.completed += 1
            await resp.write_eof()
            return resp
        finally:
            if counted:
                self.open -= 1

    def settings(self) -> dict[str, dict[str, str]]:
        return {"openai": {"base_url": f"http://127.0.0.1:{self.port}/v1", "api_key": "k"}}

    def most_in_one_second(self) -> int:
        times = sorted(self.arrivals)
        return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


@asynccontextmanager
async def serving(server: QuotaServer) -> AsyncIterator[QuotaServer]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


async def _main() -> None:  # pragma: no cover - a manual helper
    async with serving(QuotaServer(gap=float(sys.argv[1]) if len(sys.argv) > 1 else 0)) as s:
        print("PORT", s.port, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
