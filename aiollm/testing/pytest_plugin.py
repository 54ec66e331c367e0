"""pytest fixtures for code that uses aiollm: ``pytest_plugins = ["aiollm.testing.pytest_plugin"]``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._emulator import Emulator


@pytest.fixture
async def aiollm_emulator() -> AsyncIterator[Emulator]:
    """A running :class:`~aiollm.testing.Emulator` on 127.0.0.1 (use with ``@pytest.mark.anyio``)."""
    async with Emulator() as emu:
        yield emu
