"""One provider quota shared by every process through Redis (the ``aiollm-client[redis]`` extra).

:class:`RedisLimits` is the Redis side of a :class:`~aiollm.limits.ProviderLimiter` whose
:class:`~aiollm.Limits` name a ``shared`` store. All the state of one quota lives under keys
``aiollm:{<provider>:<hash of the credentials>}:<name>`` (the braces are a Redis Cluster hash
tag: every key of a quota is in one slot, so each script touches one node):

- ``rate``: GCRA, the theoretical arrival time of the next request (µs of Redis ``TIME``);
  a call reserves the next free start time in one script and sleeps until it, so starts are
  spaced ``1 / requests_per_second`` apart whatever the clients' clocks say;
- ``slots``: the concurrency leases, a sorted set of lease ids scored by their expiry; a
  live worker renews its leases every ``lease_ttl / 3``, a dead worker's expire within
  ``lease_ttl``; a lease is removed when its HTTP exchange is over;
- ``tpm``: the tokens-per-minute bucket (``level`` draining at ``tpm / 60`` per second,
  ``at``); a call reserves its estimate and settles with the reported usage on release;
- ``cool``: a key whose time to live is the cool-down every worker honours after a 429;
- ``workers``: the workers seen in the last ``lease_ttl`` (for the fallback share).

Every command runs in a task of its own that the caller awaits through a shield: a caller
cancelled while Redis answers leaves the command to finish (no half-read reply is left on a
pooled connection), and a lease granted to a caller that is gone is given back at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ._local_limits import Lease, LocalLimits
from ._redact import redact_text
from .limits import Limits, SharedLimitsError

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = ["RedisLimits", "SharedLease", "quota_keys"]

log = logging.getLogger("aiollm.limits")

_TIME = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%.0f', x) end
local function drained(key, tpm)
  local level = tonumber(redis.call('HGET', key, 'level') or '0')
  local at = tonumber(redis.call('HGET', key, 'at') or now)
  return math.max(0, level - (now - at) * tpm / 60000000)
end
local function store(key, level, tpm)
  if level <= 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'level', string.format('%.3f', level), 'at', int(now))
    redis.call('PEXPIRE', key, math.ceil(level * 60000 / tpm) + 1000)
  end
end
"""

ACQUIRE = (
    _TIME
    + """
-- KEYS: rate slots tpm cool; ARGV: interval_us limit lease ttl_us tpm estimate rate_only
local interval, limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local tpm, estimate, rate_only = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local cool = redis.call('PTTL', KEYS[4])
if cool > 0 then return {0, cool * 1000} end
if not rate_only then
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
    if redis.call('ZCARD', KEYS[2]) >= limit then return {0, -1} end
  end
  if tpm > 0 and estimate > 0 then
    local level = drained(KEYS[3], tpm)
    if level > 0 and level + estimate > tpm then
      return {0, math.ceil((level + estimate - tpm) * 60000000 / tpm)}
    end
    store(KEYS[3], level + estimate, tpm)
  end
end
local wait = 0
if interval > 0 then
  local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
  wait = start - now
  redis.call('SET', KEYS[1], int(start + interval),
             'PX', math.ceil((wait + interval) / 1000) + 1000)
end
if not rate_only and limit > 0 then
  redis.call('ZADD', KEYS[2], int(now + wait + ttl), ARGV[3])
end
return {1, wait}
"""
)

RELEASE = (
    _TIME
    + """
-- KEYS: slots tpm; ARGV: lease tokens_delta tpm
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
local delta, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
if delta ~= 0 and tpm > 0 then store(KEYS[2], drained(KEYS[2], tpm) + delta, tpm) end
return 1
"""
)

BEAT = (
    _TIME
    + """
-- KEYS: slots workers; ARGV: ttl_us worker lease...
local ttl = tonumber(ARGV[1])
local until_ = int(now + ttl)
-- A worker missing from the registry lost its state (a Redis restart): re-add its leases.
local known = redis.call('ZSCORE', KEYS[2], ARGV[2])
for i = 3, #ARGV do
  if known then redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i])
  else redis.call('ZADD', KEYS[1], until_, ARGV[i]) end
end
redis.call('ZADD', KEYS[2], until_, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
redis.call('PEXPIRE', KEYS[2], math.ceil(ttl / 1000) * 3)
return redis.call('ZCARD', KEYS[2])
"""
)

