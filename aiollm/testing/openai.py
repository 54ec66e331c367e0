"""Emulator routes for a standard OpenAI-compatible server (``/v1/...``, Bearer key)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ._emulator import ClientGone, Emulator, Fault

PROVIDER = "openai"


def prompt_text(body: dict[str, Any]) -> str:
    """The text a reply is derived from: the last message, or the prompt."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(body.get("prompt", ""))


def error_body(code: str | int | None, message: str, type_: str = "invalid_request_error") -> bytes:
    """An OpenAI-style error body."""
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


def fault_response(fault: Fault) -> web.Response:
    """The HTTP answer for a request-level ``error`` or ``http`` fault."""
    status = fault.status or (429 if fault.kind == "http" else 400)
    headers = {"Content-Type": "application/json"}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    return web.Response(status=status, body=error_body(fault.code, fault.message), headers=headers)


def chunk(cid: str, model: str, content: str | None, finish: str | None) -> bytes:
    """One ``chat.completion.chunk`` frame."""
    delta: dict[str, Any] = {} if content is None else {"content": content}
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def register(emu: Emulator, app: web.Application) -> None:
    """Add the OpenAI-compatible routes."""

    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {emu.openai_key}"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        emu.begin("openai.chat", body)
        if not authorized(request):
            return web.Response(
                status=401,
                body=error_body("invalid_api_key", "Incorrect API key provided"),
                content_type="application/json",
            )
        fault = emu.take_fault(PROVIDER, "chat")
        if fault is not None and fault.kind in ("error", "http") and fault.after_tokens == 0:
            return fault_response(fault)
        model = str(body.get("model", ""))
        tokens = emu.reply_tokens_for(prompt_text(body), body.get("max_tokens"))
        cid = f"chatcmpl-emu{emu.stats.requests['openai.chat']}"
        usage = {
            "prompt_tokens": len(prompt_text(body).split()),
            "completion_tokens": len(tokens),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = "length" if body.get("max_tokens") is not None and len(tokens) >= body["max_tokens"] else "stop"
        if not body.get("stream"):
            text = []
            try:
                async for _, token in emu.paced(request, tokens, fault):
                    text.append(token)
            except ClientGone:
                emu.stats.disconnects += 1
                return web.Response(status=499)
            result = {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(text)},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            emu.stats.completed += 1
            return web.json_response(result)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = await emu.open_stream(request, "text/event-stream; charset=utf-8")

        async def frames() -> AsyncIterator[bytes]:
            async for i, token in emu.paced(request, tokens, fault):
                if fault is not None and i == fault.after_tokens:
                    if fault.kind == "error":
                        yield b"data: " + error_body(fault.code, fault.message) + b"\n\n"
                        return
                    if fault.kind == "malformed":
                        yield b'data: {"id": "broken", "choices": [\n\n'
                        return
                    if fault.kind == "truncate":
                        return
                yield chunk(cid, model, token, None)
            yield chunk(cid, model, None, finish)
            if include_usage:
                final = {"id": cid, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                yield b"data: " + json.dumps(final).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return await emu.run_stream(request, resp, frames())

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        emu.begin("openai.completions", body)
        if not authorized(request):
            return web.Response(status=401, body=error_body("invalid_api_key", "bad key"))
        fault = emu.take_fault(PROVIDER, "completions")
        if fault is not None and fault.kind in ("error", "http"):
            return fault_response(fault)
        tokens = emu.reply_tokens_for(str(body.get("prompt", "")), body.get("max_tokens"))
        finish = "length" if body.get("max_tokens") is not None and len(tokens) >= body["max_tokens"] else "stop"
        emu.stats.completed += 1
        return web.json_response(
            {
                "id": "cmpl-emu",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "text": "".join(tokens), "logprobs": None, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(tokens), "total_tokens": len(tokens) + 1},
            }
        )

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        emu.begin("openai.embeddings", body)
        if not authorized(request):
            return web.Response(status=401, body=error_body("invalid_api_key", "bad key"))
        fault = emu.take_fault(PROVIDER, "embeddings")
        if fault is not None and fault.kind in ("error", "http"):
            return fault_response(fault)
        return web.json_response(embedding_result(body))

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)


def embedding_vector(text: str, dims: int = 8) -> list[float]:
    """A deterministic unit-ish vector for ``text``."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 3)) % 997) / 997.0 for i in range(dims)]


def embedding_result(body: dict[str, Any]) -> dict[str, Any]:
    """An embeddings response for ``body['input']``, items listed in reverse to test ordering."""
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else list(inputs or [])
    data = [
        {"object": "embedding", "embedding": embedding_vector(str(t)), "index": i}
        for i, t in enumerate(items)
    ]
    n = sum(len(str(t).split()) for t in items)
    return {
        "object": "list",
        "data": list(reversed(data)),
        "model": body.get("model"),
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }
