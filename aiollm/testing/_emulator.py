"""The embedded emulator: every provider's real wire format on 127.0.0.1.

Providers register their routes (``aiollm/testing/<provider>.py`` define ``register(emu, app)``);
this module holds what they share: the runner, the reply generator, the token cadence,
scripted faults and the server-side statistics tests assert on.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = ["ROUTE_MODULES", "Cadence", "Emulator", "Fault", "Stats"]

ROUTE_MODULES = {
    "dashscope": "aiollm.testing.dashscope",
    "qianfan": "aiollm.testing.qianfan",
    "gateway": "aiollm.testing.gateway",
    "openai": "aiollm.testing.openai",
}

FaultKind = Literal["error", "http", "reset", "stall", "malformed", "truncate"]


@dataclass
class Cadence:
    """Token timing: ``first_token`` seconds before the first token, ``per_token`` between tokens."""

    first_token: float = 0.0
    per_token: float = 0.0


@dataclass
class Fault:
    """One scripted failure, consumed by the next matching request.

    - ``error``: the provider's own error (``code``, ``message``) in its real wire shape. With
      ``after_tokens=0`` it answers the request (HTTP status ``status`` where the provider uses
      one, else its usual 200); with ``after_tokens>0`` it comes inside the stream after that
      many tokens.
    - ``http``: a bare HTTP ``status`` (with ``Retry-After: retry_after`` when set).
    - ``reset``: the connection is dropped after ``after_tokens`` tokens.
    - ``stall``: the server stops sending after ``after_tokens`` tokens (until the client leaves).
    - ``malformed``: a frame that is not valid JSON after ``after_tokens`` tokens.
    - ``truncate``: the body ends cleanly after ``after_tokens`` tokens, without the final frame.
    """

    kind: FaultKind = "error"
    code: str | int | None = None
    message: str = "scripted fault"
    status: int | None = None
    retry_after: float | None = None
    after_tokens: int = 0
    route: str | None = None
    """Only requests to this route name (e.g. ``"chat"``, ``"token"``) take the fault."""


@dataclass
class Stats:
    """What the server saw."""

    requests: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    """Requests being handled now (streamed or not)."""
    max_in_flight: int = 0
    open_streams: int = 0
    max_open_streams: int = 0
    disconnects: int = 0
    completed: int = 0
    request_times: list[float] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.requests.clear()
        self.in_flight = self.max_in_flight = 0
        self.open_streams = self.max_open_streams = self.disconnects = self.completed = 0
        self.request_times.clear()
        self.bodies.clear()


_WORDS = (
    "the quick brown fox jumps over a lazy dog while streams of tokens flow through "
    "async pipelines and every frame arrives in order 你好 世界 模型 回答 问题"
).split()

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into tokens whose concatenation is exactly ``text`` (CJK per character)."""
    tokens: list[str] = []
    for piece in _TOKEN_RE.findall(text):
        if any("\u3000" <= ch <= "\u9fff" for ch in piece) and len(piece.strip()) > 1:
            tokens.extend(piece)
        else:
            tokens.append(piece)
    return tokens


class ClientGone(Exception):
    """The client went away while the server was streaming."""


