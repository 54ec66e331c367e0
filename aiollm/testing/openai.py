"""Emulator of a standard OpenAI-compatible server (``/v1/...``, Bearer key).

``POST /v1/chat/completions`` (SSE ``chat.completion.chunk``s when ``stream`` is true, with a
final usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``),
``/v1/completions`` and ``/v1/embeddings`` (vectors listed in reverse order, to test that the
client restores input order). ``Authorization: Bearer <Emulator.openai_key>`` or 401.

Scripted replies (:class:`~aiollm.testing.Reply`) stream reasoning as ``delta.reasoning_content``
(or ``delta.reasoning``), refusals as ``delta.refusal``, tool calls as ``delta.tool_calls`` fragments (or the legacy
``delta.function_call``) and report ``completion_tokens_details.reasoning_tokens`` and
``prompt_tokens_details.cached_tokens``; see ``docs/wire/openai.md``.

Switches in ``emu.state.openai`` (:class:`OpenAIState`).

Faults (routes ``"chat"``, ``"completions"``, ``"embeddings"``): ``error`` at ``after_tokens=0``
and ``http`` answer an OpenAI error body ``{"error": {message, type, code}}`` with status
``fault.status`` (default 400 for ``error``, 429 for ``http``) and ``Retry-After`` when
``retry_after`` is set; inside a stream ``error`` is a ``data: {"error": ...}`` frame.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._call import Call, Frame
from ._faults import Fault, FaultChoice
from ._reply import Answer, Piece, prompt_text
from ._service import Service, dumps, retry_after_header

__all__ = ["OpenAI", "OpenAIState"]


@dataclass
class OpenAIState:
    """Switches of the OpenAI-compatible server."""

    send_done: bool = True
    """False ends a stream right after its last chunk, without ``[DONE]`` (some servers)."""


def error_body(code: str | int | None, message: str, type_: str = "invalid_request_error") -> bytes:
    """An OpenAI-style error body."""
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


def usage_for(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """The ``usage`` object of ``answer`` to ``body``."""
    prompt = len(prompt_text(body).split())
    completion = len(answer.pieces)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    reasoning = answer.count("reasoning")
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    if answer.reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": answer.reply.cached_tokens}
    return usage


def delta_of(answer: Answer, piece: Piece) -> dict[str, Any]:
    """The ``delta`` of the chunk carrying ``piece``."""
    reply = answer.reply
    if piece.kind == "text":
        return {"content": piece.text}
    if piece.kind == "reasoning":
        return {reply.reasoning_field: piece.text}
    if piece.kind == "refusal":
        return {"refusal": piece.text}
    call = answer.calls[piece.call]
    function: dict[str, Any] = {"arguments": piece.text}
    if piece.first:
        function = {"name": call.name, "arguments": ""}
    if reply.legacy_function_call:
        return {"function_call": function}
    index = 0 if reply.tool_index == "zero" else piece.call
    entry: dict[str, Any] = {"index": index}
    if piece.first:
        entry.update(id=call.id, type="function")
    entry["function"] = function
    return {"tool_calls": [entry]}


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    """One ``chat.completion.chunk`` frame."""
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def chat_frames(
    cid: str, body: dict[str, Any], answer: Answer, *, usage: bool, done: bool
) -> Iterator[Frame]:
    """The frames of a streamed chat answer."""
    model = str(body.get("model", ""))
    for piece in answer.pieces:
        data = chunk(cid, model, delta_of(answer, piece), None)
        if piece.kind == "text":
            yield Frame(data, text=piece.text)
        elif piece.kind == "reasoning":
            yield Frame(data, reasoning=piece.text)
        elif piece.kind == "refusal":
            yield Frame(data, refusal=piece.text)
        else:
            yield Frame(data, tool=piece.text)
    yield Frame(chunk(cid, model, {}, answer.finish_reason), paced=False)
    if usage:
        final = {
            "id": cid,
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": usage_for(body, answer),
        }
        yield Frame(b"data: " + json.dumps(final).encode() + b"\n\n", paced=False)
    if done:
        yield Frame(b"data: [DONE]\n\n", paced=False)


def message_of(answer: Answer) -> dict[str, Any]:
    """The assistant ``message`` of a whole chat answer."""
    calls = answer.calls
    text = answer.text
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if answer.reasoning:
        message[answer.reply.reasoning_field] = answer.reasoning
    if answer.refusal:
        message["refusal"] = answer.refusal
    if calls and answer.reply.legacy_function_call:
        message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
    elif calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in calls
        ]
    return message


def whole_result(route: str, cid: str, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """A whole ``chat.completion`` (the ``chat`` route) or ``text_completion``."""
    choice: dict[str, Any]
    if route == "chat":
        kind, choice = "chat.completion", {"message": message_of(answer)}
    else:
        kind, choice = "text_completion", {"text": answer.text, "logprobs": None}
    return {
        "id": cid,
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, **choice, "finish_reason": answer.finish_reason}],
        "usage": usage_for(body, answer),
    }


def embedding_vector(text: str, dims: int = 8) -> list[float]:
    """A deterministic vector for ``text``."""
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


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """``max_tokens`` when it is an integer."""
    value = body.get("max_tokens")
    return value if isinstance(value, int) else None


class OpenAI(Service):
    """The OpenAI-compatible server: chat (streamed or not), completions, embeddings."""

    name = "openai"
    rate_limit_headers = True
    extra_faults = (
        FaultChoice(Fault("http", status=429, retry_after=0.05, message="rate limited"), "start"),
        FaultChoice(Fault("http", status=429, message="rate limited"), "start"),
        FaultChoice(Fault("error", status=500, code="server_error", message="boom"), "start"),
        FaultChoice(Fault("error", code="server_error", message="overloaded"), "mid"),
    )

    @property
    def state(self) -> OpenAIState:
        """This server's switches."""
        return self.emu.state.openai

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.endpoint("chat", self.chat))
        app.router.add_post("/v1/completions", self.endpoint("completions", self.completions))
        app.router.add_post("/v1/embeddings", self.endpoint("embeddings", self.embeddings))

    def request_id(self, call: Call) -> str:
        prefix = "chatcmpl" if call.route == "chat" else "cmpl"
        return f"{prefix}-emu{call.number}"

    def error_response(self, call: Call, fault: Fault) -> web.Response:
        status = fault.status or (429 if fault.kind == "http" else 400)
        headers = {"Content-Type": "application/json", **retry_after_header(fault.retry_after)}
        return web.Response(
            status=status, body=error_body(fault.code, fault.message), headers=headers
        )

    http_response = error_response

    def throttle_response(self, call: Call, limit: str, retry_after: float | None) -> web.Response:
        message = (
            "Rate limit reached for requests" if limit == "rate" else "Too many concurrent requests"
        )
        return web.Response(
            status=429,
            body=error_body("rate_limit_exceeded", message, "requests"),
            headers={"Content-Type": "application/json", **retry_after_header(retry_after)},
        )

    def error_frame(self, call: Call, fault: Fault, position: int) -> bytes:
        return b"data: " + error_body(fault.code, fault.message) + b"\n\n"

    def stream_frames(self, call: Call, answer: Answer) -> Iterator[Frame]:
        body = call.body
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return chat_frames(call.request_id, body, answer, usage=usage, done=self.state.send_done)

    def document(self, call: Call, answer: Answer) -> bytes:
        return dumps(whole_result(call.route, call.request_id, call.body, answer))

    def rejection(self, call: Call) -> web.Response | None:
        """401 for a wrong key, 400 for a body that is not an object, else the quota's answer."""
        auth = call.request.headers.get("Authorization")
        if auth != f"Bearer {self.emu.openai_key}":
            return self.respond(
                call,
                web.Response(
                    status=401,
                    body=error_body("invalid_api_key", "Incorrect API key provided"),
                    content_type="application/json",
                ),
            )
        if not isinstance(call.body, dict):
            return self.respond(
                call,
                web.Response(
                    status=400,
                    body=error_body(None, "the body must be a JSON object"),
                    content_type="application/json",
                ),
            )
        return call.admit()

    async def chat(self, call: Call) -> web.StreamResponse:
        rejected = self.rejection(call)
        if rejected is not None:
            return rejected
        body = call.body
        tokens = self.emu.reply_tokens_for(prompt_text(body))
        answer = self.make_answer(call, tokens, max_tokens_of(body))
        call.take_fault(len(answer.pieces))
        return await self.answer(call, answer, bool(body.get("stream")))

    async def completions(self, call: Call) -> web.StreamResponse:
        rejected = self.rejection(call)
        if rejected is not None:
            return rejected
        body = call.body
        tokens = self.emu.reply_tokens_for(str(body.get("prompt", "")))
        answer = self.make_answer(call, tokens, max_tokens_of(body))
        call.take_fault(len(answer.pieces))
        return await self.answer(call, answer, False)

    async def embeddings(self, call: Call) -> web.StreamResponse:
        rejected = self.rejection(call)
        if rejected is not None:
            return rejected
        fault = call.take_fault(0, random=False)
        if fault is not None and fault.kind in ("error", "http"):
            return self.respond(call, self.fault_response(call, fault))
        self.emu.stats.completed += 1
        return self.respond(call, web.json_response(embedding_result(call.body)), "completed")
