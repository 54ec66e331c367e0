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

from ._emulator import Cadence, Emulator, EmulatorState
from ._faults import FAULT_KINDS, Fault, FaultKind
from ._quota import Quota
from ._reply import Reply, ToolCall, split_tokens
from ._stats import RequestRecord, SentFrame, Stats

__all__ = [
    "FAULT_KINDS",
    "Cadence",
    "Emulator",
    "EmulatorState",
    "Fault",
    "FaultKind",
    "Quota",
    "Reply",
    "RequestRecord",
    "SentFrame",
    "Stats",
    "ToolCall",
    "split_tokens",
]
