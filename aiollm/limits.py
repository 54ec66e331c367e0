"""Per-provider limits (rate, concurrency, tokens per minute) and the throttling cool-down.

One :class:`ProviderLimiter` per provider per client, shared by every call. A call takes a
:class:`Lease` before its request is sent and gives it back when its HTTP exchange is over
(the response body has ended or the connection is closed), not when the caller stops reading.
The in-process limits are :mod:`aiollm._local_limits`, the estimate a call reserves is
:mod:`aiollm._token_estimate`, and the retry policy is :mod:`aiollm.retry` (all re-exported
here):

- ``requests_per_second`` is enforced smoothly (a bucket of one request), so no one-second
  window ever holds more than ``rps + 1`` request starts;
- ``max_concurrency`` bounds the open HTTP exchanges;
- ``tokens_per_minute`` is a budget that drains continuously: a call reserves an estimate
  (:func:`estimate_tokens`) before it starts and settles with the reported usage at the end;
- a :class:`~aiollm.RateLimitError` puts the provider into a cool-down (``Retry-After`` when
  the server gave one, else a jittered backoff) during which the other calls to that provider
  wait instead of stampeding; ``x-ratelimit-*`` response headers slow the calls down before
  the quota runs out (:mod:`aiollm._ratelimit_headers`).

With ``Limits(shared="redis://…")`` the same limits hold across every process that names the
same Redis and the same provider credentials (:mod:`aiollm.shared_limits`, which needs the
``aiollm-client[redis]`` extra; nothing here imports Redis otherwise).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

from ._local_limits import Lease, LocalLimits
from ._ratelimit_headers import QuotaHints
from ._redact import redact_url
from ._token_estimate import DEFAULT_MAX_TOKENS, CallLike, estimate_tokens
from .errors import AiollmError, ConfigurationError, RateLimitError
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .shared_limits import RedisLimits

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_COOL_DOWN",
    "Lease",
    "Limits",
    "ProviderLimiter",
    "RetryPolicy",
    "SharedLimitsError",
    "estimate_tokens",
    "quota_identity",
]

log = logging.getLogger("aiollm.limits")

MAX_COOL_DOWN = 60.0
"""The longest cool-down one throttling answer (or quota header) can impose, in seconds."""

SharedFailure = Literal["local", "raise"]


class SharedLimitsError(AiollmError):
    """The shared limits store (Redis) could not be reached in time and the limits say
    ``on_shared_failure="raise"``; the call was not sent."""


@dataclass(frozen=True)
class Limits:
    """Limits for one provider; None means unlimited.

    - ``shared``: a Redis URL (``redis://host:port/db``) or a ready ``redis.asyncio.Redis``
      client: every client, in every process, that names the same Redis and the same provider
      credentials shares these limits as one quota.
    - ``on_shared_failure``: when Redis is unreachable or slower than ``shared_timeout``,
      ``"local"`` (default) falls back to in-process limits (each process takes its share of
      the quota, by the number of workers last seen) with a logged warning, ``"raise"`` fails
      the call with :class:`SharedLimitsError`. Either way Redis is tried again by itself.
    - ``lease_ttl``: seconds after which the concurrency slots of a worker that died come back
      (live workers renew theirs every ``lease_ttl / 3``).
    - ``default_max_tokens``: the completion tokens reserved for a call without ``max_tokens``.
    """

    requests_per_second: float | None = None
    max_concurrency: int | None = None
    tokens_per_minute: int | None = None
    shared: Any = None
    on_shared_failure: SharedFailure = "local"
    shared_timeout: float = 0.5
    lease_ttl: float = 10.0
    default_max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.on_shared_failure not in ("local", "raise"):
            raise ConfigurationError(
                f"on_shared_failure must be 'local' or 'raise' (got {self.on_shared_failure!r})"
            )
        if self.lease_ttl <= 0 or self.shared_timeout <= 0:
            raise ConfigurationError("lease_ttl and shared_timeout must be > 0")

    @property
    def store_name(self) -> str | None:
        """The shared store as messages name it: its URL without the password, or the type
        of the ready client (None when the limits are not shared)."""
        shared = self.shared
        if shared is None:
            return None
        return redact_url(shared) if isinstance(shared, str) else type(shared).__name__

    def __repr__(self) -> str:
        return (
            f"Limits(requests_per_second={self.requests_per_second}, "
            f"max_concurrency={self.max_concurrency}, tokens_per_minute={self.tokens_per_minute}, "
            f"shared={self.store_name!r}, on_shared_failure={self.on_shared_failure!r})"
        )

    def share(self, workers: int) -> Limits:
        """This process's part of the limits when ``workers`` processes share them."""
        if workers <= 1:
            return replace(self, shared=None)
        rps, mc, tpm = self.requests_per_second, self.max_concurrency, self.tokens_per_minute
        return replace(
            self,
            shared=None,
            requests_per_second=rps / workers if rps else None,
            max_concurrency=max(1, mc // workers) if mc else None,
            tokens_per_minute=max(1, tpm // workers) if tpm else None,
        )

    @classmethod
    def from_env(cls, provider: str, env: Mapping[str, str]) -> Limits | None:
        """``AIOLLM_<PROVIDER>_RPS``, ``_MAX_CONCURRENCY``, ``_TPM``, ``_SHARED`` and
        ``_ON_SHARED_FAILURE`` from ``env`` (None if none is set)."""
        prefix = f"AIOLLM_{provider.upper()}_"
        names = ("RPS", "MAX_CONCURRENCY", "TPM", "SHARED", "ON_SHARED_FAILURE")
        raw = {k: env.get(prefix + k) or None for k in names}
        if not any(raw.values()):
            return None
        try:
            rps, mc, tpm = raw["RPS"], raw["MAX_CONCURRENCY"], raw["TPM"]
            return cls(
                requests_per_second=float(rps) if rps else None,
                max_concurrency=int(mc) if mc else None,
                tokens_per_minute=int(tpm) if tpm else None,
                shared=raw["SHARED"],
                on_shared_failure=raw["ON_SHARED_FAILURE"] or "local",  # type: ignore[arg-type]
            )
        except ValueError:
            raise ConfigurationError(
                f"{prefix}RPS / {prefix}MAX_CONCURRENCY / {prefix}TPM must be numbers"
            ) from None


_QUOTA_SETTINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (("base_url", "OPENAI_BASE_URL"), ("api_key", "OPENAI_API_KEY")),
    "dashscope": (("api_key", "DASHSCOPE_API_KEY"), ("workspace", "DASHSCOPE_WORKSPACE")),
    "qianfan": (("ak", "QIANFAN_AK"), ("access_token", "QIANFAN_ACCESS_TOKEN")),
    "gateway": (("url", "AIOLLM_GATEWAY_URL"), ("appid", "AIOLLM_GATEWAY_APPID")),
}
"""The settings that name the account a provider's quota belongs to."""


class ProviderLike(Protocol):
    """What :func:`quota_identity` reads of a provider."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> dict[str, Any]: ...

    def setting(self, key: str, env_var: str | None = None, default: Any = None) -> Any: ...


def quota_identity(provider: ProviderLike) -> str:
    """A hash naming the account behind ``provider``'s credentials (never the credentials):
    OpenAI-compatible: base URL and API key; DashScope: API key and workspace; Qianfan: API
    key (``ak``) or the ready access token; gateway: URL and appid. Another provider: all its
    settings."""
    names = _QUOTA_SETTINGS.get(provider.name)
    if names is None:
        values = [f"{k}={v}" for k, v in sorted(provider.settings.items())]
    else:
        values = [f"{k}={provider.setting(k, env) or ''}" for k, env in names]
    digest = hashlib.sha256("\0".join([provider.name, *values]).encode()).hexdigest()
    return digest[:20]


class ProviderLimiter:
    """The limits of one provider within one client (shared through Redis if configured)."""

    def __init__(self, provider: str, limits: Limits | None = None, *, quota_id: str = "") -> None:
        self.provider = provider
        self.limits = limits = limits or Limits()
        rps = limits.requests_per_second
        if rps is not None and rps <= 0:
            raise ConfigurationError(
                f"requests_per_second must be > 0 (got {rps})", provider=provider
            )
        self._local = LocalLimits(limits)
        self._cool_until = 0.0
        self._cool_streak = 0
        self.hints = QuotaHints()
        """What the provider's ``x-ratelimit-*`` headers said last (see :meth:`observe`)."""
        self.shared: RedisLimits | None = None
        """The Redis side of shared limits (None when ``Limits.shared`` is unset)."""
        if limits.shared is not None:
            try:
                from .shared_limits import RedisLimits  # the optional extra, imported only here
            except ImportError as exc:
                raise ConfigurationError(
                    f"shared limits need the redis package ({exc.name} is missing): "
                    "pip install 'aiollm-client[redis]'",
                    provider=provider,
                ) from None
            self.shared = RedisLimits(provider, limits, quota_id)

    def estimate(self, call: CallLike) -> int:
        """The tokens to reserve for ``call`` (0 when nothing budgets tokens)."""
        if not self.limits.tokens_per_minute and self.hints.tokens_left is None:
            return 0
        return estimate_tokens(call, self.limits.default_max_tokens)

    @property
    def cooling_down(self) -> bool:
        """Whether the provider is in a throttling cool-down now."""
        return time.monotonic() < self._cool_until

    async def acquire(self, estimate: int = 0, deadline: float = math.inf) -> Lease:
        """Wait for the cool-down, a concurrency slot, ``estimate`` tokens of the budget and
        a rate token; the lease must be released when the HTTP exchange is over.

        ``deadline`` (on ``time.monotonic``, the event loop's clock) is the call's: a cool-down that
        lasts beyond it fails the call at once with a :class:`~aiollm.RateLimitError`.
        """
        if self._cool_until:
            await self._wait_cooldown(deadline)
        lease: Lease | None = None
        if self.shared is not None:
            lease = await self.shared.acquire(estimate)
        if lease is None:
            lease = await self._local_limits().acquire(estimate)
        try:
            if self.hints.active:
                await self.hints.wait(estimate)
            if self._cool_until:  # a throttle seen while we queued applies to us too
                await self._wait_cooldown(deadline)
        except BaseException:
            lease.give_back()  # nothing was sent
            raise
        return lease

    async def pace(self, deadline: float = math.inf) -> None:
        """Wait for the cool-down and a rate token (a retry within a held lease)."""
        await self._wait_cooldown(deadline)
        if self.shared is not None and await self.shared.pace():
            return
        await self._local_limits().pace()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the quota a response reports (``x-ratelimit-remaining-*`` / ``-reset-*``):
        when a budget is spent, hold every call until it resets; when it runs low, space
        the calls out over what is left of the window."""
        hold = self.hints.observe(headers, time.monotonic())
        if hold > 0:
            self._cool(min(hold, MAX_COOL_DOWN))

    def _local_limits(self) -> LocalLimits:
        """The limits within this process: its own, or its share while Redis is down."""
        return self._local if self.shared is None else self.shared.fallback()

    async def _wait_cooldown(self, deadline: float = math.inf) -> None:
        while True:
            now = time.monotonic()
            wait = self._cool_until - now
            if wait <= 0:
                return
            if self._cool_until > deadline:
                raise RateLimitError(
                    f"the provider is cooling down after a rate limit for {wait:.2f}s more, "
                    "beyond this call's total timeout",
                    provider=self.provider,
                    retry_after=wait,
                )
            await anyio.sleep(wait)

    def _cool(self, delay: float) -> None:
        until = time.monotonic() + delay
        if until > self._cool_until:
            self._cool_until = until
            log.debug("%s: holding calls for %.2fs", self.provider, delay)
        if self.shared is not None:
            self.shared.cool_down(delay)

    def throttled(self, retry_after: float | None, max_cooldown: float = MAX_COOL_DOWN) -> float:
        """Enter a cool-down after a rate-limit answer; returns its length in seconds.

        The cool-down lasts ``retry_after`` when the server gave one (at most
        ``max_cooldown``), else a jittered backoff that grows with consecutive throttles.
        """
        self._cool_streak += 1
        if retry_after is not None:
            delay = min(retry_after, max_cooldown) if retry_after >= 0 else 0.0
        else:
            delay = random.uniform(0.5, 1.0) * min(30.0, 0.5 * 2 ** (self._cool_streak - 1))
        self._cool(delay)
        return delay

    def succeeded(self) -> None:
        """A call got through: reset the backoff streak."""
        self._cool_streak = 0

    def tokens_in_window(self) -> float:
        """The tokens currently counted against the local tokens-per-minute budget."""
        return self._local.drain()

    async def aclose(self) -> None:
        """Finish pending releases and close the Redis connection (shared limits only)."""
        if self.shared is not None:
            await self.shared.aclose()

    def __repr__(self) -> str:
        lim = self.limits
        return (
            f"<ProviderLimiter {self.provider} rps={lim.requests_per_second} "
            f"max_concurrency={lim.max_concurrency} tpm={lim.tokens_per_minute}"
            f"{' shared' if self.shared is not None else ''}"
            f"{' cooling' if self._cool_until > 0 and self.cooling_down else ''}>"
        )
