"""The gateway, sans-IO: token responses, JWT lifetimes, error codes in every body shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from decoding import decoded, http_failure

import aiollm
from aiollm import Embeddings, Finish, TextDelta, Usage
from aiollm.providers._base import Call
from aiollm.providers.gateway import (
    GATEWAY_ERRORS,
    GatewayDecoder,
    GatewayProvider,
    jwt_claims,
    parse_token_response,
    token_lifetime,
)

SECRETS = ("my-appid-1234", "my-secret-5678")
NOW = 1_700_000_000.0


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'typ': 'JWT', 'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"


TOKEN = jwt({"abilityId": "app-1", "exp": NOW + 3600, "iat": NOW})
# The example token of the gateway's own document (exp - iat = 3600 s).
DOC_TOKEN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJhYmlsaXR5U3RhdHVzIjoiMSIsImFiaWxpdHlOYW1lIjoiQ2hhdEdMT"
    "SIsImNsdXN0ZXJOYW1lIjoiaG9zdCIsImFwcElkIjoiNmI1MWM2ODU4NjAxNGM4YTA1MTg5NWI4ZWUyNTRmODkiLCJhYmls"
    "aXR5QXJlYSI6IjAiLCJhYmlsaXR5U3VwcGxpZXIiOiLlubPlj7AiLCJ1c2VyTmFtZSI6InB0aGVuYW4iLCJhYmlsaXR5SWQ"
    "iOiJhcHAtMDcwOTM2NDZwYnlnIiwiZnJvbUNvbXBhbnkiOiJoZW5hbiIsImV4cCI6MTcwMDAzMzQ5OCwiaWF0IjoxNzAwMD"
    "I5ODk4fQ.KHGWKbkDnLpQ7Jk431ONOE_CIsWwuAf_conNjcc3p3Q"
)


def parse(body: bytes | dict[str, Any] | str, status: int = 200) -> tuple[str, float | None]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_token_response(status, {}, raw, secrets=SECRETS)


# -- token responses ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"data": TOKEN},
        {"token": TOKEN},
        {"accessToken": TOKEN},
        {"access_token": TOKEN},
        {"code": 0, "msg": "success", "data": {"accessToken": TOKEN}},
        {"code": 200, "msg": "操作成功", "data": {"token": TOKEN}},
        {"code": "0", "data": {"access_token": TOKEN, "expiresIn": 3600}},
        TOKEN,  # a JSON string
        TOKEN.encode(),  # the bare token as text
        b"\xef\xbb\xbf  " + TOKEN.encode() + b"\r\n",
        {"data": "Bearer " + TOKEN},
    ],
)
def test_token_response_shapes(body: Any) -> None:
    token, _ = parse(body)
    assert token == TOKEN


def test_expires_in_is_read_when_present() -> None:
    assert parse({"data": {"accessToken": "opaque-token-1", "expires_in": 120}}) == (
        "opaque-token-1",
        120.0,
    )


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        ({"code": 0, "msg": "success", "data": {"user": "x"}}, "no token under data"),
        ({"result": {"value": 1}}, r"keys: result"),
        (b"{not json", "not valid JSON"),
        ([1, 2], "JSON list"),
        (b"<html><body>502 Bad Gateway</body></html>", "neither JSON nor a bare token"),
        ({"data": "two words"}, "no usable token"),
    ],
)
def test_unusable_token_responses_are_protocol_errors(body: Any, match: str) -> None:
    with pytest.raises(aiollm.ProtocolError, match=match):
        parse(body)


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            200,
            {"code": 40001, "msg": "appid my-appid-1234 or secret my-secret-5678 is invalid"},
            aiollm.AuthenticationError,
        ),
        (200, {"msg": "subscription not found"}, aiollm.AuthenticationError),
        (401, {"code": 401, "msg": "bad secret=my-secret-5678"}, aiollm.AuthenticationError),
        (403, b"Forbidden", aiollm.AuthenticationError),
        (500, {"error": {"code": 500, "message": "internal"}}, aiollm.ServerError),
        (429, b"", aiollm.RateLimitError),
    ],
)
def test_token_refusals_are_typed_and_secret_free(
    status: int, body: Any, cls: type[aiollm.APIError]
) -> None:
    with pytest.raises(cls) as info:
        parse(body, status)
    text = str(info.value) + repr(info.value)
    assert "my-secret-5678" not in text and "my-appid-1234" not in text
    assert info.value.provider == "gateway"


# -- JWT lifetime ------------------------------------------------------------------------------------
def test_claims_of_the_documents_example_token() -> None:
    claims = jwt_claims(DOC_TOKEN)
    assert claims is not None
    assert claims["abilityId"] == "app-07093646pbyg" and claims["abilityName"] == "ChatGLM"
    assert claims["exp"] - claims["iat"] == 3600


def test_lifetime_from_exp() -> None:
    assert token_lifetime(TOKEN, now=NOW) == 3600
    assert token_lifetime(TOKEN, now=NOW + 600) == 3000
    assert token_lifetime(jwt({"exp": NOW + 10.5}), now=NOW) == 10.5


def test_lifetime_when_the_clocks_disagree() -> None:
    # local clock 10 minutes behind the gateway: never longer than exp - iat
    assert token_lifetime(TOKEN, now=NOW - 600) == 3600
    # local clock past exp: fall back to exp - iat instead of refetching forever
    assert token_lifetime(TOKEN, now=NOW + 7200) == 3600
    assert token_lifetime(jwt({"exp": NOW}), now=NOW + 5) == 0.0


def test_lifetime_without_exp() -> None:
    assert token_lifetime("opaque", now=NOW) is None
    assert token_lifetime("opaque", now=NOW, expires_in=60) == 60
    assert token_lifetime(jwt({"iat": NOW}), now=NOW) is None
    assert token_lifetime("a.b!!.c", now=NOW) is None
    assert jwt_claims("a.W10.c") is None  # payload is a JSON list


# -- the codec ---------------------------------------------------------------------------------------
def call(stream: bool = False, op: str = "chat") -> Call:
    return Call(
        op=op,
        model="llama-2-7b-chat",
        stream=stream,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hi"}],
        input="x" if op == "embed" else None,
    )


def feed(codec: GatewayDecoder, document: Any) -> list[Any]:
    return decoded(codec, [json.dumps(document, ensure_ascii=False).encode()])


def http_error(status: int, headers: dict[str, str], body: bytes) -> aiollm.APIError:
    return http_failure(GatewayDecoder(call(), status, headers), body)


SEED_CHAT = {
    "id": "chatcmpl-3j8VBFw4TuMveJ4LxCRiea",
    "object": "chat.completion",
    "created": 1700035542,
    "model": "llama-2-7b-chat",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": " Hello! My name is Bard"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 28, "total_tokens": 56, "completion_tokens": 28},
}


def test_json_answer_to_a_stream_call_yields_delta_usage_finish() -> None:
    events = feed(GatewayDecoder(call(stream=True)), SEED_CHAT)
    assert events == [TextDelta(" Hello! My name is Bard"), Usage(28, 28, 56), Finish("stop")]


def error_bodies(code: Any, message: str) -> list[dict[str, Any]]:
    return [
        {"code": code, "msg": message},
        {"code": code, "message": message},
        {"error": {"code": code, "message": message, "type": "gateway_error"}},
    ]


CASES = [(code, cls) for code, (_, cls) in GATEWAY_ERRORS.items() if code != -98434]


@pytest.mark.parametrize(("code", "cls"), CASES)
@pytest.mark.parametrize("shape", range(3))
@pytest.mark.parametrize("as_string", [False, True])
def test_error_codes_in_every_body_shape(
    code: int, cls: type[aiollm.APIError], shape: int, as_string: bool
) -> None:
    body = error_bodies(str(code) if as_string else code, "scripted")[shape]
    with pytest.raises(cls) as info:
        feed(GatewayDecoder(call()), body)
    assert type(info.value) is cls and info.value.code == code and info.value.status == 200


@pytest.mark.parametrize(("code", "cls"), CASES)
@pytest.mark.parametrize("status", [400, 500])
def test_error_codes_with_a_non_2xx_status(
    code: int, cls: type[aiollm.APIError], status: int
) -> None:
    body = json.dumps({"code": code, "msg": "x"}).encode()
    exc = http_error(status, {}, body)
    assert type(exc) is cls and exc.code == code and exc.status == status


def test_error_names_map_too() -> None:
    with pytest.raises(aiollm.ContentFilterError) as info:
        feed(
            GatewayDecoder(call()), {"code": "SENSITIVE_WORD_ERROR", "msg": "请求信息中存在敏感词"}
        )
    assert info.value.code == -98432
    with pytest.raises(aiollm.QuotaExceededError) as quota:
        feed(GatewayDecoder(call()), {"error": {"message": "TOKEN_LIMIT_DAY", "type": "error"}})
    assert quota.value.code == -98433


def test_server_error_50002_is_retryable() -> None:
    with pytest.raises(aiollm.ServerError) as info:
        feed(GatewayDecoder(call()), {"code": 50002, "msg": "CUDA_OUT_OF_MEMORY"})
    assert info.value.retryable


def test_stream_refused_without_fallback_is_invalid_request() -> None:
    with pytest.raises(aiollm.InvalidRequestError) as info:
        feed(GatewayDecoder(call(stream=True)), {"code": -98434, "msg": "非法响应Content-Type类型"})
    assert type(info.value) is aiollm.StreamingRefusedError and not info.value.retryable
    assert "INVALID_RESPONSE_CONTENT_TYPE" in str(info.value)


def test_stream_refused_with_fallback_is_retryable_and_reported() -> None:
    provider = GatewayProvider({"stream": True, "url": "http://gw", "ability": "a"}, {})
    prepared = provider.prepare(call(stream=True))
    codec = provider.decoder(prepared, 200, {})
    with pytest.raises(aiollm.StreamingRefusedError) as info:
        feed(codec, {"code": -98434, "msg": "INVALID_RESPONSE_CONTENT_TYPE"})
    assert info.value.retryable and not provider.stream_refused
    assert "retrying without streaming" in str(info.value)
    provider.failed(prepared, info.value)  # the retry loop tells the provider
    assert provider.stream_refused
    assert b'"stream"' not in provider.build_request(prepared, "tok").body  # type: ignore[operator]
    # a non-streaming call never falls back
    codec = provider.decoder(provider.prepare(call(stream=False)), 200, {})
    with pytest.raises(aiollm.InvalidRequestError) as info:
        feed(codec, {"code": -98434, "msg": "x"})
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"code": 401, "msg": "invalid accessToken"}),
        (200, {"code": 401, "msg": "unauthorized"}),
        (200, {"code": 10001, "msg": "accessToken expired"}),
        (403, {"code": 403, "msg": "token已过期"}),
        (401, b""),
    ],
)
def test_rejected_token_is_an_authentication_error(status: int, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    codec = GatewayDecoder(call())
    if status == 200:
        with pytest.raises(aiollm.AuthenticationError):
            feed(codec, body)
    else:
        assert type(http_error(status, {}, raw)) is aiollm.AuthenticationError


def test_token_echoed_in_a_message_is_masked() -> None:
    exc = http_error(
        401, {}, json.dumps({"code": 401, "msg": f"token {DOC_TOKEN} expired"}).encode()
    )
    assert DOC_TOKEN not in str(exc) and "***" in str(exc)
    with pytest.raises(aiollm.ProtocolError) as info:
        decoded(GatewayDecoder(call()), [f'{{"x": "{DOC_TOKEN}"'.encode()])
    assert DOC_TOKEN not in str(info.value)


def test_plain_http_error_without_body() -> None:
    exc = http_error(502, {"Retry-After": "1"}, b"502 Bad Gateway")
    assert type(exc) is aiollm.ServerError and exc.retry_after == 1.0


def test_embeddings_and_completions_use_the_openai_shapes() -> None:
    codec = GatewayDecoder(call(op="embed"))
    (embeddings,) = feed(
        codec,
        {
            "object": "list",
            "model": "llama-2-7b-chat",
            "data": [{"object": "embedding", "embedding": [0.0169, -0.0145], "index": 0}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        },
    )
    assert isinstance(embeddings, Embeddings) and embeddings.embeddings == [[0.0169, -0.0145]]
    assert embeddings.provider == "gateway"


# -- provider checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [-0.1, 2.5, "hot", True])
def test_temperature_range_is_checked(temperature: Any) -> None:
    provider = GatewayProvider({}, {})
    bad = Call(
        op="complete", model="m", stream=False, prompt="p", params={"temperature": temperature}
    )
    with pytest.raises(aiollm.InvalidRequestError, match="temperature"):
        provider.check(bad)
    provider.check(
        Call(op="complete", model="m", stream=False, prompt="p", params={"temperature": 2})
    )


def test_stream_setting_parsing() -> None:
    assert GatewayProvider({"stream": True}, {}).streaming
    assert GatewayProvider({}, {"AIOLLM_GATEWAY_STREAM": "yes"}).streaming
    assert not GatewayProvider({}, {"AIOLLM_GATEWAY_STREAM": "0"}).streaming
    assert not GatewayProvider({}, {}).streaming


def test_missing_settings_name_the_variables() -> None:
    provider = GatewayProvider({}, {})
    with pytest.raises(aiollm.ConfigurationError, match="AIOLLM_GATEWAY_URL"):
        provider.credential()
    provider = GatewayProvider({"url": "http://gw"}, {"AIOLLM_GATEWAY_APPID": "a"})
    with pytest.raises(aiollm.ConfigurationError, match="AIOLLM_GATEWAY_SECRET"):
        provider.credential()
    with pytest.raises(aiollm.ConfigurationError, match="AIOLLM_GATEWAY_ABILITY"):
        provider.ability("not-a-jwt")
    assert provider.ability(DOC_TOKEN) == "app-07093646pbyg"
