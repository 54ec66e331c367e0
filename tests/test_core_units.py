"""Sans-IO and small units of the core: model strings, redaction, token cache, retry policy."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

import aiollm
from aiollm._redact import Secret, redact_headers, redact_text
from aiollm.auth import CachedToken, StaticToken
from aiollm.errors import (
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    ServerError,
)
from aiollm.limits import Limits
from aiollm.providers import split_model
from aiollm.request import parse_retry_after


def test_split_model_at_first_slash_only() -> None:
    assert split_model("openai/org/name") == ("openai", "org/name")
    assert split_model("qianfan/llama_2_7b") == ("qianfan", "llama_2_7b")


@pytest.mark.parametrize("bad", ["gpt-4", "/x", "openai/", "nope/model"])
def test_split_model_rejects(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        split_model(bad)


def test_redact_query_tokens_bearer_and_literals() -> None:
    url = "http://h/x?access_token=24.abc.def&accessToken=eyJ.x.y&client_secret=s3&keep=1"
    out = redact_text(url)
    for secret in ("24.abc.def", "eyJ.x.y", "s3&"):
        assert secret not in out
    assert "keep=1" in out
    assert redact_text("Authorization: Bearer sk-live-123") == "Authorization: Bearer ***"
    assert redact_text("oops my-long-secret here", ["my-long-secret"]) == "oops *** here"
    assert redact_headers({"Authorization": "Bearer x", "A": "b"}) == {
        "Authorization": "***",
        "A": "b",
    }


def test_http_request_repr_hides_tokens() -> None:
    from aiollm.providers import HTTPRequest

    req = HTTPRequest(
        "POST",
        "http://h/chat",
        headers={"Authorization": "Bearer sk-123456", "X-A": "1"},
        params={"access_token": "24.tok", "appid": "app-77"},
        secrets=("app-77",),
    )
    text = repr(req)
    assert "sk-123456" not in text and "24.tok" not in text and "app-77" not in text
    assert "X-A" in text and "http://h/chat" in text


def test_secret_never_shows() -> None:
    s = Secret("topsecret")
    assert "topsecret" not in repr(s) and "topsecret" not in str(s) and "topsecret" not in f"{s}"
    assert s.get() == "topsecret"
    assert "topsecret" not in repr(StaticToken("topsecret"))


def test_parse_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "2.5"}) == 2.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    date = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert parse_retry_after(date, now=1_700_000_000.0) == 0.0


def test_error_messages_and_attributes() -> None:
    err = RateLimitError("slow down", provider="qianfan", status=200, code=18, retry_after=1.0)
    assert err.retryable and err.code == 18 and err.retry_after == 1.0
    assert str(err) == "[qianfan] slow down (HTTP 200, code 18)"
    assert not AuthenticationError("no").retryable
    assert ServerError("x").retryable
    assert issubclass(aiollm.ContextOverflowError, aiollm.InvalidRequestError)
    assert issubclass(aiollm.TimeoutError, aiollm.TransportError)


def test_events_are_tagged_structs() -> None:
    events = [aiollm.TextDelta("hi"), aiollm.Usage(1, 2, 3), aiollm.Finish("stop")]
    encoded = msgspec.json.encode(events)
    assert b'"type":"text_delta"' in encoded
    assert msgspec.json.decode(encoded, type=list[aiollm.Event]) == events


def test_limits_from_env() -> None:
    env = {"AIOLLM_QIANFAN_RPS": "5", "AIOLLM_QIANFAN_MAX_CONCURRENCY": "8"}
    assert Limits.from_env("qianfan", env) == Limits(5.0, 8, None)
    assert Limits.from_env("dashscope", env) is None
    with pytest.raises(ConfigurationError):
        Limits.from_env("qianfan", {"AIOLLM_QIANFAN_RPS": "fast"})


# -- cached token -----------------------------------------------------------------------------------
class FakeToken(CachedToken):
    def __init__(
        self, lifetime: float | None = 100.0, fail: BaseException | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.lifetime = lifetime
        self.fail = fail
        self.gate = anyio.Event()

    async def fetch(self, transport: Any) -> tuple[str, float | None]:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return f"token-{self.fetches}", self.lifetime


@pytest.mark.anyio
async def test_single_flight_many_concurrent_callers() -> None:
    source = FakeToken()
    results: list[str] = []

    async def call() -> None:
        results.append(await source.get(None))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(call)
        await anyio.sleep(0.01)
        source.gate.set()
    assert results == ["token-1"] * 20 and source.fetches == 1


@pytest.mark.anyio
async def test_single_flight_shares_the_failure() -> None:
    source = FakeToken(fail=AuthenticationError("bad credentials"))
    errors: list[BaseException] = []

    async def call() -> None:
        try:
            await source.get(None)
        except AuthenticationError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call)
        await anyio.sleep(0.01)
        source.gate.set()
    assert len(errors) == 5 and source.fetches == 1


@pytest.mark.anyio
async def test_cancelled_leader_hands_over() -> None:
    source = FakeToken()
    got: list[str] = []

    async def leader(scope_box: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            await source.get(None)

    async def follower() -> None:
        got.append(await source.get(None))

    box: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(leader, box)
        await anyio.sleep(0.01)  # the leader is fetching
        tg.start_soon(follower)
        await anyio.sleep(0.01)  # the follower waits on the leader's flight
        box[0].cancel()
        await anyio.sleep(0.01)
        source.gate.set()
    # The follower did not inherit the leader's cancellation: it fetched itself.
    assert got == ["token-2"] and source.fetches == 2


@pytest.mark.anyio
async def test_refresh_ahead_and_invalidate() -> None:
    now = [0.0]
    source = FakeToken(lifetime=100.0, clock=lambda: now[0])
    source.gate.set()
    assert await source.get(None) == "token-1"
    now[0] = 89.0  # 10% margin: refresh is due at 90 s
    assert await source.get(None) == "token-1"
    now[0] = 90.5
    assert await source.get(None) == "token-2"
    source.invalidate("token-1")  # an old token: ignored
    assert await source.get(None) == "token-2"
    source.invalidate("token-2")
    assert await source.get(None) == "token-3"
    assert "token" not in repr(source).replace("FakeToken", "")


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("dashscope", b'{"output":{"text":"ok \xff","finish_reason":"stop"}}'),
        ("qianfan", b'{"result":"ok \xff","is_end":true}'),
        (
            "openai",
            b'{"choices":[{"index":0,"message":{"content":"ok \xff"},"finish_reason":"stop"}]}',
        ),
    ],
)
def test_invalid_utf8_json_body_is_a_protocol_error(provider: str, body: bytes) -> None:
    from aiollm.providers import Call, Prepared, load_provider

    call = Call(op="chat", model="m", stream=False, prompt="x")
    decoder = load_provider(provider)({}, {}).decoder(Prepared(call, b""), 200, {})
    with pytest.raises(aiollm.ProtocolError):
        decoder.feed(body)
        decoder.end()
