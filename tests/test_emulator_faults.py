"""The emulator's faults and its request log, read as raw HTTP (no aiollm client in between)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from emu_wire import Raw, Wire

from aiollm import AiollmError, RetryPolicy, Timeout
from aiollm.testing import Cadence, Emulator, Fault
from aiollm.testing.qianfan import QianfanFault

pytestmark = pytest.mark.anyio

PROVIDERS = ["openai", "gateway", "dashscope", "qianfan"]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(reply="one two three four five six") as emulator:
        emulator.state.gateway.allow_stream = True
        yield emulator


@pytest.fixture
async def wire(emu: Emulator) -> AsyncIterator[Wire]:
    async with aiohttp.ClientSession() as session:
        yield Wire(emu, session)


def text_of(provider: str, raw: Raw) -> str:
    """The text the frames of a streamed answer deliver (DashScope: incremental mode)."""
    out = []
    for frame in raw.datas():
        if provider in ("openai", "gateway"):
            for choice in frame.get("choices", []):
                out.append(choice["delta"].get("content") or "")
        elif provider == "dashscope":
            out.append(frame.get("output", {}).get("text", ""))
        else:
            out.append(frame.get("result", ""))
    return "".join(out)


INCREMENTAL = {"incremental_output": True}


def params(provider: str) -> dict[str, Any]:
    return INCREMENTAL if provider == "dashscope" else {}


async def until(predicate: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_log_holds_exactly_the_delivered_text(
    emu: Emulator, wire: Wire, provider: str
) -> None:
    raw = await wire.request(provider, params=params(provider))
    assert raw.status == 200 and raw.error is None
    (record,) = [r for r in emu.stats.log if r.route.endswith(("chat", "generation"))]
    assert record.text == text_of(provider, raw) == "one two three four five six"
    assert record.outcome == "completed" and record.streamed and record.status == 200
    assert record.fault is None and record.request_id
    assert record.request_id in raw.body.decode()
    times = [f.time for f in record.frames]
    assert times == sorted(times) and record.first_frame_time == times[0]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reset_mid_stream_after_the_logged_frames(
    emu: Emulator, wire: Wire, provider: str
) -> None:
    emu.script(provider, Fault("reset", after_tokens=2))
    raw = await wire.request(provider, params=params(provider))
    assert raw.error is not None  # the body broke off
    record = emu.stats.log[-1]
    assert record.outcome == "reset" and record.fault == "reset"
    assert record.text == text_of(provider, raw) == "one two"
    await until(lambda: emu.stats.disconnects == 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reset_before_the_first_frame(emu: Emulator, wire: Wire, provider: str) -> None:
    emu.script(provider, Fault("reset"))
    try:
        raw = await wire.request(provider, params=params(provider))
    except aiohttp.ClientError:
        pass  # the head may be lost with the connection
    else:
        assert raw.error is not None and text_of(provider, raw) == ""
    assert emu.stats.log[-1].outcome == "reset" and emu.stats.log[-1].text == ""


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("after", [0, 3])
async def test_stall_sends_nothing_more_until_the_client_leaves(
    emu: Emulator, wire: Wire, provider: str, after: int
) -> None:
    emu.script(provider, Fault("stall", after_tokens=after))
    raw = await wire.request(provider, params=params(provider), read_timeout=0.3)
    assert isinstance(raw.error, TimeoutError)
    expected = " ".join("one two three".split()[:after])
    assert text_of(provider, raw) == expected
    await until(lambda: emu.stats.disconnects == 1)
    record = emu.stats.log[-1]
    assert record.outcome == "stall" and record.text == expected


@pytest.mark.parametrize("provider", ["openai", "dashscope", "qianfan"])
async def test_keepalive_stall_sends_only_comments(
    emu: Emulator, wire: Wire, provider: str
) -> None:
    emu.script(provider, Fault("keepalive", after_tokens=1, interval=0.02))
    raw = await wire.request(provider, params=params(provider), read_timeout=0.4)
    assert isinstance(raw.error, TimeoutError)
    assert text_of(provider, raw) == "one"
    assert raw.body.count(b": keep-alive\n\n") >= 2
    keepalives = [e for e in raw.events() if not e["data"]]
    assert keepalives and all(e["comments"] == [" keep-alive"] for e in keepalives)
    await until(lambda: emu.stats.disconnects == 1)
    assert emu.stats.log[-1].outcome == "keepalive"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_truncate_ends_the_body_cleanly_without_the_end(
    emu: Emulator, wire: Wire, provider: str
) -> None:
    emu.script(provider, Fault("truncate", after_tokens=2))
    raw = await wire.request(provider, params=params(provider))
    assert raw.status == 200 and raw.error is None
    assert text_of(provider, raw) == "one two"
    assert b"[DONE]" not in raw.body and b'"stop"' not in raw.body
    assert b'"is_end":true' not in raw.body
    assert emu.stats.log[-1].outcome == "truncate"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_frame_then_the_end(emu: Emulator, wire: Wire, provider: str) -> None:
    emu.script(provider, Fault("malformed", after_tokens=1))
    raw = await wire.request(provider, params=params(provider))
    events = [e for e in raw.events() if e["data"]]
    assert json.loads(events[0]["data"])  # the first frame is fine
    with pytest.raises(ValueError):
        json.loads(events[-1]["data"])
    assert emu.stats.log[-1].outcome == "malformed"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrong_content_type(emu: Emulator, wire: Wire, provider: str) -> None:
    emu.script(provider, Fault("content_type"))
    raw = await wire.request(provider, params=params(provider))
    assert raw.status == 200 and raw.headers["Content-Type"].startswith("text/html")
    assert raw.body.startswith(b"<html>")
    assert emu.stats.faults == {"content_type": 1}


@pytest.mark.parametrize("provider", ["openai", "dashscope", "gateway"])
@pytest.mark.parametrize("retry_after", [None, 0.5])
async def test_429_with_and_without_retry_after(
    emu: Emulator, wire: Wire, provider: str, retry_after: float | None
) -> None:
    emu.script(provider, Fault("http", status=429, retry_after=retry_after))
    raw = await wire.request(provider, params=params(provider))
    assert raw.status == 429
    assert raw.headers.get("Retry-After") == (None if retry_after is None else "0.5")
    assert emu.stats.faults == {"http:429": 1} and emu.stats.log[-1].outcome == "error"


async def test_dashscope_in_stream_error_with_its_status(emu: Emulator, wire: Wire) -> None:
    emu.script(
        "dashscope",
        Fault("error", code="Throttling", status=429, message="slow", in_stream=True),
        Fault("error", code="InternalError", message="boom", after_tokens=2),
    )
    first = await wire.request("dashscope", params=INCREMENTAL)
    assert first.status == 200
    (event,) = first.events()
    assert event["event"] == "error" and event["comments"] == ["HTTP_STATUS/429"]
    assert json.loads(event["data"])["code"] == "Throttling"
    second = await wire.request("dashscope", params=INCREMENTAL)
    *results, error = second.events()
    assert [e["event"] for e in results] == ["result", "result"]
    assert error["event"] == "error" and error["comments"] == ["HTTP_STATUS/500"]
    assert json.loads(error["data"])["message"] == "boom"


@pytest.mark.parametrize("code", [18, 110, 111])
async def test_qianfan_http_200_error_bodies(emu: Emulator, wire: Wire, code: int) -> None:
    emu.script("qianfan", QianfanFault("error", code=code, message=f"e{code}"))
    raw = await wire.request("qianfan")
    assert raw.status == 200 and raw.headers["Content-Type"].startswith("application/json")
    assert raw.json() == {"error_code": code, "error_msg": f"e{code}"}


async def test_expire_token_forces_a_refresh(emu: Emulator, wire: Wire) -> None:
    token = await wire.qianfan_token()
    emu.script("qianfan", Fault("error", code=111, message="expired", expire_token=True))
    url = f"{emu.url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/m"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for expected in (111, 111):  # the fault, then the token really is expired
        async with wire.session.post(url, params={"access_token": token}, json=body) as resp:
            assert (await resp.json())["error_code"] == expected
    fresh = await wire.qianfan_token()
    async with wire.session.post(url, params={"access_token": fresh}, json=body) as resp:
        assert "result" in await resp.json()
    assert emu.stats.tokens_issued == {"qianfan": 2}


async def test_gateway_token_issuance_is_counted(emu: Emulator, wire: Wire) -> None:
    await wire.gateway_token()
    await wire.gateway_token()
    assert emu.stats.tokens_issued["gateway"] == 2 == len(emu.state.gateway.issued)
    assert all("secret" not in (body or {}) for body in emu.stats.bodies)


async def test_non_streamed_faults(emu: Emulator, wire: Wire) -> None:
    emu.script("openai", Fault("truncate"), Fault("malformed"), Fault("error", after_tokens=2))
    cut = await wire.request("openai", stream=False)
    with pytest.raises(ValueError):
        cut.json()
    broken = await wire.request("openai", stream=False)
    with pytest.raises(ValueError):
        broken.json()
    late = await wire.request("openai", stream=False)
    assert late.status == 400 and late.json()["error"]["message"] == "scripted fault"
    assert [r.outcome for r in emu.stats.log] == ["truncate", "malformed", "error"]


async def test_cadence_is_kept_and_logged(wire: Wire) -> None:
    emu = wire.emu
    emu.cadence = Cadence(first_token=0.05, per_token=0.02)
    start = anyio.current_time()
    raw = await wire.request("openai")
    assert anyio.current_time() - start >= 0.05 + 5 * 0.02
    record = emu.stats.log[-1]
    times = [f.time for f in record.frames if f.text]
    assert len(times) == 6 == len(raw.datas()) - 1
    # frames are due at fixed offsets from the head: each at or after its time
    assert times[0] - record.started >= 0.05
    for i in range(1, 6):
        assert times[i] - times[0] >= i * 0.02 - 0.002


async def test_random_faults_are_reproducible_by_seed() -> None:
    kinds = ["http", "error", "truncate", "malformed", "content_type"]

    async def labels(seed: int) -> list[str | None]:
        async with Emulator(fault_rate=0.5, seed=seed, fault_kinds=kinds) as emu:
            emu.state.gateway.allow_stream = True
            async with aiohttp.ClientSession() as session:
                wire = Wire(emu, session)
                for provider in PROVIDERS * 6:
                    await wire.request(provider, params=params(provider))
            chat = [r for r in emu.stats.log if not r.route.endswith("token")]
            assert sum(emu.stats.faults.values()) == sum(r.fault is not None for r in chat)
            assert {label.split(":")[0] for label in emu.stats.faults} <= set(kinds)
            return [r.fault for r in chat]

    first, again, other = await labels(1), await labels(1), await labels(2)
    assert first == again != other
    assert 3 <= sum(f is not None for f in first) <= 21


async def test_fault_rate_is_validated_and_can_be_turned_off() -> None:
    with pytest.raises(ValueError):
        Emulator(fault_rate=1.5)
    emu = Emulator(fault_rate=0.1, seed=3)
    assert emu.random_faults is not None and emu.random_faults.seed == 3
    emu.set_fault_rate(0)
    assert emu.random_faults is None
    with pytest.raises(ValueError):
        emu.set_fault_rate(-0.1)


async def test_log_limit_keeps_the_latest() -> None:
    async with Emulator(log_limit=2) as emu:
        async with aiohttp.ClientSession() as session:
            wire = Wire(emu, session)
            for _ in range(4):
                await wire.request("openai")
            ids = [r.request_id for r in emu.stats.log]
            assert ids == ["chatcmpl-emu3", "chatcmpl-emu4"]
            assert len(emu.stats.bodies) == len(emu.stats.request_times) == 2
            assert emu.stats.record("chatcmpl-emu4") is emu.stats.log[-1]
            assert set(emu.stats.records_by_id()) == set(ids)
            emu.stats.reset()
            assert not emu.stats.log and emu.stats.log_limit == 2
            emu.stats.log_limit = 0
            await wire.request("openai")
            assert not emu.stats.log and emu.stats.requests["openai.chat"] == 1


async def test_random_faults_through_the_client_end_typed_and_match_the_log() -> None:
    models = ["openai/m", "dashscope/qwen-plus", "qianfan/llama_2_7b", "gateway/llama-2-7b-chat"]
    kinds = ["error", "http", "reset", "stall", "malformed", "truncate", "content_type"]
    async with Emulator(fault_rate=0.25, seed=11, fault_kinds=kinds) as emu:
        retry = RetryPolicy(backoff_base=0.01)
        ok = failed = 0
        async with emu.client(retry=retry, timeout=Timeout(idle=0.3, first_byte=2.0)) as client:
            for i in range(48):
                msgs = [{"role": "user", "content": f"question {i}"}]
                try:
                    completion = await client.stream(models[i % 4], msgs).final()
                except AiollmError:
                    failed += 1
                    continue
                ok += 1
                record = emu.stats.record(completion.request_id or "")
                assert record is not None and record.outcome == "completed"
                assert record.text == completion.text  # nothing duplicated or missing
    assert ok + failed == 48 and ok > failed
    assert sum(emu.stats.faults.values()) >= 5
    assert emu.stats.tokens_issued["qianfan"] >= 1
