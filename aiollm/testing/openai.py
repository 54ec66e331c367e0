"""Emulator routes for a standard OpenAI-compatible server (``/v1/...``, Bearer key).

``POST /v1/chat/completions`` (SSE ``chat.completion.chunk``s when ``stream`` is true, with a
final usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``),
``/v1/completions`` and ``/v1/embeddings`` (vectors listed in reverse order, to test that the
client restores input order). ``Authorization: Bearer <Emulator.openai_key>`` or 401.

Switches in ``emu.state["openai"]``:

- ``send_done`` (default True): False ends the stream right after the last chunk (finish and
  usage), without ``[DONE]``, as some servers do.

Faults (routes ``"chat"``, ``"completions"``, ``"embeddings"``): ``error`` with
``after_tokens=0`` and ``http`` answer with an OpenAI error body ``{"error": {message, type,
code}}``, status ``fault.status`` (default 400 for ``error``, 429 for ``http``) and
``Retry-After`` when ``retry_after`` is set; inside a stream (``after_tokens>0``) ``error`` is a
``data: {"error": ...}`` frame. ``reset``, ``stall``, ``malformed`` and ``truncate`` act after
``after_tokens`` tokens.
"""

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


def usage_for(body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
    """The ``usage`` object of a reply of ``tokens`` to ``body``."""
    usage = {"prompt_tokens": len(prompt_text(body).split()), "completion_tokens": len(tokens)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def finish_for(body: dict[str, Any], tokens: list[str]) -> str:
    """``length`` when ``max_tokens`` cut the reply, else ``stop``."""
    limit = body.get("max_tokens")
    return "length" if limit is not None and len(tokens) >= limit else "stop"


def chat_result(cid: str, body: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """A whole ``chat.completion`` answering ``body`` with ``tokens``."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "finish_reason": finish_for(body, tokens),
            }
        ],
        "usage": usage_for(body, tokens),
    }


def completion_result(cid: str, body: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """A whole ``text_completion`` answering ``body`` with ``tokens``."""
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "text": "".join(tokens),
                "logprobs": None,
                "finish_reason": finish_for(body, tokens),
            }
        ],
        "usage": usage_for(body, tokens),
    }


def register(emu: Emulator, app: web.Application) -> None:
    """Add the OpenAI-compatible routes."""
    state = emu.state.setdefault(PROVIDER, {})
    state.setdefault("send_done", True)

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
        usage = usage_for(body, tokens)
        finish = finish_for(body, tokens)
        if not body.get("stream"):
            text = []
            try:
                async for _, token in emu.paced(request, tokens, fault):
                    text.append(token)
            except ClientGone:
                emu.stats.disconnects += 1
                return web.Response(status=499)
            emu.stats.completed += 1
            return web.json_response(chat_result(cid, body, text))
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
                final = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + json.dumps(final).encode() + b"\n\n"
            if state["send_done"]:
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
        emu.stats.completed += 1
        return web.json_response(completion_result("cmpl-emu", body, tokens))

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
