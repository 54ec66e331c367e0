"""Per-provider limits (rate, concurrency, tokens per minute), throttling cool-down, retry policy.

One :class:`ProviderLimiter` per provider per client, shared by every call. A call takes a
:class:`Lease` before its request is sent and gives it back when its HTTP exchange is over
(the response body has ended or the connection is closed), not when the caller stops reading:

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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
from aiolimiter import AsyncLimiter

from ._ratelimit_headers import QuotaHints
from .errors import (
    AiollmError,
    APIError,
    ConfigurationError,
    RateLimitError,
    TimeoutError,
    TransportError,
)

if TYPE_CHECKING:
    from .shared_limits import RedisLimits

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Lease",
    "Limits",
    "ProviderLimiter",
    "RetryPolicy",
    "SharedLimitsError",
    "estimate_tokens",
    "quota_identity",
]

log = logging.getLogger("aiollm.limits")

DEFAULT_MAX_TOKENS = 512
"""The completion tokens a call is assumed to use when it sets no ``max_tokens``."""

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

    def __repr__(self) -> str:
        shared = self.shared
        if isinstance(shared, str):
            shared = _redact_url(shared)
        elif shared is not None:
            shared = type(shared).__name__
        return (
            f"Limits(requests_per_second={self.requests_per_second}, "
            f"max_concurrency={self.max_concurrency}, tokens_per_minute={self.tokens_per_minute}, "
            f"shared={shared!r}, on_shared_failure={self.on_shared_failure!r})"
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


def _redact_url(url: str) -> str:
    """A Redis URL without its password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"


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


class CallLike(Protocol):
    """What :func:`estimate_tokens` reads of a call."""

    messages: list[dict[str, Any]] | None
    prompt: str | None
    input: str | list[str] | None
    params: dict[str, Any]


def _texts(call: CallLike) -> list[str]:
    texts: list[str] = []
    for message in call.messages or ():
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif content is not None:
            texts.append(str(content))
    if call.prompt:
        texts.append(call.prompt)
    if isinstance(call.input, str):
        texts.append(call.input)
    elif call.input:
        texts.extend(call.input)
    return texts


