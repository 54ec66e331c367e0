"""Every provider's response decoder and token parser as fuzz targets (see ``fuzz_targets``).

Each decoder runs in the shapes the client builds it in (a streamed and a whole-body call, an
HTTP error status with a hostile ``Retry-After``); each token parser takes the body of a token
answer, then parses it at the end of the body. ``test_fuzz_providers.py`` adds the exact text
of valid streams and the absence of secrets in every error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from fuzz_targets import Target, corpus

from aiollm.events import Event
from aiollm.providers import Call, ResponseDecoder
from aiollm.providers._qianfan_rules import QianfanToken
from aiollm.providers.dashscope import DashScopeDecoder
from aiollm.providers.gateway import GatewayDecoder, GatewayToken
from aiollm.providers.openai import OpenAIDecoder
from aiollm.providers.qianfan import QianfanDecoder

SSE = {"Content-Type": "text/event-stream"}
JSON = {"Content-Type": "application/json"}
HOSTILE_HEAD = {"Content-Type": "application/json", "Retry-After": "1e400"}
TOKEN_SECRETS = ("qf-ak-fuzz-1234", "qf-sk-fuzz-5678", "gw-appid-fuzz-90", "gw-secret-fuzz-12")


def chat(stream: bool = True, **params: Any) -> Call:
    return Call(op="chat", model="m", stream=stream, messages=[], params=params)


class Quiet:
    """A response decoder whose diagnostic warnings (e.g. sentence order) are not errors here."""

    def __init__(self, decoder: ResponseDecoder) -> None:
        self.decoder = decoder

    def feed(self, data: bytes) -> list[Event]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.decoder.feed(data)

    def end(self) -> list[Event]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.decoder.end()


class TokenAnswer:
    """A token parser fed a body in chunks; it parses the whole answer at the end of the body."""

    def __init__(self, parse: Callable[[bytes], tuple[str, float | None]]) -> None:
        self.parse = parse
        self.body = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.body += data
        return []

    def end(self) -> list[Any]:
        token, lifetime = self.parse(bytes(self.body))
        return [(token, repr(lifetime))]


def decoder(
    cls: Callable[..., ResponseDecoder],
    call: Call,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Callable[[], Quiet]:
    return lambda: Quiet(cls(call, status, dict(headers) if headers is not None else None))


def qianfan_token(status: int) -> Callable[[], TokenAnswer]:
    endpoint = QianfanToken("http://127.0.0.1:1", TOKEN_SECRETS[0], TOKEN_SECRETS[1])
    return lambda: TokenAnswer(lambda body: endpoint.parse(status, JSON, body, now=0.0))


def gateway_token(status: int) -> Callable[[], TokenAnswer]:
    endpoint = GatewayToken("http://127.0.0.1:1", TOKEN_SECRETS[2], TOKEN_SECRETS[3])
    return lambda: TokenAnswer(lambda body: endpoint.parse(status, JSON, body, now=1_700_000_000.0))


PROVIDER_TARGETS: list[Target] = [
    Target("openai stream", decoder(OpenAIDecoder, chat(), 200, SSE), seeds=corpus("openai")),
    Target("openai sniffed", decoder(OpenAIDecoder, chat()), seeds=corpus("openai")),
    Target("openai 429", decoder(OpenAIDecoder, chat(), 429, HOSTILE_HEAD)),
    Target("gateway", decoder(GatewayDecoder, chat(False), 200, JSON), seeds=corpus("gateway")),
    Target("gateway 500", decoder(GatewayDecoder, chat(False), 500, HOSTILE_HEAD)),
    Target("qianfan stream", decoder(QianfanDecoder, chat(), 200, SSE), seeds=corpus("qianfan")),
    Target("qianfan sniffed", decoder(QianfanDecoder, chat()), seeds=corpus("qianfan")),
    Target(
        "qianfan json", decoder(QianfanDecoder, chat(False), 200, JSON), seeds=corpus("qianfan")
    ),
    Target(
        "dashscope stream", decoder(DashScopeDecoder, chat(), 200, SSE), seeds=corpus("dashscope")
    ),
    Target(
        "dashscope cumulative",
        decoder(DashScopeDecoder, chat(incremental_output=False), 200, SSE),
        seeds=corpus("dashscope"),
    ),
    Target("dashscope 500", decoder(DashScopeDecoder, chat(), 500, HOSTILE_HEAD)),
    Target("qianfan token", qianfan_token(200), seeds=corpus("qianfan")),
    Target("qianfan token 401", qianfan_token(401), seeds=corpus("qianfan")),
    Target("gateway token", gateway_token(200), seeds=corpus("gateway")),
    Target("gateway token 500", gateway_token(500), seeds=corpus("gateway")),
]
