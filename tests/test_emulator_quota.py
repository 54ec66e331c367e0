"""The emulator's quotas: each provider's own throttle answer above a rate or a concurrency cap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest
from emu_wire import Raw, Wire

import aiollm
from aiollm.testing import Cadence, Emulator, Quota

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(reply_tokens=3) as emulator:
        yield emulator


@pytest.fixture
async def wire(emu: Emulator) -> AsyncIterator[Wire]:
    async with aiohttp.ClientSession() as session:
        yield Wire(emu, session)


async def burst(wire: Wire, provider: str, n: int) -> list[Raw]:
    out: list[Raw] = []

    async def one() -> None:
        out.append(await wire.request(provider, stream=False))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return out


def throttled(provider: str, raw: Raw) -> bool:
    if provider == "qianfan":
        return raw.status == 200 and raw.json().get("error_code") == 18
    return raw.status == 429


@pytest.mark.parametrize("provider", ["openai", "gateway", "dashscope", "qianfan"])
async def test_rate_above_the_bucket_gets_the_providers_throttle(
    emu: Emulator, wire: Wire, provider: str
) -> None:
    # one request per 4 s refills the bucket: of 6 sent at once, the burst of 2 passes
    emu.set_quota(provider, Quota(rate=0.25, burst=2))
    answers = await burst(wire, provider, 6)
    refused = [raw for raw in answers if throttled(provider, raw)]
    assert len(refused) == 4 and emu.stats.throttled == {provider: 4}
    raw = refused[0]
    if provider == "openai":
        assert raw.json()["error"]["code"] == "rate_limit_exceeded"
    elif provider == "gateway":
        assert raw.json() == {"code": 429, "msg": "too many requests"}
    elif provider == "dashscope":
        assert raw.json()["code"] == "Throttling.RateQuota"
    else:
        assert raw.json()["error_msg"] == "Open api qps request limit reached"
    if provider == "qianfan":
        assert "Retry-After" not in raw.headers
    else:
        assert 0 < float(raw.headers["Retry-After"]) <= 4.0
    assert sum(r.fault == "throttled" for r in emu.stats.log) == 4


async def test_retry_after_can_be_left_out(emu: Emulator, wire: Wire) -> None:
    emu.set_quota("openai", Quota(rate=0.5, retry_after=False))
    first, second = await wire.request("openai"), await wire.request("openai")
    assert first.status == 200 and second.status == 429
    assert "Retry-After" not in second.headers


async def test_the_bucket_refills_at_the_rate(emu: Emulator, wire: Wire) -> None:
    emu.set_quota("openai", Quota(rate=20.0, burst=1))
    assert (await wire.request("openai")).status == 200
    await anyio.sleep(0.06)  # more than 1/20 s: one request's worth is back
    assert (await wire.request("openai")).status == 200
    emu.set_quota("openai", None)
    assert all(r.status == 200 for r in await burst(wire, "openai", 5))


@pytest.mark.parametrize(
    ("provider", "code"),
    [("openai", "rate_limit_exceeded"), ("dashscope", "Throttling"), ("qianfan", 336100)],
)
async def test_concurrency_cap(emu: Emulator, wire: Wire, provider: str, code: object) -> None:
    emu.cadence = Cadence(first_token=1.0)
    emu.set_quota(provider, Quota(concurrency=2))
    answers = await burst(wire, provider, 5)
    refused = [r for r in answers if r.status == 429 or "error_code" in r.body.decode()]
    assert len(refused) == 3 and emu.stats.throttled == {provider: 3}
    body = refused[0].json()
    assert code in (body.get("code"), body.get("error_code"), body.get("error", {}).get("code"))
    # the slots come back when the answers are done
    assert (await wire.request(provider)).status == 200


async def test_client_sees_a_rate_limit_error(emu: Emulator) -> None:
    emu.set_quota("dashscope", Quota(rate=0.5))
    async with emu.client() as client:
        await client.chat("dashscope/qwen-plus", [{"role": "user", "content": "hi"}])
        with pytest.raises(aiollm.RateLimitError):
            await client.chat(
                "dashscope/qwen-plus", [{"role": "user", "content": "hi"}], max_retries=0
            )


def test_quota_is_validated() -> None:
    for bad in ({"rate": 0}, {"rate": float("inf")}, {"burst": 0.5}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            Quota(**bad)  # type: ignore[arg-type]
    emu = Emulator(quotas={"openai": Quota(rate=3)})
    assert emu.services["openai"].quota_state is not None


async def test_openai_answers_carry_rate_limit_headers(emu: Emulator, wire: Wire) -> None:
    emu.set_quota("openai", Quota(rate=0.5, burst=3))
    first = await wire.request("openai")
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-reset-requests"].endswith("ms")
    for _ in range(2):
        await wire.request("openai")
    refused = await wire.request("openai")
    assert refused.status == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"
    emu.set_quota("dashscope", Quota(rate=0.5))
    assert "x-ratelimit-limit-requests" not in (await wire.request("dashscope")).headers
