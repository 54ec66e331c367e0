"""Per-provider limits, throttling cool-down and the fan-out helpers, observed from the server."""

from __future__ import annotations

import gc
import itertools
import warnings
from typing import Any

import anyio
import pytest

import aiollm
from aiollm import Client, Limits, RetryPolicy, fanout
from aiollm.testing import Cadence, Emulator, Fault

pytestmark = pytest.mark.anyio

MSGS = [{"role": "user", "content": "hello"}]
MODEL = "openai/m"


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def all_cut_off(emu: Emulator) -> bool:
    """No stream open, none completed, and every stream whose head went out was disconnected."""
    opened = sum(record.streamed for record in emu.stats.log)
    stats = emu.stats
    return stats.open_streams == 0 and stats.completed == 0 and stats.disconnects == opened


def open_connections(client: Client) -> int:
    connector = client._transport.session.connector
    assert connector is not None
    return len(connector._acquired)


# -- limits -----------------------------------------------------------------------------------------
async def test_requests_per_second_is_smooth(emu: Emulator) -> None:
    async with emu.client(limits={"openai": Limits(requests_per_second=10)}) as client:
        start = anyio.current_time()
        await fanout.gather([client.chat(MODEL, MSGS) for _ in range(30)])
        elapsed = anyio.current_time() - start
    assert elapsed >= 2.0
    times = sorted(emu.stats.request_times)
    assert len(times) == 30
    most_in_a_second = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert most_in_a_second <= 13  # 10/s, +1 at the edges, +2 for arrival jitter


async def test_max_concurrency_holds_until_the_stream_closes(emu: Emulator) -> None:
    emu.cadence = Cadence(per_token=0.003)
    async with emu.client(limits={"openai": Limits(max_concurrency=3)}) as client:

        async def consume() -> str:
            async with client.stream(MODEL, MSGS) as stream:
                return (await stream.final()).text

        texts = await fanout.gather([consume for _ in range(12)])
    assert emu.stats.max_open_streams == 3
    assert len(set(texts)) == 1 and len(texts) == 12


async def test_limits_from_environment(emu: Emulator) -> None:
    emu.cadence = Cadence(per_token=0.002)
    env = {"AIOLLM_OPENAI_MAX_CONCURRENCY": "2"}
    async with Client(providers=emu.settings(), env=env) as client:
        await fanout.gather([client.chat(MODEL, MSGS) for _ in range(6)])
        assert client.limiter("openai").limits.max_concurrency == 2
    assert emu.stats.max_in_flight == 2  # non-streamed calls are bounded too


async def test_burst_of_429_pauses_the_provider_then_all_succeed(emu: Emulator) -> None:
    emu.script("openai", *[Fault("http", status=429, retry_after=0.3)] * 4)
    async with emu.client(
        limits={"openai": Limits(max_concurrency=4)},
        retry=RetryPolicy(max_retries=3, backoff_base=0.01),
    ) as client:
        texts = await fanout.gather([client.chat(MODEL, MSGS) for _ in range(8)])
    # Every call succeeded once, with the full text and nothing duplicated.
    assert len(texts) == 8 and {len(t.text.split()) for t in texts} == {24}
    assert emu.stats.requests["openai.chat"] == 12 and emu.stats.completed == 8
    # After the 429s (the first 4 requests), nothing was sent during the 0.3 s cool-down.
    times = sorted(emu.stats.request_times)
    assert times[4] - times[3] >= 0.28


async def test_burst_of_baidu_error_18_pauses_then_all_succeed(emu: Emulator) -> None:
    # Qianfan throttles with HTTP 200 and error_code 18 and no Retry-After: a jittered cool-down.
    emu.script("qianfan", *[Fault("error", code=18, message="qps limit")] * 3)
    async with emu.client(
        limits={"qianfan": Limits(max_concurrency=3)},
        retry=RetryPolicy(max_retries=4, backoff_base=0.01),
    ) as client:
        limiter = client.limiter("qianfan")
        replies = await fanout.gather([client.chat("qianfan/llama_2_7b", MSGS) for _ in range(6)])
        assert limiter._cool_until > 0  # the provider went through a cool-down
    assert {r.text for r in replies} == {replies[0].text} and len(replies[0].text.split()) == 24
    assert emu.stats.requests["qianfan.chat"] == 9 and emu.stats.completed == 6
    # The throttled calls were not retried at once: the cool-down (>= 0.25 s) shows as a pause.
    times = sorted(emu.stats.request_times)
    assert max(b - a for a, b in itertools.pairwise(times)) >= 0.2


async def test_tokens_per_minute_budget(emu: Emulator) -> None:
    # A call starts only while the tokens used in the sliding minute are under the budget:
    # the first call uses 25 of 20, so the next one waits (about 15 s here).
    async with emu.client(limits={"openai": Limits(tokens_per_minute=20)}) as client:
        limiter = client.limiter("openai")
        await client.chat(MODEL, MSGS)
        assert limiter.tokens_in_window() >= 24
        start = anyio.current_time()
        with anyio.move_on_after(0.2) as scope:
            await client.chat(MODEL, MSGS)
        assert scope.cancelled_caught  # over budget: it waits
        assert anyio.current_time() - start >= 0.19


# -- fan-out ------------------------------------------------------------------------------------------
async def slow(value: int, delay: float) -> int:
    await anyio.sleep(delay)
    return value


