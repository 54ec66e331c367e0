"""The embedded emulator: every provider's real wire format on 127.0.0.1.

:class:`Emulator` runs one aiohttp application with a :class:`~._service.Service` per provider
(``openai.py``, ``gateway.py``, ``dashscope.py``, ``qianfan.py``) and holds what they share:
the reply, the cadence, scripted and random faults, quotas and the statistics tests assert on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._call import add_rate_limit_headers
from ._faults import Fault, FaultKind, RandomFaults
from ._quota import Quota
from ._reply import Reply, default_tokens, split_tokens
from ._service import Service
from ._stats import LOG_LIMIT, Stats
from .dashscope import DashScope, DashScopeState
from .gateway import Gateway, GatewayState
from .openai import OpenAI, OpenAIState
from .qianfan import Qianfan, QianfanState

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["PROVIDERS", "Cadence", "Emulator", "EmulatorState"]

PROVIDERS: dict[str, type[Service]] = {
    "dashscope": DashScope,
    "qianfan": Qianfan,
    "gateway": Gateway,
    "openai": OpenAI,
}
"""The emulated providers by name."""


@dataclass
class Cadence:
    """Token timing: ``first_token`` seconds before the first token, ``per_token`` between tokens.

    The first content frame is due ``first_token`` after the response head, each next one
    ``per_token`` after the previous one went out: a late frame (a busy machine) delays the
    rest rather than releasing a burst. ``emu.stats.log`` records when each frame was sent.
    """

    first_token: float = 0.0
    per_token: float = 0.0


@dataclass
class EmulatorState:
    """Each provider's switches and server-side state (``emu.state.dashscope.gzip = True``)."""

    dashscope: DashScopeState = field(default_factory=DashScopeState)
    qianfan: QianfanState = field(default_factory=QianfanState)
    gateway: GatewayState = field(default_factory=GatewayState)
    openai: OpenAIState = field(default_factory=OpenAIState)


class Emulator:
    """Serve the providers on 127.0.0.1; ``async with Emulator() as emu: emu.url``.

    ``reply`` fixes the reply text; otherwise each prompt gets a deterministic reply of
    ``reply_tokens`` tokens (:meth:`set_reply` and :meth:`queue_reply` script richer replies).
    ``cadence`` sets token timing. :meth:`script` queues faults; ``fault_rate`` injects random
    faults into that share of requests, reproducibly for ``seed`` (:meth:`set_fault_rate`).
    ``quotas`` limits providers' request rates (:meth:`set_quota`). ``emu.stats.log`` keeps
    at least the last ``log_limit`` requests frame by frame, ``stats.bodies`` and
    ``stats.request_times`` as many (None: all of them; 0: none).
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
        providers: Iterable[str] = tuple(PROVIDERS),
        fault_rate: float = 0.0,
        seed: int | None = None,
        fault_kinds: Sequence[FaultKind] | None = None,
        quotas: Mapping[str, Quota] | None = None,
        log_limit: int | None = LOG_LIMIT,
    ) -> None:
        self.host = host
        self.port = port
        self.cadence = cadence or Cadence()
        self.reply = reply
        self.reply_tokens = reply_tokens
        self.stats = Stats(log_limit=log_limit)
        self.state = EmulatorState()
        self.replies: dict[str, Reply] = {}
        """Scripted replies by model name (as the request names it)."""
        self.random_faults: RandomFaults | None = None
        self._faults: dict[str, list[Fault]] = {}
        self._queued_replies: dict[str, list[Reply]] = {}
        self._runner: web.AppRunner | None = None
        self.providers = tuple(providers)
        unknown = set(self.providers) - set(PROVIDERS)
        if unknown:
            raise ValueError(f"unknown providers: {sorted(unknown)}")
        self.services: dict[str, Service] = {name: PROVIDERS[name](self) for name in PROVIDERS}
        self.app = web.Application(
            client_max_size=64 * 1024 * 1024, middlewares=[self._count_in_flight]
        )
        self.app.on_response_prepare.append(add_rate_limit_headers)
        for name in self.providers:
            self.services[name].add_routes(self.app)
        if fault_rate:
            self.set_fault_rate(fault_rate, seed=seed, kinds=fault_kinds)
        for name, quota in (quotas or {}).items():
            self.set_quota(name, quota)

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

    def client(self, **kwargs: Any) -> Client:
        """An ``aiollm.Client`` for this emulator (extra keyword arguments pass through)."""
        from ..client import Client

        kwargs.setdefault("env", {})
        return Client(providers=self.settings(), **kwargs)

    # -- faults and quotas --------------------------------------------------------------------
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

    def set_fault_rate(
        self, rate: float, *, seed: int | None = None, kinds: Sequence[FaultKind] | None = None
    ) -> None:
        """Inject a random fault into a share ``rate`` of the calls (0 turns it off).

        The faults come from each provider's menu (resets, stalls, keep-alive-only stalls,
        429 with and without ``Retry-After``, 5xx, the provider's HTTP-200 and in-stream error
        bodies, truncated and malformed frames, wrong content types); ``kinds`` keeps only
        those kinds. The same ``seed`` gives each provider the same sequence of faults.
        Token endpoints take scripted faults only.
        """
        faults = RandomFaults(rate, seed, kinds)  # checks the rate
        self.random_faults = faults if rate > 0 else None

    def set_quota(self, provider: str, quota: Quota | None) -> None:
        """Limit ``provider``'s calls to ``quota`` (None removes it); see :class:`Quota`."""
        self.services[provider].set_quota(quota)

    # -- replies ------------------------------------------------------------------------------
    def set_reply(self, model: str, reply: Reply | None) -> None:
        """Answer every request for ``model`` with ``reply`` (None: the default text again)."""
        if reply is None:
            self.replies.pop(model, None)
        else:
            self.replies[model] = reply

    def queue_reply(self, provider: str, *replies: Reply) -> None:
        """Answer the next requests to ``provider``'s chat route with ``replies``, in order."""
        self._queued_replies.setdefault(provider, []).extend(replies)

    def next_reply(self, provider: str, model: str) -> Reply | None:
        """The scripted reply for the next request (queued first, then by model), or None."""
        queue = self._queued_replies.get(provider)
        if queue:
            return queue.pop(0)
        return self.replies.get(model)

    def reply_tokens_for(self, prompt: str, max_tokens: int | None = None) -> list[str]:
        """The reply's tokens: :attr:`reply` split, or a deterministic function of ``prompt``."""
        if self.reply is not None:
            tokens = split_tokens(self.reply)
        else:
            tokens = default_tokens(prompt, self.reply_tokens)
        if max_tokens is not None and max_tokens >= 0:
            tokens = tokens[:max_tokens]
        return tokens
