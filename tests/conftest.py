"""Shared fixtures: every async test runs on asyncio (aiohttp's loop) via anyio's pytest plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aiollm import Client
from aiollm.testing import Emulator

pytest_plugins = ["aiollm.testing.pytest_plugin"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A running emulator of every provider."""
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[Client]:
    """A client pointed at ``emu`` with fast retries."""
    from aiollm import RetryPolicy

    async with emu.client(retry=RetryPolicy(backoff_base=0.01, backoff_max=0.05)) as c:
        yield c
