"""Hot-path details the benchmarks rely on: buffered reads arm no timer; old objects stay out of
the garbage collector's way while a run is measured."""

from __future__ import annotations

import gc
from typing import Any, cast

import anyio
import pytest

from aiollm import Client, Finish, TextDelta
from aiollm.bench import run
from aiollm.bench._selfwatch import old_objects_frozen
from aiollm.providers import Call
from aiollm.testing import Emulator

pytestmark = pytest.mark.anyio


async def test_buffered_body_is_read_without_a_timer(
    emu: Emulator, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = client.provider("openai")
    call = Call(op="chat", model="m", stream=True, messages=[{"role": "user", "content": "hi"}])
    request = provider.build_request(provider.prepare(call), emu.openai_key)
    resp = await client._transport.open(request, provider="openai")
    try:
        await anyio.sleep(0.05)  # the whole (uncadenced) body is buffered by now

        def no_timer(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a timer was armed for data that had already arrived")

        monkeypatch.setattr("aiollm._response.within", no_timer)
        body = b""
        while chunk := await resp.next_chunk():
            body += chunk
        assert body.endswith(b"data: [DONE]\n\n")
        assert emu.openai_key not in repr(resp)
    finally:
        resp.close()


def test_old_objects_frozen_only_while_measuring() -> None:
    assert gc.get_freeze_count() == 0
    with old_objects_frozen():
        assert gc.get_freeze_count() > 0  # what existed before is left alone
    assert gc.get_freeze_count() == 0
    gc.freeze()  # someone else froze objects: theirs to undo
    try:
        frozen = gc.get_freeze_count()
        with old_objects_frozen():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        with old_objects_frozen():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


class _FreezeWatchingStream:
    """A stream of one text delta that notes whether old objects were frozen as it ran."""

    attempts = 1
    read_at = None

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen
        self.events: list[Any] = [TextDelta("hi"), Finish("stop")]

    async def __aenter__(self) -> _FreezeWatchingStream:
        self.seen.append(gc.get_freeze_count())
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _FreezeWatchingStream:
        return self

    async def __anext__(self) -> Any:
        await anyio.sleep(0)
        if not self.events:
            raise StopAsyncIteration
        return self.events.pop(0)


async def test_a_run_freezes_old_objects_after_its_warmup_and_thaws_them() -> None:
    seen: list[int] = []

    class FakeClient:
        def stream(self, model: str, messages: Any, **kwargs: Any) -> _FreezeWatchingStream:
            return _FreezeWatchingStream(seen)

    fake = cast(Client, FakeClient())
    result = await run(models=["openai/m"], client=fake, concurrency=2, requests=6, warmup=2)
    assert result.runs[0].completed == 6
    assert len(seen) == 8
    assert seen[:2] == [0, 0]  # the warm-up: nothing frozen yet
    assert all(count > 0 for count in seen[2:])  # the measured requests
    assert gc.get_freeze_count() == 0