async def boom(delay: float = 0.0) -> int:
    await anyio.sleep(delay)
    raise ValueError("boom")


async def test_gather_keeps_input_order_and_bounds_concurrency() -> None:
    running = 0
    peak = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01 * (5 - i % 5))
        running -= 1
        return i

    results = await fanout.gather([lambda i=i: job(i) for i in range(20)], concurrency=4)
    assert results == list(range(20)) and peak == 4


async def test_gather_first_error_cancels_the_rest_and_closes_unstarted() -> None:
    cancelled: list[int] = []

    async def long(i: int) -> int:
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cancelled.append(i)
            raise
        return i

    calls = [long(0), long(1), boom(0.01), long(3), long(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="boom"):
            await fanout.gather(calls, concurrency=3)
        gc.collect()  # an unstarted coroutine left unclosed would warn "never awaited" here
    assert sorted(cancelled) == [0, 1]


async def test_gather_return_exceptions() -> None:
    results = await fanout.gather([slow(1, 0), boom(), slow(3, 0)], return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], ValueError) and results[2] == 3


async def test_map() -> None:
    assert await fanout.map(lambda x: slow(x * 2, 0.001), range(10), concurrency=3) == [
        x * 2 for x in range(10)
    ]


async def test_as_completed_yields_in_completion_order() -> None:
    calls = [slow(3, 0.03), slow(1, 0.01), slow(2, 0.02)]
    got = [r async for r in fanout.as_completed(calls)]
    assert got == [1, 2, 3]


async def test_as_completed_raises_first_error_and_cancels() -> None:
    cancelled = anyio.Event()

    async def long() -> int:
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return 0

    with pytest.raises(ValueError):
        async for _ in fanout.as_completed([long(), boom(0.01)]):
            pass
    assert cancelled.is_set()


async def test_race_first_success_wins_and_losers_close(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.01)

    async def fast() -> str:
        await anyio.sleep(0.02)
        return "fast"

    result = await fanout.race([lambda: client.stream(MODEL, MSGS).final(), fast])
    assert result == "fast"
    await wait_for(lambda: emu.stats.disconnects == 1)
    assert open_connections(client) == 0


async def test_race_staggered_hedge() -> None:
    started: list[int] = []

    async def job(i: int, delay: float) -> int:
        started.append(i)
        await anyio.sleep(delay)
        return i

    result = await fanout.race([lambda: job(0, 0.01), lambda: job(1, 0.01)], stagger=0.1)
    assert result == 0 and started == [0]  # the hedge was never needed


async def test_race_all_fail_raises_first() -> None:
    with pytest.raises(ValueError):
        await fanout.race([boom(), boom(0.01)])


async def test_merge_mapping_keys_and_full_texts(client: Client) -> None:
    streams = {name: client.stream(MODEL, [{"role": "user", "content": name}]) for name in "abc"}
    texts: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    async for key, event in fanout.merge(streams):
        if isinstance(event, aiollm.TextDelta):
            texts[key].append(event.text)
    for name, stream in streams.items():
        assert "".join(texts[name]) == stream.completion.text


async def test_merge_list_break_closes_every_stream(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.01)
    streams = [client.stream(MODEL, MSGS) for _ in range(4)]
    async for key, _ in fanout.merge(streams):
        assert key in range(4)
        break
    gc.collect()
    # Every stream the server opened is cut off, none completes (on a busy machine the last
    # requests may arrive after the first event, or not at all: count once all is shut).
    await wait_for(lambda: open_connections(client) == 0)
    await wait_for(lambda: all_cut_off(emu))
    assert emu.stats.disconnects >= 1


async def test_merge_in_async_with_closes_at_exit(emu: Emulator, client: Client) -> None:
    emu.cadence = Cadence(per_token=0.01)
    async with fanout.merge([client.stream(MODEL, MSGS) for _ in range(3)]) as events:
        async for _ in events:
            break
    # aclose() waited: everything is closed already.
    assert open_connections(client) == 0
    await wait_for(lambda: emu.stats.disconnects == 3)


async def test_merge_error_in_one_stream_is_raised_and_closes_the_others(
    emu: Emulator, client: Client
) -> None:
    emu.cadence = Cadence(per_token=0.01)
    emu.script("openai", Fault("http", status=400, code="bad"))
    with pytest.raises(aiollm.InvalidRequestError):
        async for _ in fanout.merge([client.stream(MODEL, MSGS) for _ in range(3)]):
            pass
    await wait_for(lambda: emu.stats.open_streams == 0)
    await wait_for(lambda: open_connections(client) == 0)


async def test_cancelling_a_gather_of_streams_leaves_no_open_connection(
    emu: Emulator, client: Client
) -> None:
    emu.cadence = Cadence(per_token=0.01)

    async def consume() -> str:
        return (await client.stream(MODEL, MSGS).final()).text

    with anyio.move_on_after(0.1):
        await fanout.gather([consume for _ in range(10)], concurrency=10)
    assert open_connections(client) == 0
    # Every stream the server opened is cut off (on a busy machine some requests may not
    # have gone out within 0.1 s, or arrive a moment after the cancel).
    await wait_for(lambda: all_cut_off(emu))
    assert 1 <= emu.stats.disconnects <= 10
