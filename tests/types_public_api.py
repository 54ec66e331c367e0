"""Checked by ``mypy --strict`` (``nox -s typecheck``), not run: the public API's types.

Each ``assert_type`` fails the type check if the library's annotations drift.
"""

from __future__ import annotations

from typing_extensions import assert_type

import aiollm
from aiollm import fanout
from aiollm.testing import Emulator


async def public_types(emu: Emulator) -> None:
    async with aiollm.Client(timeout=5) as client:  # a number of seconds, as at run time
        assert_type(client, aiollm.Client)
    async with emu.client() as client:
        assert_type(client, aiollm.Client)
        streams = {"a": client.stream("openai/m", prompt="hi")}
        async with fanout.merge(streams) as events:
            async for key, event in events:
                assert_type(key, str)
                assert_type(event, aiollm.Event)
        async for index, _ in fanout.merge([client.stream("openai/m", prompt="hi")]):
            assert_type(index, int)
        try:
            await client.chat("openai/m", prompt="hi")
        except aiollm.StreamInterrupted as exc:
            assert_type(exc.error, aiollm.AiollmError | None)
        except TimeoutError as exc:  # aiollm.TimeoutError is a builtin TimeoutError
            assert_type(exc, TimeoutError)
