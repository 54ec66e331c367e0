"""Test support: the embedded emulator of every provider, and a pytest fixture.

::

    from aiollm.testing import Emulator

    async with Emulator() as emu:
        async with emu.client() as client:
            reply = await client.chat("qianfan/llama_2_7b", messages=[...])

In a test suite, ``pytest_plugins = ["aiollm.testing.pytest_plugin"]`` provides the
``aiollm_emulator`` fixture (for ``@pytest.mark.anyio`` tests).
"""

from __future__ import annotations

from ._emulator import Cadence, Emulator, Fault, Stats, split_tokens

__all__ = ["Cadence", "Emulator", "Fault", "Stats", "split_tokens"]
