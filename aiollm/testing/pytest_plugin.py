"""pytest fixtures for code that uses aiollm: ``pytest_plugins = ["aiollm.testing.pytest_plugin"]``.

``aiollm_emulator`` is a running :class:`~aiollm.testing.Emulator` (use with
``@pytest.mark.anyio``); ``@pytest.mark.aiollm_emulator(**kwargs)`` passes its keyword arguments
to the constructor, e.g. ``@pytest.mark.aiollm_emulator(fault_rate=0.05, seed=1)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._emulator import Emulator


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``aiollm_emulator`` marker."""
    config.addinivalue_line(
        "markers", "aiollm_emulator(**kwargs): arguments for the aiollm_emulator fixture's Emulator"
    )


@pytest.fixture
async def aiollm_emulator(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """A running :class:`~aiollm.testing.Emulator` on 127.0.0.1 (use with ``@pytest.mark.anyio``)."""
    marker = request.node.get_closest_marker("aiollm_emulator")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    async with Emulator(**kwargs) as emu:
        yield emu
