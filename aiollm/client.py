"""``Client``: the one object users hold. It owns the session, the providers and their limits."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from ._attempts import Attempts
from ._checks import check_call, check_client_config
from .auth import TokenSource, token_source
from .errors import ConfigurationError, ProtocolError
from .events import Completion, Embeddings
from .hooks import CallObserver, HookObserver, Hooks, Observers
from .limits import Limits, ProviderLimiter, RetryPolicy, quota_identity
from .providers import Call, Provider, load_provider, split_model
from .stream import Stream
from .transport import Timeout, Transport

if TYPE_CHECKING:
    import aiohttp
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .otel import Telemetry

__all__ = ["Client"]

Messages = Sequence[Mapping[str, Any]]


class _Options(NamedTuple):
    """What every call method takes besides its model and input."""

    timeout: Timeout | float | None
    extra_headers: Mapping[str, str] | None
    max_retries: int | None
    params: dict[str, Any]


_OFF = frozenset({"0", "false", "off", "no"})
_ON = frozenset({"1", "true", "on", "yes"})


class Client:
    """An async client for every provider, used as ``async with aiollm.Client() as client``.

    - ``providers``: per-provider settings, e.g. ``{"dashscope": {"api_key": "sk-..."}}``;
      anything not given is read from the environment (``env``, default ``os.environ``), once,
      when a call first needs it.
    - ``limits``: per-provider :class:`~aiollm.Limits` (else ``AIOLLM_<PROVIDER>_RPS`` …).
    - ``timeout``: default :class:`~aiollm.Timeout` for every call (a number sets ``total``).
    - ``retry`` / ``max_retries``: the :class:`~aiollm.RetryPolicy` (``max_retries=0`` turns
      retries off).
    - ``session``: your own ``aiohttp.ClientSession`` (not closed by the client).
    - ``connection_limit``: the connector's total connection limit when the client owns the session.
    - ``hooks``: :class:`~aiollm.Hooks` called at each call's requests, responses, retries and end.
    - ``otel``: OpenTelemetry spans and metrics (``aiollm-client[otel]``): on by default once the
      application has set a global tracer or meter provider, or when ``tracer_provider`` /
      ``meter_provider`` are given; ``False`` (or ``AIOLLM_OTEL=off``) turns them off.
    - ``propagate_trace``: send the call's W3C ``traceparent`` with each request (or
      ``AIOLLM_OTEL_PROPAGATE=1``); off by default.
    - ``read_times``: stamp each socket read with when its bytes arrived, read as
      :attr:`Stream.read_at <aiollm.Stream.read_at>` (on Linux over plain HTTP the kernel's
      receive time, elsewhere when the event loop read the socket); off by default, since it
      costs a little on every read. ``aiollm bench`` turns it on.
    """

    def __init__(
        self,
        *,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        limits: Mapping[str, Limits] | None = None,
        timeout: Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        session: aiohttp.ClientSession | None = None,
        connection_limit: int = 256,
        env: Mapping[str, str] | None = None,
        hooks: Sequence[Hooks] = (),
        otel: bool | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagate_trace: bool | None = None,
        read_times: bool = False,
    ) -> None:
        check_client_config(providers, limits, timeout, retry, max_retries)
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._hooks = tuple(hooks)
        if otel is None:
            otel = self._env.get("AIOLLM_OTEL", "").strip().lower() not in _OFF
        if propagate_trace is None:
            propagate_trace = self._env.get("AIOLLM_OTEL_PROPAGATE", "").strip().lower() in _ON
        self._otel = otel
        self._propagate = propagate_trace
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._telemetry: tuple[object, Telemetry] | None = None
        if otel and (tracer_provider is not None or meter_provider is not None):
            self._get_telemetry()  # fail now if aiollm-client[otel] is not installed
        self._settings = {k: dict(v) for k, v in (providers or {}).items()}
        self._limits = dict(limits or {})
        self._retry = retry or RetryPolicy()
        if max_retries is not None:
            self._retry = replace(self._retry, max_retries=max_retries)
        self._transport = Transport(
            session,
            timeout=Timeout().merged(timeout),
            limit=connection_limit,
            read_times=read_times,
        )
        self._providers: dict[str, Provider] = {}
        self._limiters: dict[str, ProviderLimiter] = {}
        self._auth: dict[str, TokenSource] = {}
        self._sources: dict[str, tuple[TokenSource, ProviderLimiter]] = {}
        """Each provider's token source and limiter, once both are built."""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (if the client created it) and the shared-limits connections."""
        await self._transport.aclose()
        for limiter in self._limiters.values():
            await limiter.aclose()

    def __repr__(self) -> str:
        return f"<aiollm.Client providers={sorted(self._providers)}>"

    # -- providers and limits -------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        """The configured provider instance for ``name``."""
        instance = self._providers.get(name)
        if instance is None:
            cls = load_provider(name)
            instance = self._providers[name] = cls(self._settings.get(name, {}), self._env)
        return instance

    def auth(self, name: str) -> TokenSource:
        """The token source of provider ``name``, built on first use (so a missing key fails
        at call time)."""
        source = self._auth.get(name)
        if source is None:
            source = self._auth[name] = token_source(
                self.provider(name).credential(), provider=name
            )
        return source

    def limiter(self, name: str) -> ProviderLimiter:
        """The shared limiter of provider ``name``."""
        limiter = self._limiters.get(name)
        if limiter is None:
            limits = self._limits.get(name) or Limits.from_env(name, self._env)
            quota = quota_identity(self.provider(name)) if limits and limits.shared else ""
            limiter = self._limiters[name] = ProviderLimiter(name, limits, quota_id=quota)
        return limiter

    # -- observing calls (hooks, OpenTelemetry) --------------------------------------------
    def _observe(self, provider: Provider, call: Call) -> CallObserver | None:
        """The observer of one call: the hooks, OpenTelemetry, both, or None (nothing to pay)."""
        telemetry = self._get_telemetry() if self._otel else None
        hooks = HookObserver(self._hooks, provider.name, call) if self._hooks else None
        if telemetry is None:
            return hooks
        spans = telemetry.observe(provider.name, call)
        return spans if hooks is None else Observers([hooks, spans])

    def _get_telemetry(self) -> Telemetry | None:
        """The OpenTelemetry instruments, or None while OpenTelemetry is not in use."""
        explicit = self._tracer_provider is not None or self._meter_provider is not None
        if not explicit and "opentelemetry.trace" not in sys.modules:
            return None  # not even imported: no provider can have been set
        try:
            from . import otel
        except ImportError:
            if explicit:
                raise ConfigurationError(
                    "tracer_provider / meter_provider need OpenTelemetry: "
                    "pip install 'aiollm-client[otel]'"
                ) from None
            return None
        key: object
        if explicit:
            key = (self._tracer_provider, self._meter_provider)
        else:
            key = otel.configured_providers()
            if key is None:
                return None
        cached = self._telemetry
        if cached is not None and cached[0] == key:
            return cached[1]
        tracer_provider, meter_provider = key
        telemetry = otel.Telemetry(tracer_provider, meter_provider, propagate=self._propagate)
        self._telemetry = (key, telemetry)
        return telemetry

    # -- calls -------------------------------------------------------------------------------
    def _stream(
        self,
        op: Any,
        model: str,
        options: _Options,
        *,
        stream: bool = False,
        messages: Messages | None = None,
        prompt: str | None = None,
        input: str | list[str] | None = None,
    ) -> Stream:
        if op == "chat" and messages is None and prompt is None:
            raise ConfigurationError("pass messages=[...] or prompt='...'")
        timeout, extra_headers, max_retries, params = options
        name, model_name = split_model(model)
        checked = check_call(
            provider=name, messages=messages, timeout=timeout, max_retries=max_retries
        )
        provider = self.provider(name)
        call = Call(
            op=op,
            model=model_name,
            stream=stream,
            messages=checked,
            prompt=prompt,
            input=input,
            params=params,
        )
        prepared = provider.prepare(call)
        retry = (
            self._retry if max_retries is None else replace(self._retry, max_retries=max_retries)
        )
        sources = self._sources.get(name)
        if sources is None:  # after prepare: a bad argument is reported before a missing key
            sources = self._sources[name] = (self.auth(name), self.limiter(name))
        attempts = Attempts(
            self._transport,
            provider,
            prepared,
            auth=sources[0],
            limiter=sources[1],
            timeout=self._transport.timeout
            if timeout is None
            else self._transport.timeout.merged(timeout),
            extra_headers=extra_headers,
            observe=lambda: self._observe(provider, call),
            retry=retry,
        )
        return Stream(provider, prepared, attempts)

    def stream(
        self,
        model: str,
        messages: Messages | None = None,
        *,
        prompt: str | None = None,
        timeout: Timeout | float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
        **params: Any,
    ) -> Stream:
        """Start a streamed chat: ``async with client.stream(model, messages) as s: async for ev in s``.

        ``model`` is ``"<provider>/<model>"``; ``params`` are the provider's parameters
        (``temperature``, ``top_p``, ``max_tokens`` …), passed through unchanged when unknown.
        Nothing is sent until the stream is entered or iterated.
        """
        options = _Options(timeout, extra_headers, max_retries, params)
        return self._stream("chat", model, options, stream=True, messages=messages, prompt=prompt)

    async def chat(
        self,
        model: str,
        messages: Messages | None = None,
        *,
        prompt: str | None = None,
        timeout: Timeout | float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
        **params: Any,
    ) -> Completion:
        """One non-streamed chat completion."""
        options = _Options(timeout, extra_headers, max_retries, params)
        stream = self._stream("chat", model, options, messages=messages, prompt=prompt)
        async with stream:
            return await stream.final()

    async def complete(
        self,
        model: str,
        prompt: str,
        *,
        timeout: Timeout | float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
        **params: Any,
    ) -> Completion:
        """One text completion of ``prompt`` (providers with a completions endpoint)."""
        options = _Options(timeout, extra_headers, max_retries, params)
        stream = self._stream("complete", model, options, prompt=prompt)
        async with stream:
            return await stream.final()

    async def embed(
        self,
        model: str,
        input: str | list[str],
        *,
        timeout: Timeout | float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
        **params: Any,
    ) -> Embeddings:
        """Embeddings of ``input`` (one string or a list), in input order."""
        options = _Options(timeout, extra_headers, max_retries, params)
        stream = self._stream("embed", model, options, input=input)
        async with stream:
            async for event in stream:
                if isinstance(event, Embeddings):
                    return event
        raise ProtocolError("the response carried no embeddings", provider=stream.provider)
