"""Hot-path details the benchmarks rely on: buffered reads arm no timer; redaction stays."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aiollm import Client
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