class Emulator:
    """Serve the providers on 127.0.0.1; ``async with Emulator() as emu: emu.url``.

    ``reply`` fixes the reply text; otherwise each prompt gets a deterministic reply of
    ``reply_tokens`` tokens. ``cadence`` sets token timing. ``script()`` queues faults.
    """

    api_key = "emu-dashscope-key"
    qianfan_ak = "emu-qianfan-ak"
    qianfan_sk = "emu-qianfan-sk"
    gateway_appid = "emu-appid"
    gateway_secret = "emu-gateway-secret"
    gateway_ability = "app-emulator"
    openai_key = "emu-openai-key"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cadence: Cadence | None = None,
        reply: str | None = None,
        reply_tokens: int = 24,
        providers: Iterable[str] = tuple(ROUTE_MODULES),
    ) -> None:
        self.host = host
        self.port = port
        self.cadence = cadence or Cadence()
        self.reply = reply
        self.reply_tokens = reply_tokens
        self.stats = Stats()
        self.state: dict[str, Any] = {}
        """Per-provider state the route modules keep (issued tokens and the like)."""
        self._faults: dict[str, list[Fault]] = {}
        self._runner: web.AppRunner | None = None
        self.app = web.Application(
            client_max_size=64 * 1024 * 1024, middlewares=[self._count_in_flight]
        )
        self.providers = tuple(providers)
        for name in self.providers:
            importlib.import_module(ROUTE_MODULES[name]).register(self, self.app)

    @web.middleware
    async def _count_in_flight(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        stats = self.stats
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await handler(request)
        finally:
            stats.in_flight -= 1

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start serving (port 0 picks a free port; see :attr:`url`)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The origin, e.g. ``http://127.0.0.1:43121``."""
        return f"http://{self.host}:{self.port}"

    # -- client configuration ---------------------------------------------------------------
    def settings(self) -> dict[str, dict[str, Any]]:
        """``aiollm.Client(providers=emu.settings())`` points every provider here."""
        return {
            "dashscope": {"api_key": self.api_key, "base_url": self.url},
            "qianfan": {"ak": self.qianfan_ak, "sk": self.qianfan_sk, "base_url": self.url},
            "gateway": {
                "url": self.url,
                "appid": self.gateway_appid,
                "secret": self.gateway_secret,
                "ability": self.gateway_ability,
            },
            "openai": {"base_url": f"{self.url}/v1", "api_key": self.openai_key},
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables (for ``aiollm chat`` and the official SDKs)."""
        return {
            "DASHSCOPE_API_KEY": self.api_key,
            "DASHSCOPE_BASE_URL": self.url,
            "QIANFAN_AK": self.qianfan_ak,
            "QIANFAN_SK": self.qianfan_sk,
            "QIANFAN_BASE_URL": self.url,
            "AIOLLM_GATEWAY_URL": self.url,
            "AIOLLM_GATEWAY_APPID": self.gateway_appid,
            "AIOLLM_GATEWAY_SECRET": self.gateway_secret,
            "AIOLLM_GATEWAY_ABILITY": self.gateway_ability,
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OPENAI_API_KEY": self.openai_key,
        }

    def client(self, **kwargs: Any) -> Any:
        """An ``aiollm.Client`` for this emulator (extra keyword arguments pass through)."""
        from ..client import Client

        kwargs.setdefault("env", {})
        return Client(providers=self.settings(), **kwargs)

    # -- faults -----------------------------------------------------------------------------
    def script(self, provider: str, *faults: Fault) -> None:
        """Queue faults for ``provider``: each is taken by the next request it matches."""
        self._faults.setdefault(provider, []).extend(faults)

    def take_fault(self, provider: str, route: str, *, exact: bool = False) -> Fault | None:
        """The next queued fault for this provider and route, removed from the queue.

        A fault without a ``route`` matches any route, unless ``exact`` (auxiliary routes such
        as token endpoints take only the faults addressed to them).
        """
        queue = self._faults.get(provider)
        if not queue:
            return None
        for i, fault in enumerate(queue):
            if fault.route == route or (fault.route is None and not exact):
                return queue.pop(i)
        return None

    def pending_faults(self, provider: str) -> int:
        """How many scripted faults are still waiting."""
        return len(self._faults.get(provider, ()))

    # -- replies ------------------------------------------------------------------------------
    def reply_tokens_for(self, prompt: str, max_tokens: int | None = None) -> list[str]:
        """The reply's tokens: :attr:`reply` split, or a deterministic function of ``prompt``."""
        if self.reply is not None:
            tokens = split_tokens(self.reply)
        else:
            seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big")
            n = len(_WORDS)
            tokens = []
            for i in range(self.reply_tokens):
                word = _WORDS[(seed // (i + 1) + i * 7919) % n]
                tokens.append(word if i == 0 else " " + word)
        if max_tokens is not None and max_tokens >= 0:
            tokens = tokens[:max_tokens]
        return tokens

    # -- streaming helpers for route modules ---------------------------------------------------
    def begin(self, route: str, body: Any = None) -> None:
        """Count a request (call at the start of every handler)."""
        self.stats.requests[route] += 1
        self.stats.request_times.append(time.monotonic())
        self.stats.bodies.append(body)

    async def paced(
        self, request: web.Request, tokens: list[str], fault: Fault | None
    ) -> AsyncIterator[tuple[int, str]]:
        """Yield ``(index, token)`` at the configured cadence, honouring stall/reset faults.

        Route modules write each token in their own format; they handle ``error``,
        ``malformed`` and ``truncate`` faults themselves by checking ``index`` against
        ``fault.after_tokens``. A ``reset`` drops the connection; a ``stall`` waits until
        the client leaves (then raises :class:`ClientGone`).
        """
        cadence = self.cadence
        for i, token in enumerate(tokens):
            if fault is not None and i == fault.after_tokens:
                if fault.kind == "reset":
                    self.drop(request)
                    raise ClientGone("scripted reset")
                if fault.kind == "stall":
                    await self.wait_gone(request)
            delay = cadence.first_token if i == 0 else cadence.per_token
            if delay > 0:
                await asyncio.sleep(delay)
            yield i, token

    @staticmethod
    def drop(request: web.Request) -> None:
        """Abort the connection at once (a reset mid-stream)."""
        transport = request.transport
        if transport is not None:
            transport.abort()

    @staticmethod
    async def wait_gone(request: web.Request) -> None:
        """Stall until the client closes the connection, then raise :class:`ClientGone`."""
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ClientGone("client left during a stall")
            await asyncio.sleep(0.005)

    async def open_stream(
        self, request: web.Request, content_type: str, *, compress: bool = False, status: int = 200
    ) -> web.StreamResponse:
        """Prepare a streaming response and count it as an open stream."""
        resp = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        if compress:
            resp.enable_compression(force=web.ContentCoding.gzip)
        await resp.prepare(request)
        self.stats.open_streams += 1
        self.stats.max_open_streams = max(self.stats.max_open_streams, self.stats.open_streams)
        return resp

    async def run_stream(
        self, request: web.Request, resp: web.StreamResponse, frames: AsyncIterator[bytes]
    ) -> web.StreamResponse:
        """Write ``frames`` to an opened stream; count completion or the client leaving."""
        try:
            async for frame in frames:
                await resp.write(frame)
            await resp.write_eof()
            self.stats.completed += 1
        except (ClientGone, ConnectionError):
            self.stats.disconnects += 1
        except asyncio.CancelledError:
            self.stats.disconnects += 1
            raise
        finally:
            self.stats.open_streams -= 1
        return resp