def estimate_tokens(call: CallLike, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """Tokens a call is expected to use: its ``max_tokens`` (or ``default_max_tokens``) plus
    its prompt, counted as one token per non-ASCII character and per 4 ASCII characters, plus
    4 per message (an approximation; the reported usage settles the difference)."""
    completion = default_max_tokens
    params = call.params
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens"):
        value = params.get(key)
        if isinstance(value, int) and value > 0:
            completion = value
            break
    prompt = 0
    for text in _texts(call):
        size = len(text)
        ascii_chars = len(text.encode("ascii", "ignore")) if not text.isascii() else size
        prompt += (size - ascii_chars) + math.ceil(ascii_chars / 4) + 4
    return completion + prompt


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by total delay.

    Retried — only while nothing has reached the caller: transport errors (a connection
    refused, or reset before the first event), timeouts other than ``total`` (a stall before
    the first event included), and retryable :class:`~aiollm.APIError` s (rate limits, server
    errors). ``Retry-After`` is honoured (it is a floor for the delay) up to
    ``max_retry_after`` seconds: a server that asks for a longer wait (``inf`` included) is
    not waited for, and the call fails at once with its :class:`~aiollm.RateLimitError`,
    whose ``retry_after`` says what the server asked. The same bound caps the cool-down that
    a rate limit puts the provider into.
    """

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    max_total_delay: float = 60.0
    max_retry_after: float = 60.0

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may succeed when the same request is sent again.

        The stream asks only while nothing has reached the caller, so a connection reset
        after the response head is as retryable as one before it.
        """
        if isinstance(exc, APIError):
            return exc.retryable
        if isinstance(exc, TimeoutError):
            return exc.phase != "total"
        return isinstance(exc, TransportError)

    def backoff(self, attempt: int) -> float:
        """The jittered delay before retry number ``attempt`` (1-based)."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, cap)

    def delay(
        self, exc: BaseException, attempt: int, slept: float, remaining: float = math.inf
    ) -> float | None:
        """Seconds to wait before retry ``attempt``, or None when it should not be retried.

        ``remaining`` is the time left before the call's deadline: a retry that could only
        start after it is not made.
        """
        if attempt > self.max_retries or not self.retryable(exc):
            return None
        delay = self.backoff(attempt)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            if not retry_after <= self.max_retry_after:  # also catches NaN
                return None
            delay = max(delay, float(retry_after))
        if slept + delay > self.max_total_delay or delay >= remaining:
            return None
        return delay


class Lease:
    """A granted call: a concurrency slot and a token reservation.

    :meth:`settle` records the tokens the call really used; :meth:`release` (idempotent,
    synchronous) gives the slot back once the HTTP exchange is over.
    """

    __slots__ = ("_local", "_released", "estimate", "used")

    def __init__(self, local: _Local | None = None) -> None:
        self._local = local
        self._released = local is None
        self.estimate = 0
        """Tokens reserved for this call (0 without a tokens-per-minute budget)."""
        self.used: int | None = None
        """Tokens reported by the provider, once settled."""

    def settle(self, tokens: int | None) -> None:
        """Charge the reported usage in place of the estimate (the first report counts)."""
        if tokens is None or self.used is not None or self._local is None:
            return
        # A server may report any integer: more than a few minutes' budget is no different.
        tokens = min(max(0, tokens), 10 * self._local.tpm)
        self.used = tokens
        if self.estimate:
            self._local.charge(tokens - self.estimate)

    def release(self) -> None:
        """Give the concurrency slot back."""
        if not self._released:
            self._released = True
            assert self._local is not None
            if self._local.slots is not None:
                self._local.slots.release_on_behalf_of(self)

    @property
    def released(self) -> bool:
        """Whether the lease was given back."""
        return self._released


_FREE = Lease()
"""The lease of a provider without limits: nothing to hold or release."""


class _Local:
    """Rate, concurrency and tokens per minute within this process."""

    def __init__(self, limits: Limits) -> None:
        rps = limits.requests_per_second
        self.rate = AsyncLimiter(1, 1.0 / rps) if rps else None
        mc = limits.max_concurrency
        self.slots = anyio.CapacityLimiter(mc) if mc else None
        self.tpm = limits.tokens_per_minute or 0
        self.unlimited = self.rate is None and self.slots is None and not self.tpm
        self.level = 0.0
        self._at = 0.0
        self._freed = anyio.Event()
        """Set (and replaced) when a settlement gives tokens back: the waiters look again."""

    def drain(self) -> float:
        """The tokens still counted against the budget now."""
        now = anyio.current_time()
        self.level = max(0.0, self.level - (now - self._at) * self.tpm / 60.0)
        self._at = now
        return self.level

    def charge(self, tokens: float) -> None:
        """Add (or, negative, give back) tokens."""
        if self.tpm:
            self.drain()
            self.level = max(0.0, self.level + tokens)
            if tokens < 0:
                self._freed.set()
                self._freed = anyio.Event()

    async def reserve(self, lease: Lease, estimate: int) -> None:
        """Wait until ``estimate`` tokens fit the budget, then reserve them for ``lease``."""
        tpm = self.tpm
        while (level := self.drain()) > 0 and level + estimate > tpm:
            with anyio.move_on_after((level + estimate - tpm) * 60.0 / tpm + 0.01):
                await self._freed.wait()
        self.level += estimate
        lease.estimate = estimate

    async def acquire(self, estimate: int) -> Lease:
        if self.unlimited:
            return _FREE
        lease = Lease(self)
        if self.slots is not None:
            await self.slots.acquire_on_behalf_of(lease)
        try:
            if self.tpm:
                await self.reserve(lease, estimate)
            if self.rate is not None:
                await self.rate.acquire()
        except BaseException:
            lease.settle(0)  # nothing was sent: give the reservation back
            lease.release()
            raise
        return lease


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
        self._local = _Local(limits)
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
        return anyio.current_time() < self._cool_until

    async def acquire(self, estimate: int = 0, deadline: float = math.inf) -> Lease:
        """Wait for the cool-down, a concurrency slot, ``estimate`` tokens of the budget and
        a rate token; the lease must be released when the HTTP exchange is over.

        ``deadline`` (on :func:`anyio.current_time`'s clock) is the call's: a cool-down that
        lasts beyond it fails the call at once with a :class:`~aiollm.RateLimitError`.
        """
        if self._cool_until:
            await self._wait_cooldown(deadline)
        lease: Lease | None = None
        if self.shared is not None:
            lease = await self.shared.acquire(estimate)
        if lease is None:
            local = self._local if self.shared is None else self.shared.fallback()
            lease = await local.acquire(estimate)
        try:
            if self.hints.active:
                await self.hints.wait(estimate)
            # A throttle seen while we queued applies to us too.
            await self._wait_cooldown(deadline)
        except BaseException:
            lease.settle(0)
            lease.release()
            raise
        return lease

    async def pace(self, deadline: float = math.inf) -> None:
        """Wait for the cool-down and a rate token (a retry within a held lease)."""
        await self._wait_cooldown(deadline)
        if self.shared is not None and await self.shared.pace():
            return
        local = self._local if self.shared is None else self.shared.fallback()
        if local.rate is not None:
            await local.rate.acquire()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the quota a response reports (``x-ratelimit-remaining-*`` / ``-reset-*``):
        when a budget is spent, hold every call until it resets; when it runs low, space
        the calls out over what is left of the window."""
        hold = self.hints.observe(headers, anyio.current_time())
        if hold > 0:
            self._cool(min(hold, MAX_COOL_DOWN))

    async def _wait_cooldown(self, deadline: float = math.inf) -> None:
        while True:
            now = anyio.current_time()
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
        until = anyio.current_time() + delay
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
