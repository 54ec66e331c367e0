"""Limits within this process: the :class:`Lease` a call holds, and :class:`LocalLimits`
(rate, concurrency and a tokens-per-minute budget that drains continuously).

A :class:`~aiollm.limits.ProviderLimiter` uses them alone, or as the fallback of shared
limits while Redis is unreachable (:mod:`aiollm.shared_limits`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from .limits import Limits

__all__ = ["FREE", "Lease", "LocalLimits"]


class Lease:
    """A granted call: a concurrency slot and a token reservation.

    :meth:`settle` records the tokens the call really used; :meth:`release` (idempotent,
    synchronous) gives the slot back once the HTTP exchange is over.
    """

    __slots__ = ("_local", "_released", "estimate", "used")

    def __init__(self, local: LocalLimits | None = None) -> None:
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

    def give_back(self) -> None:
        """The call was not sent (a cancel, a timeout, a cool-down beyond the deadline while
        waiting): the reservation and the slot go back."""
        self.settle(0)
        self.release()


FREE = Lease()
"""The lease of a provider without limits: nothing to hold or release."""


class LocalLimits:
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
        now = time.monotonic()
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
        """A slot, then ``estimate`` tokens of the budget, then a rate token."""
        if self.unlimited:
            return FREE
        lease = Lease(self)
        if self.slots is not None:
            await self.slots.acquire_on_behalf_of(lease)
        try:
            if self.tpm:
                await self.reserve(lease, estimate)
            if self.rate is not None:
                await self.rate.acquire()
        except BaseException:
            lease.give_back()  # nothing was sent
            raise
        return lease

    async def pace(self) -> None:
        """Wait for a rate token (a retry within a held lease)."""
        if self.rate is not None:
            await self.rate.acquire()