COOL = """
-- KEYS: cool; ARGV: ms
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

_FAILURES = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)
PROBE_AFTER = (0.5, 5.0)
"""After a failure, Redis is tried again after 0.5 s, doubling up to 5 s while it stays down."""


def quota_keys(provider: str, quota_id: str) -> dict[str, str]:
    """The Redis keys of one quota (one hash tag: one Cluster slot)."""
    tag = f"aiollm:{{{provider}:{quota_id}}}:"
    return {name: tag + name for name in ("rate", "slots", "tpm", "cool", "workers")}


class SharedLease(Lease):
    """A lease held in Redis: released (and settled) when the HTTP exchange is over."""

    __slots__ = ("_owner", "id")

    def __init__(self, owner: RedisLimits, lease_id: str, estimate: int) -> None:
        super().__init__()
        self._owner = owner
        self._released = False
        self.id = lease_id
        self.estimate = estimate

    def settle(self, tokens: int | None) -> None:
        """Record the reported usage; it replaces the estimate when the lease is released."""
        tpm = self._owner.limits.tokens_per_minute or 0
        if tokens is not None and self.used is None:
            self.used = min(max(0, tokens), 10 * tpm)

    def release(self) -> None:
        """Give the slot back (a Redis call in the background; nothing waits)."""
        if not self._released:
            self._released = True
            self._owner._release(self)


class RedisLimits:
    """The shared state of one provider quota, and the failure policy around it."""

    def __init__(self, provider: str, limits: Limits, quota_id: str) -> None:
        self.provider = provider
        self.limits = limits
        self.keys = quota_keys(provider, quota_id)
        self.worker = uuid.uuid4().hex
        self.workers = 1
        """The workers sharing the quota, as last seen (the fallback divides the limits by it)."""
        self.degraded = False
        """True while Redis is unreachable (calls follow ``on_shared_failure``)."""
        rps = limits.requests_per_second
        self._interval = round(1_000_000 / rps) if rps else 0
        self._ttl = round(limits.lease_ttl * 1_000_000)
        self._redis: Any = None
        self._scripts: dict[str, AsyncScript] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._leases: dict[str, SharedLease] = {}
        self._beat: asyncio.Task[None] | None = None
        self._queue: anyio.Lock | None = None
        self._retry_at = 0.0
        self._probe = PROBE_AFTER[0]
        self._fallback: LocalLimits | None = None
        self._closed = False

    # -- the calls -----------------------------------------------------------------------
    async def acquire(self, estimate: int) -> Lease | None:
        """A shared lease, or None when Redis is down and the policy is to fall back."""
        if self.degraded and time.monotonic() < self._retry_at:
            self._unavailable(None)
            return None
        if not self.limits.tokens_per_minute:
            estimate = 0
        if self._queue is None:
            self._queue = anyio.Lock()
        lease_id = uuid.uuid4().hex
        args = [self._interval, self.limits.max_concurrency or 0, lease_id, self._ttl]
        args += [self.limits.tokens_per_minute or 0, estimate, 0]
        keys = [self.keys[k] for k in ("rate", "slots", "tpm", "cool")]
        poll = 0.005
        async with self._queue:  # one waiter per process asks Redis; the others queue here
            while True:
                asked = time.monotonic()
                try:
                    granted, wait = await self._run(
                        "acquire", keys, args, undo=(lease_id, estimate)
                    )
                except _FAILURES as exc:
                    self._unavailable(exc)
                    return None
                self._recovered()
                if granted:
                    break
                if wait < 0:  # every slot is taken: look again soon
                    await anyio.sleep(poll * random.uniform(0.5, 1.0))
                    poll = min(0.05, poll * 2)
                else:  # a cool-down or the token budget: settlements may free it earlier
                    await anyio.sleep(min(wait / 1e6, 0.25))
        lease = SharedLease(self, lease_id, estimate)
        if self.limits.max_concurrency:
            self._leases[lease_id] = lease
            self._start_beat()
        # Our start time in the rate's schedule, counted from when we asked: a reply that
        # reached us late (a busy machine) does not make the start late too.
        start = asked + wait / 1e6
        if wait > 0 and start > time.monotonic():
            try:
                await anyio.sleep_until(start)
            except BaseException:
                lease.give_back()  # nothing was sent
                raise
        return lease

    async def pace(self) -> bool:
        """Wait for a shared rate token (a retry); False when Redis is down (use local)."""
        if not self._interval:
            return True
        if self.degraded and time.monotonic() < self._retry_at:
            self._unavailable(None)
            return False
        keys = [self.keys[k] for k in ("rate", "slots", "tpm", "cool")]
        try:
            _, wait = await self._run("acquire", keys, [self._interval, 0, "", 0, 0, 0, 1])
        except _FAILURES as exc:
            self._unavailable(exc)
            return False
        if wait > 0:
            await anyio.sleep(wait / 1e6)
        return True

    def cool_down(self, delay: float) -> None:
        """Pause every worker's calls for ``delay`` seconds (in the background)."""
        ms = math.ceil(delay * 1000)
        if ms > 0 and not self.degraded:
            self._spawn(self._quiet("cool", [self.keys["cool"]], [ms]))

    def fallback(self) -> LocalLimits:
        """The local limits used while Redis is down: this worker's share of the quota."""
        if self._fallback is None:
            self._fallback = LocalLimits(self.limits.share(self.workers))
        return self._fallback

    async def aclose(self) -> None:
        """Stop renewing, let pending releases finish (bounded) and close the connection."""
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2 * self.limits.shared_timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._redis is not None and isinstance(self.limits.shared, str):
            await self._redis.aclose()
        self._redis = None

    # -- internals ---------------------------------------------------------------------
    def _client(self) -> Any:
        if self._redis is None:
            shared, timeout = self.limits.shared, self.limits.shared_timeout
            if isinstance(shared, str):
                self._redis = aioredis.Redis.from_url(
                    shared,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=Retry(NoBackoff(), 0),
                )
            else:
                self._redis = shared
            for name, text in (("acquire", ACQUIRE), ("release", RELEASE), ("beat", BEAT)):
                self._scripts[name] = self._redis.register_script(text)
            self._scripts["cool"] = self._redis.register_script(COOL)
        return self._redis

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s: shared limits call failed: %r", self.provider, task.exception())

    async def _run(
        self, script: str, keys: list[str], args: list[Any], undo: tuple[str, int] | None = None
    ) -> Any:
        """Run a script in a task of its own, awaited through a shield, within the timeout.

        If the caller is cancelled or times out, the script still runs to its reply; a lease
        it granted (``undo``: lease id and reserved tokens) is then given back.
        """
        self._client()
        task = self._spawn(self._scripts[script](keys=keys, args=args))
        try:
            with anyio.fail_after(self.limits.shared_timeout):
                return await asyncio.shield(task)
        except BaseException:
            if undo is not None:
                task.add_done_callback(lambda t: self._undo(t, *undo))
            raise

    def _undo(self, task: asyncio.Task[Any], lease_id: str, estimate: int) -> None:
        if task.cancelled() or task.exception() is not None or not task.result()[0]:
            return
        if not self._closed:
            delta = -estimate if estimate else 0
            self._spawn(
                self._quiet("release", self._release_keys(), self._release_args(lease_id, delta))
            )

    def _release_keys(self) -> list[str]:
        return [self.keys["slots"], self.keys["tpm"]]

    def _release_args(self, lease_id: str, delta: int) -> list[Any]:
        return [lease_id, delta, self.limits.tokens_per_minute or 0]

    async def _quiet(self, script: str, keys: list[str], args: list[Any]) -> None:
        """A background script whose failure costs nothing (leases expire by themselves)."""
        try:
            with anyio.fail_after(self.limits.shared_timeout):
                await self._scripts[script](keys=keys, args=args)
        except _FAILURES as exc:
            log.debug("%s: shared %s failed: %r", self.provider, script, exc)

    def _release(self, lease: SharedLease) -> None:
        self._leases.pop(lease.id, None)
        delta = lease.used - lease.estimate if lease.used is not None and lease.estimate else 0
        if self._closed or self._redis is None:
            return
        if not self.limits.max_concurrency and not delta:
            return
        try:
            self._spawn(
                self._quiet("release", self._release_keys(), self._release_args(lease.id, delta))
            )
        except RuntimeError:  # no running loop (interpreter shutdown): the lease expires
            pass

    def _start_beat(self) -> None:
        if self._beat is None or self._beat.done():
            self._beat = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Renew this worker's leases every ``lease_ttl / 3`` while it holds any."""
        keys = [self.keys["slots"], self.keys["workers"]]
        while self._leases and not self._closed:
            try:
                with anyio.fail_after(self.limits.shared_timeout):
                    args: list[str | int] = [self._ttl, self.worker, *self._leases]
                    self.workers = max(1, int(await self._scripts["beat"](keys=keys, args=args)))
            except _FAILURES as exc:
                log.debug("%s: renewing shared leases failed: %r", self.provider, exc)
            await anyio.sleep(self.limits.lease_ttl / 3)

    def _unavailable(self, exc: BaseException | None) -> None:
        """Redis failed (or is known down): fall back (None) or raise, per the policy."""
        now = time.monotonic()
        if exc is not None:
            if not self.degraded:
                self.degraded = True
                self._probe = PROBE_AFTER[0]
                self._fallback = None
                action = (
                    f"using this worker's share of the limits (1/{self.workers})"
                    if self.limits.on_shared_failure == "local"
                    else "failing calls"
                )
                log.warning(
                    "%s: shared limits at %s unavailable (%s); %s until it is back",
                    self.provider,
                    self.limits.store_name,
                    self._describe(exc),
                    action,
                )
            else:
                self._probe = min(PROBE_AFTER[1], self._probe * 2)
            self._retry_at = now + self._probe
        if self.limits.on_shared_failure == "raise":
            detail = self._describe(exc) if exc is not None else "still unavailable"
            raise SharedLimitsError(
                f"shared limits at {self.limits.store_name} unavailable ({detail})",
                provider=self.provider,
            )
        return None

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("%s: shared limits at %s are back", self.provider, self.limits.store_name)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return f"no answer within {self.limits.shared_timeout}s"
        shared = self.limits.shared
        secrets: tuple[str, ...] = ()
        if isinstance(shared, str):
            password = urlsplit(shared).password
            secrets = (shared, password) if password else (shared,)
        return redact_text(f"{type(exc).__name__}: {exc}", secrets)

    def __repr__(self) -> str:
        return f"<RedisLimits {self.provider} {self.limits.store_name}{' degraded' if self.degraded else ''}>"
