"""A hostile loopback server for end-to-end tests: one handler answers every path.

``serve(handler)`` starts it and yields its origin; ``settings(origin)`` points every provider
at it with recognisable credentials (``SECRETS`` lists every secret value the client may send).
The token endpoints answer with recognisable tokens unless the handler answers them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROVIDERS = ("dashscope", "openai", "qianfan", "gateway")
MODELS = {p: f"{p}/m" for p in PROVIDERS}
MESSAGES = [{"role": "user", "content": "hi"}]

QIANFAN_TOKEN = "qf-TOKEN-7f3e9a1c"
GATEWAY_TOKEN = "gw-TOKEN-5b2d8e4f"
CREDENTIALS = {
    "dashscope": {"api_key": "sk-dash-91c4e7a2"},
    "openai": {"api_key": "sk-open-3d8b1f6e"},
    "qianfan": {"ak": "qf-AK-62a9c0d4", "sk": "qf-SK-8e1f7b3a"},
    "gateway": {"appid": "gw-APPID-4c7e2a9d", "secret": "gw-SECRET-0b6d3f8c", "ability": "chat"},
}
SECRETS = (
    "sk-dash-91c4e7a2",
    "sk-open-3d8b1f6e",
    "qf-AK-62a9c0d4",
    "qf-SK-8e1f7b3a",
    "gw-APPID-4c7e2a9d",
    "gw-SECRET-0b6d3f8c",
    QIANFAN_TOKEN,
    GATEWAY_TOKEN,
)


def is_token_request(request: web.Request) -> bool:
    """Whether ``request`` asks a provider's token endpoint for a token."""
    return request.path.startswith("/oauth/") or "getToken" in request.path


def token_answer(request: web.Request) -> web.Response:
    """A valid token for Qianfan's or the gateway's token endpoint."""
    if request.path.startswith("/oauth/"):
        return web.json_response({"access_token": QIANFAN_TOKEN, "expires_in": 2592000})
    return web.json_response({"code": 0, "data": GATEWAY_TOKEN})


def settings(origin: str) -> dict[str, dict[str, Any]]:
    """Every provider pointed at ``origin`` with the credentials of :data:`CREDENTIALS`."""
    out = {name: dict(values) for name, values in CREDENTIALS.items()}
    out["dashscope"]["base_url"] = origin
    out["openai"]["base_url"] = origin + "/v1"
    out["qianfan"]["base_url"] = origin
    out["gateway"]["url"] = origin
    return out


@contextlib.asynccontextmanager
async def serve(handler: Handler, *, tokens: bool = True) -> AsyncIterator[str]:
    """Serve ``handler`` on 127.0.0.1 for every path; yields the origin.

    With ``tokens``, token requests are answered with valid tokens before ``handler`` sees them.
    """

    async def route(request: web.Request) -> web.StreamResponse:
        if tokens and is_token_request(request):
            return token_answer(request)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_raw(
    reply: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """Serve ``reply`` on 127.0.0.1 at the socket level (answers an aiohttp server would not
    give); yields the origin."""
    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def ok_body(provider: str, text: str = "hello") -> tuple[bytes, str]:
    """A complete non-streaming answer of ``provider`` with ``text``: ``(body, content type)``."""
    import json

    if provider == "dashscope":
        doc: dict[str, Any] = {
            "output": {"text": text, "finish_reason": "stop"},
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            "request_id": "r1",
        }
    elif provider == "qianfan":
        doc = {
            "id": "as-1",
            "result": text,
            "is_truncated": False,
            "need_clear_history": False,
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    else:
        doc = {
            "id": "c1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    return json.dumps(doc).encode(), "application/json"
