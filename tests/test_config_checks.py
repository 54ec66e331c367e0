"""Mistakes in configuration and call arguments are reported at once, by name, before sending."""

from __future__ import annotations

from typing import Any

import pytest

import aiollm
from aiollm import Client, ConfigurationError, InvalidRequestError, Limits, fanout
from aiollm.providers import PROVIDERS, load_provider
from aiollm.testing import Emulator, Fault

pytestmark = pytest.mark.anyio

MSGS = [{"role": "user", "content": "hi"}]


# -- the client's configuration ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"providers": {"opneai": {"api_key": "k"}}},
            r"unknown provider 'opneai'.*did you mean 'openai'\?",
        ),
        (
            {"limits": {"opnai": Limits(max_concurrency=2)}},
            r"unknown provider 'opnai' in limits=.*did you mean 'openai'\?",
        ),
        (
            {"providers": {"openai": {"apikey": "k"}}},
            r"unknown setting 'apikey' for provider 'openai'; did you mean 'api_key'\?",
        ),
        (
            {"providers": {"qianfan": {"secret_key": "k"}}},
            r"unknown setting 'secret_key'.*valid: access_token, ak, base_url, sk, token_timeout",
        ),
        (
            {"limits": {"openai": {"max_concurrency": 2}}},
            r"limits\['openai'\] must be an aiollm.Limits, got dict",
        ),
        (
            {"providers": {"openai": "sk-key"}},
            r"providers\['openai'\] must be a mapping of settings, got str",
        ),
        (
            {"timeout": "abc"},
            r"timeout must be a number of seconds or an aiollm.Timeout, got 'abc'",
        ),
        ({"timeout": -1}, r"timeout must be a positive number"),
        ({"max_retries": -1}, r"max_retries must be an integer >= 0"),
        ({"retry": 3}, r"retry= must be an aiollm.RetryPolicy"),
    ],
)
def test_client_configuration_mistakes_fail_when_the_client_is_built(
    kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        Client(env={}, **kwargs)


def test_every_provider_declares_its_setting_keys() -> None:
    for name in PROVIDERS:
        keys = load_provider(name).setting_keys
        assert "base_url" in keys or "url" in keys, name


async def test_the_emulator_settings_and_a_numeric_timeout_are_accepted() -> None:
    async with Emulator() as emu:
        async with Client(providers=emu.settings(), env={}, timeout=5) as client:
            assert client._transport.timeout.total == 5.0
            reply = await client.chat("openai/m", MSGS)
    assert reply.text


# -- per-call arguments ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"messages": "hello"}, InvalidRequestError, r"messages must be a list of .* got str"),
        ({"messages": [{"content": "hi"}]}, InvalidRequestError, r"messages\[0\] has no 'role'"),
        ({"messages": [{"role": "user"}]}, InvalidRequestError, r"messages\[0\] has no 'content'"),
        ({"messages": ["hi"]}, InvalidRequestError, r"messages\[0\] must be a dict"),
        ({"messages": MSGS, "timeout": "abc"}, ConfigurationError, r"timeout must be a number"),
        ({"messages": MSGS, "timeout": -1}, ConfigurationError, r"timeout must be a positive"),
        ({"messages": MSGS, "max_retries": -1}, ConfigurationError, r"max_retries must be"),
    ],
)
async def test_call_argument_mistakes_are_raised_before_sending(
    kwargs: dict[str, Any], error: type[Exception], expected: str
) -> None:
    async with Emulator() as emu, emu.client() as client:
        with pytest.raises(error, match=expected):
            await client.chat("openai/m", **kwargs)
        with pytest.raises(error, match=expected):
            client.stream("dashscope/qwen-turbo", **kwargs)
        assert sum(emu.stats.requests.values()) == 0


async def test_an_assistant_message_with_tool_calls_needs_no_content() -> None:
    async with Emulator() as emu, emu.client() as client:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "1", "content": "sunny"},
        ]
        stream = client.stream("openai/m", messages)
        await stream.aclose()


# -- errors: builtin TimeoutError, hints ---------------------------------------------------------
async def test_aiollm_timeout_is_a_builtin_timeout_error() -> None:
    async with Emulator() as emu:
        emu.script("openai", Fault("stall", after_tokens=1))
        async with emu.client(max_retries=0) as client:
            with pytest.raises(TimeoutError) as info:
                await client.chat("openai/m", MSGS, timeout=aiollm.Timeout(first_byte=0.5))
    assert isinstance(info.value, aiollm.TimeoutError) and info.value.phase == "first_byte"


async def test_a_404_names_the_requested_url_and_hints_at_v1() -> None:
    async with Emulator() as emu:
        settings = {"openai": {"base_url": emu.url, "api_key": "sk-secret-123456"}}
        async with Client(providers=settings, env={}, max_retries=0) as client:
            with pytest.raises(aiollm.NotFoundError) as info:
                await client.chat("openai/m", MSGS)
    message = str(info.value)
    assert f"requested {emu.url}/chat/completions" in message
    assert "ends in /v1" in message and "OPENAI_BASE_URL" in message
    assert "sk-secret-123456" not in message


async def test_a_401_names_the_key_to_check() -> None:
    async with Emulator() as emu:
        settings = {"openai": {"base_url": f"{emu.url}/v1", "api_key": "sk-wrong-key"}}
        async with Client(providers=settings, env={}) as client:
            with pytest.raises(aiollm.AuthenticationError) as info:
                await client.chat("openai/m", MSGS)
    assert "check the api_key setting or OPENAI_API_KEY" in str(info.value)
    assert "sk-wrong-key" not in str(info.value)


async def test_merge_keeps_the_keys() -> None:
    async with Emulator() as emu, emu.client() as client:
        streams = {"a": client.stream("openai/m", MSGS), "b": client.stream("dashscope/q", MSGS)}
        keys: set[str] = set()
        async with fanout.merge(streams) as events:
            async for key, _event in events:
                keys.add(key)
    assert keys == {"a", "b"}


async def test_a_base_url_that_is_no_url_is_a_transport_error_naming_it() -> None:
    settings = {"openai": {"base_url": "http://[::1", "api_key": "sk-secret-key"}}
    async with Client(providers=settings, env={}) as client:
        with pytest.raises(aiollm.TransportError) as info:
            await client.chat("openai/m", MSGS, max_retries=0)
    message = str(info.value)
    assert "invalid request URL 'http://[::1/chat/completions'" in message
    assert "check the base URL" in message and "sk-secret-key" not in message
