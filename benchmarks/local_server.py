"""A minimal local LLM-API server for the benchmarks (run by ``_local.local_server()``).

Prints ``PORT <n>`` and serves until its standard input closes. Routes: OpenAI
``/v1/chat/completions``, Qianfan ``/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/<endpoint>`` and
``/oauth/2.0/token``, DashScope ``/api/v1/services/aigc/text-generation/generation``. The model
(or Qianfan endpoint) ``frames-N`` asks for N frames. Bodies are built once and written in
256 KiB writes.
"""

from __future__ import annotations

import asyncio
import sys
from functools import lru_cache

from _local import (
    CHAT_PATH,
    DASHSCOPE_PATH,
    QIANFAN_PATH,
    dashscope_body,
    frames_of,
    openai_body,
    qianfan_body,
)
from aiohttp import web

WRITE = 256 * 1024


@lru_cache(maxsize=32)
def body_for(fmt: str, frames: int, variant: str = "") -> bytes:
    if fmt == "openai":
        return openai_body(frames)
    if fmt == "qianfan":
        return qianfan_body(frames)
    return dashscope_body(frames, variant or "text")


async def send(request: web.Request, body: bytes, content_type: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    await resp.prepare(request)
    view = memoryview(body)
    for i in range(0, len(body), WRITE):
        await resp.write(view[i : i + WRITE])
    await resp.write_eof()
    return resp


async def openai_chat(request: web.Request) -> web.StreamResponse:
    req = await request.json()
    frames = frames_of(req.get("model"))
    return await send(request, body_for("openai", frames), "text/event-stream; charset=utf-8")


async def qianfan_chat(request: web.Request) -> web.StreamResponse:
    frames = frames_of(request.match_info["endpoint"])
    return await send(request, body_for("qianfan", frames), "text/event-stream;charset=utf-8")


async def qianfan_token(request: web.Request) -> web.Response:
    return web.json_response(
        {"access_token": "bench-access-token", "expires_in": 2592000, "scope": "bench"}
    )


async def dashscope_generation(request: web.Request) -> web.StreamResponse:
    req = await request.json()
    frames = frames_of(req.get("model"))
    variant = str((req.get("parameters") or {}).get("result_format") or "text")
    return await send(
        request, body_for("dashscope", frames, variant), "text/event-stream;charset=UTF-8"
    )


async def fallback(request: web.Request) -> web.Response:
    sys.stderr.write(f"local server: no route for {request.method} {request.path_qs}\n")
    return web.json_response({"error": {"message": "no such route"}}, status=404)


async def main() -> None:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post(CHAT_PATH, openai_chat)
    app.router.add_post(QIANFAN_PATH + "{endpoint}", qianfan_chat)
    app.router.add_post("/oauth/2.0/token", qianfan_token)
    app.router.add_get("/oauth/2.0/token", qianfan_token)
    app.router.add_post(DASHSCOPE_PATH, dashscope_generation)
    app.router.add_route("*", "/{tail:.*}", fallback)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
