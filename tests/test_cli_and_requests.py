"""The command line, and request shapes through aioresponses (no server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import anyio
import pytest
from aioresponses import aioresponses

import aiollm


def test_emulator_command_serves_until_interrupted() -> None:
    with socket_port() as port:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiollm.cli", "emulator", "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first
        deadline = time.monotonic() + 10
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    data=b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
                    headers={"Authorization": "Bearer emu-openai-key"},
                )
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert b"chat.completion" in resp.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


class socket_port:
    """A free TCP port on 127.0.0.1."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        return None


def test_chat_command_reports_missing_key(capsys: pytest.CaptureFixture[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_",))}
    proc = subprocess.run(
        [sys.executable, "-m", "aiollm.cli", "chat", "openai/gpt-4o-mini", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr


@pytest.mark.anyio
async def test_extra_headers_params_and_body_shape() -> None:
    url = "http://api.test/v1/chat/completions"
    body = (
        b'{"id":"c1","choices":[{"index":0,"message":{"content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    )
    with aioresponses() as mocked:
        mocked.post(url, body=body, content_type="application/json")
        async with aiollm.Client(
            providers={"openai": {"base_url": "http://api.test/v1", "api_key": "sk-abc"}}, env={}
        ) as client:
            reply = await client.chat(
                "openai/org/model-x",
                [{"role": "user", "content": "hi"}],
                extra_headers={"X-Trace": "t1"},
                temperature=0.2,
                custom_field={"a": 1},
            )
        assert reply.text == "ok" and reply.request_id == "c1"
        ((_key, calls),) = mocked.requests.items()
        sent: Any = calls[0].kwargs
    assert sent["headers"]["X-Trace"] == "t1"
    assert sent["headers"]["Authorization"] == "Bearer sk-abc"
    import json

    payload = json.loads(sent["data"])
    assert payload["model"] == "org/model-x"  # split at the first "/" only
    assert payload["temperature"] == 0.2 and payload["custom_field"] == {"a": 1}
    assert "stream" not in payload


@pytest.mark.anyio
async def test_per_call_timeout_overrides_total() -> None:
    async def never(*_: Any, **__: Any) -> None:
        await anyio.sleep(10)

    with aioresponses() as mocked:
        mocked.post("http://api.test/v1/chat/completions", callback=never)
        async with aiollm.Client(
            providers={"openai": {"base_url": "http://api.test/v1", "api_key": "k"}},
            env={},
            max_retries=0,
        ) as client:
            start = anyio.current_time()
            with pytest.raises(aiollm.TimeoutError) as info:
                await client.chat("openai/m", [{"role": "user", "content": "x"}], timeout=0.1)
    assert info.value.phase == "total"
    assert anyio.current_time() - start < 5  # the timeout, not the 10 s answer


@pytest.mark.anyio
async def test_unrecognised_body_is_bounded() -> None:
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>" + b"x" * (1024 * 1024 + 10), content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiollm.Client(
            providers={"openai": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k"}},
            env={},
            max_retries=0,
        ) as client:
            with pytest.raises(aiollm.ProtocolError, match="over 1048576 bytes"):
                await client.chat("openai/m", [{"role": "user", "content": "x"}])
    finally:
        await runner.cleanup()
