"""Shared fixtures: every async test runs on asyncio (aiohttp's loop) via anyio's pytest plugin."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse

from aiollm import Client
from aiollm.testing import Emulator

pytest_plugins = ["aiollm.testing.pytest_plugin"]


class _SentRequest:
    """Stands for a request writer that has finished (aioresponses sends nothing)."""

    output_size = 0


class _CompatResponse(ClientResponse):
    """aiohttp 3.14 made ``stream_writer`` a required argument that aioresponses 0.7.x omits."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(method, url, **kwargs)


if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
    aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[misc]


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
