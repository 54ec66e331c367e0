"""The ``openai`` provider against an OpenAI-compatible server this project did not write.

The server is the LiteLLM proxy (from PyPI) serving mock models: its ``mock_response``
answers without any upstream, model weights or network, so the test runs offline on a CPU.
Run it with ``nox -s external`` (which installs the proxy and sets ``AIOLLM_EXTERNAL=1``);
the default test run skips it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import aiollm
from aiollm import Client, Finish, RetryPolicy, TextDelta, Usage

pytestmark = pytest.mark.skipif(
    os.environ.get("AIOLLM_EXTERNAL") != "1",
    reason="needs the LiteLLM proxy: run `nox -s external`",
)

MASTER_KEY = "sk-aiollm-external-test"
MOCK_TEXT = "Hello from the mock model, streamed in pieces."
MSGS = [{"role": "user", "content": "hi"}]
CONFIG = f"""\
model_list:
  - model_name: mock-chat
    litellm_params:
      model: openai/mock-chat
      api_key: sk-upstream-never-called
      mock_response: "{MOCK_TEXT}"
  - model_name: mock-embed
    litellm_params:
      model: openai/text-embedding-3-small
      api_key: sk-upstream-never-called
      mock_response: [0.25, -0.5, 1.0]
  - model_name: mock-ratelimit
    litellm_params:
      model: openai/mock-ratelimit
      api_key: sk-upstream-never-called
      mock_response: "litellm.RateLimitError"
  - model_name: mock-overflow
    litellm_params:
      model: openai/mock-overflow
      api_key: sk-upstream-never-called
      mock_response: "litellm.ContextWindowExceededError"
general_settings:
  master_key: {MASTER_KEY}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def litellm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A LiteLLM proxy on 127.0.0.1 serving the mock models; yields its ``/v1`` base URL."""
    folder: Path = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text(CONFIG)
    log_path = folder / "server.log"
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "litellm.proxy.proxy_cli",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health/liveliness", timeout=2
                ) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"the LiteLLM proxy did not start:\n{tail}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
async def client(litellm_url: str) -> AsyncIterator[Client]:
    async with Client(
        providers={"openai": {"base_url": litellm_url, "api_key": MASTER_KEY}},
        env={},
        retry=RetryPolicy(backoff_base=0.01, backoff_max=0.05),
    ) as c:
        yield c


@pytest.mark.anyio
async def test_stream(client: Client) -> None:
    async with client.stream("openai/mock-chat", MSGS) as stream:
        events = [ev async for ev in stream]
    deltas = [ev.text for ev in events if isinstance(ev, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == MOCK_TEXT
    assert Finish("stop") in events
    completion = stream.completion
    assert completion.text == MOCK_TEXT and completion.finish_reason == "stop"
    # usage arrives in a final chunk because the request asks for stream_options.include_usage
    assert isinstance(completion.usage, Usage) and completion.usage.total_tokens
    assert completion.request_id and completion.provider == "openai"


@pytest.mark.anyio
async def test_a_request_with_tools_is_accepted_and_ends_cleanly(client: Client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with client.stream("openai/mock-chat", MSGS, tools=tools, tool_choice="auto") as s:
        events = [ev async for ev in s]
    assert isinstance(events[-1], Finish)
    assert s.completion.text == MOCK_TEXT and s.completion.tool_calls == []


@pytest.mark.anyio
async def test_chat(client: Client) -> None:
    reply = await client.chat("openai/mock-chat", MSGS, temperature=0.2, max_tokens=50)
    assert reply.text == MOCK_TEXT and reply.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens


@pytest.mark.anyio
async def test_complete(client: Client) -> None:
    reply = await client.complete("openai/mock-chat", "Once upon a time", max_tokens=20)
    assert reply.text == MOCK_TEXT and reply.finish_reason == "stop"


@pytest.mark.anyio
async def test_embed(client: Client) -> None:
    result = await client.embed("openai/mock-embed", "hello")
    assert result.embeddings == [[0.25, -0.5, 1.0]]
    assert result.provider == "openai"


@pytest.mark.anyio
async def test_concurrent_streams(client: Client) -> None:
    texts: list[str] = []

    async def one() -> None:
        texts.append((await client.stream("openai/mock-chat", MSGS).final()).text)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert texts == [MOCK_TEXT] * 20


@pytest.mark.anyio
async def test_rate_limit(client: Client) -> None:
    with pytest.raises(aiollm.RateLimitError) as info:
        await client.chat("openai/mock-ratelimit", MSGS, max_retries=0)
    assert info.value.status == 429 and info.value.retryable


@pytest.mark.anyio
async def test_context_overflow(client: Client) -> None:
    with pytest.raises(aiollm.ContextOverflowError) as info:
        await client.stream("openai/mock-overflow", MSGS, max_retries=0).final()
    assert info.value.status == 400


@pytest.mark.anyio
async def test_unknown_model(client: Client) -> None:
    with pytest.raises(aiollm.APIError) as info:
        await client.chat("openai/no-such-model", MSGS, max_retries=0)
    assert info.value.status is not None and 400 <= info.value.status < 500


@pytest.mark.anyio
async def test_wrong_key(litellm_url: str) -> None:
    async with Client(
        providers={"openai": {"base_url": litellm_url, "api_key": "sk-wrong-key-123"}}, env={}
    ) as client:
        with pytest.raises(aiollm.APIError) as info:
            await client.chat("openai/mock-chat", MSGS, max_retries=0)
    assert info.value.status is not None and 400 <= info.value.status < 500
    assert "sk-wrong-key-123" not in str(info.value)
