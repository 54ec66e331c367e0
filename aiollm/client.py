"""``Client``: the one object users hold. It owns the session, the providers and their limits."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, ProtocolError
from .events import Completion, Embeddings
from .limits import Limits, ProviderLimiter, RetryPolicy, quota_identity
from .providers import Call, Provider, load_provider, split_model
from .stream import Stream
from .transport import Timeout, Transport

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Client"]

Messages = Sequence[Mapping[str, Any]]


class Client:
    """An async client for every provider, used as ``async with aiollm.Client() as client``.

    - ``providers``: per-provider settings, e.g. ``{"dashscope": {"api_key": "sk-..."}}``;
      anything not given is read from the environment (``env``, default ``os.environ``).
    - ``limits``: per-provider :class:`~aiollm.Limits` (else ``AIOLLM_<PROVIDER>_RPS`` …).
    - ``timeout``: default :class:`~aiollm.Timeout` for every call.
    - ``retry`` / ``max_retries``: the :class:`~aiollm.RetryPolicy` (``max_retries=0`` turns
      retries off).
    - ``session``: your own ``aiohttp.ClientSession`` (not closed by the client).
    - ``connection_limit``: the connector's total connection limit when the client owns the session.
    """

    def __init__(
        self,
        *,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        limits: Mapping[str, Limits] | None = None,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        session: aiohttp.ClientSession | None = None,
        connection_limit: int = 256,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._settings = {k: dict(v) for k, v in (providers or {}).items()}
        self._limits = dict(limits or {})
        self._retry = retry or RetryPolicy()
        if max_retries is not None:
            self._retry = replace(self._retry, max_retries=max_retries)
        self._transport = Transport(session, timeout=timeout, limit=connection_limit)
        self._providers: dict[str, Provider] = {}
        self._limiters: dict[str, ProviderLimiter] = {}

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

    def limiter(self, name: str) -> ProviderLimiter:
        """The shared limiter of provider ``name``."""
        limiter = self._limiters.get(name)
        if limiter is None:
            limits = self._limits.get(name) or Limits.from_env(name, self._env)
            quota = quota_identity(self.provider(name)) if limits and limits.shared else ""
            limiter = self._limiters[name] = ProviderLimiter(name, limits, quota_id=quota)
        return limiter

    # -- calls -------------------------------------------------------------------------------
    def _stream(
        self,
        op: Any,
        model: str,
        *,
        stream: bool,
        messages: Messages | None = None,
        prompt: str | None = None,
        input: str | list[str] | None = None,
        timeout: Timeout | float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
        params: dict[str, Any],
    ) -> Stream:
        name, model_name = split_model(model)
        provider = self.provider(name)
        call = Call(
            op=op,
            model=model_name,
            stream=stream,
            messages=[dict(m) for m in messages] if messages is not None else None,
            prompt=prompt,
            input=input,
            params=params,
        )
        provider.check(call)
        retry = (
            self._retry if max_retries is None else replace(self._retry, max_retries=max_retries)
        )
        return Stream(
            self,
            provider,
            call,
            timeout=self._transport.timeout.merged(timeout),
            extra_headers=extra_headers,
            retry=retry,
            limiter=self.limiter(name),
        )

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
        if messages is None and prompt is None:
            raise ConfigurationError("pass messages=[...] or prompt='...'")
        return self._stream(
            "chat",
            model,
            stream=True,
            messages=messages,
            prompt=prompt,
            timeout=timeout,
            extra_headers=extra_headers,
            max_retries=max_retries,
            params=params,
        )

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
        if messages is None and prompt is None:
            raise ConfigurationError("pass messages=[...] or prompt='...'")
        stream = self._stream(
            "chat",
            model,
            stream=False,
            messages=messages,
            prompt=prompt,
            timeout=timeout,
            extra_headers=extra_headers,
            max_retries=max_retries,
            params=params,
        )
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
        stream = self._stream(
            "complete",
            model,
            stream=False,
            prompt=prompt,
            timeout=timeout,
            extra_headers=extra_headers,
            max_retries=max_retries,
            params=params,
        )
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
        stream = self._stream(
            "embed",
            model,
            stream=False,
            input=input,
            timeout=timeout,
            extra_headers=extra_headers,
            max_retries=max_retries,
            params=params,
        )
        async with stream:
            await stream.final()
            codec = stream._codec
            if codec is None or codec.embeddings is None:
                raise ProtocolError("the response carried no embeddings", provider=stream.provider)
            return codec.embeddings
