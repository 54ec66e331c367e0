"""Emulator routes for DashScope text generation.

``POST /api/v1/services/aigc/text-generation/generation`` with ``Authorization: Bearer
<Emulator.api_key>`` (else 401 ``InvalidApiKey``). ``input.messages`` (the last message's content
is the prompt) or ``input.prompt``; ``parameters.result_format`` ``text`` (default) or
``message``; ``parameters.incremental_output`` (default false: cumulative frames, as the real
service); ``parameters.max_tokens`` cuts the reply (finish ``length``). ``X-DashScope-SSE: enable``
streams ``id:``/``event:result``/``:HTTP_STATUS/200``/``data:`` frames and a final frame with the
finish reason and empty text (incremental) or the whole text (cumulative). Every response has an
``x-request-id`` header. ``chatyuan-large-v2`` answers like the real one: no ``usage`` and no
``finish_reason`` in a non-streamed result.

Switches in ``emu.state["dashscope"]`` (all off by default):

- ``no_blank_lines``: stream frames without the blank line between them (some gateways).
- ``ignore_incremental``: always send cumulative frames (a server that ignores the parameter).
- ``gzip``: gzip-encode response bodies.
- ``errors_in_stream``: a streamed request that takes an ``error`` fault with ``after_tokens=0``
  gets HTTP 200 and a first ``event:error`` frame (as the real service does for some errors)
  instead of an HTTP error.
- ``omit_request_id``: leave ``request_id`` out of bodies (the header still carries it).
- ``workspace``: when set, requests must send this ``X-DashScope-WorkSpace`` (else 403
  ``Workspace.AccessDenied``).

``emu.state["dashscope"]["last_headers"]`` holds the last request's headers.

Faults (route ``"generation"``): ``error`` with ``after_tokens=0`` is an HTTP error with the
DashScope body ``{code, message, request_id}`` (status ``fault.status`` or 400, ``Retry-After``
when set); with ``after_tokens>0`` it is an ``event:error`` frame with
``:HTTP_STATUS/<status or 500>`` inside the stream. ``http`` is a bare status with a text body.
``reset``, ``stall``, ``malformed`` (a broken JSON frame) and ``truncate`` (no final frame) act
after ``after_tokens`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ._emulator import ClientGone, Emulator, Fault

PROVIDER = "dashscope"
PATH = "/api/v1/services/aigc/text-generation/generation"
ROUTE = "generation"
_REQUEST_ID: Any = (
    web.RequestKey("aiollm.dashscope.request_id", str)
    if hasattr(web, "RequestKey")  # aiohttp >= 3.12
    else "aiollm.dashscope.request_id"
)

DEFAULT_CODES = {
    400: "InvalidParameter",
    401: "InvalidApiKey",
    403: "AccessDenied",
    404: "ModelNotFound",
    408: "RequestTimeOut",
    413: "BadRequest.TooLarge",
    429: "Throttling.RateQuota",
    500: "InternalError",
    503: "ModelUnavailable",
}

_DEFAULTS: dict[str, Any] = {
    "no_blank_lines": False,
    "ignore_incremental": False,
    "gzip": False,
    "errors_in_stream": False,
    "omit_request_id": False,
    "workspace": None,
    "last_headers": None,
}


def prompt_text(body: dict[str, Any]) -> str:
    """The text a reply is derived from: the last message's content, or the prompt."""
    input_ = body.get("input")
    if not isinstance(input_, dict):
        return ""
    messages = input_.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict):
            return str(last.get("content", ""))
    return str(input_.get("prompt", ""))


def error_body(code: str | int | None, message: str, request_id: str) -> bytes:
    """A DashScope error object."""
    return json.dumps(
        {"code": code, "message": message, "request_id": request_id}, ensure_ascii=False
    ).encode()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def register(emu: Emulator, app: web.Application) -> None:
    """Add the DashScope text-generation route."""
    state: dict[str, Any] = emu.state.setdefault(PROVIDER, {})
    for key, value in _DEFAULTS.items():
        state.setdefault(key, value)

    async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(_REQUEST_ID)
        if request_id:
            response.headers["x-request-id"] = request_id

    app.on_response_prepare.append(add_request_id)

    def json_response(
        request: web.Request, status: int, payload: bytes, headers: dict[str, str] | None = None
    ) -> web.Response:
        resp = web.Response(
            status=status,
            body=payload,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        if state["gzip"]:
            resp.enable_compression(force=web.ContentCoding.gzip)
        return resp

    def fail(request: web.Request, status: int, code: str, message: str) -> web.Response:
        return json_response(request, status, error_body(code, message, request[_REQUEST_ID]))

    def fault_response(request: web.Request, fault: Fault) -> web.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.kind == "http":
            status = fault.status or 429
            return web.Response(status=status, text=f"{status} {fault.message}", headers=headers)
        status = fault.status or 400
        code = fault.code if fault.code is not None else DEFAULT_CODES.get(status, "InternalError")
        return json_response(
            request, status, error_body(code, fault.message, request[_REQUEST_ID]), headers
        )

    def error_frame(frame_id: int, fault: Fault, request_id: str, sep: bytes) -> bytes:
        status = fault.status or 500
        code = fault.code if fault.code is not None else DEFAULT_CODES.get(status, "InternalError")
        return (
            f"id:{frame_id}\nevent:error\n:HTTP_STATUS/{status}\ndata:".encode()
            + error_body(code, fault.message, request_id)
            + sep
        )

    async def generation(request: web.Request) -> web.StreamResponse:
        n = emu.stats.requests[f"{PROVIDER}.{ROUTE}"] + 1
        request_id = f"emu-{n:08d}-dash-scope-{id(request) & 0xFFFF:04x}"
        request[_REQUEST_ID] = request_id
        state["last_headers"] = dict(request.headers)
        try:
            body = await request.json()
        except ValueError:
            body = None
        emu.begin(f"{PROVIDER}.{ROUTE}", body)
        if request.headers.get("Authorization") != f"Bearer {emu.api_key}":
            return fail(request, 401, "InvalidApiKey", "Invalid API-key provided.")
        if not isinstance(body, dict):
            return fail(request, 400, "InvalidParameter", "The request body is not valid JSON.")
        workspace = state["workspace"]
        if workspace and request.headers.get("X-DashScope-WorkSpace") != workspace:
            return fail(request, 403, "Workspace.AccessDenied", "Workspace access denied.")
        model = body.get("model")
        if not model:
            return fail(
                request,
                400,
                "BadRequest.EmptyModel",
                "Required parameter(model) missing or invalid.",
            )
        input_ = body.get("input")
        if not isinstance(input_, dict) or not (input_.get("messages") or input_.get("prompt")):
            return fail(
                request,
                400,
                "BadRequest.EmptyInput",
                "Required input parameter missing from request.",
            )
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return fail(request, 400, "InvalidParameter", "parameters must be an object.")
        streamed = request.headers.get("X-DashScope-SSE", "").lower() == "enable"
        fault = emu.take_fault(PROVIDER, ROUTE)
        if fault is not None and fault.kind in ("error", "http") and fault.after_tokens == 0:
            if not (streamed and fault.kind == "error" and state["errors_in_stream"]):
                return fault_response(request, fault)
        prompt = prompt_text(body)
        max_tokens = params.get("max_tokens")
        tokens = emu.reply_tokens_for(prompt, max_tokens if isinstance(max_tokens, int) else None)
        finish = "length" if isinstance(max_tokens, int) and len(tokens) >= max_tokens else "stop"
        message_format = params.get("result_format") == "message"
        input_tokens = max(1, len(prompt.split()))
        omit_id = state["omit_request_id"]

        def result(
            text: str, finish_reason: str | None, output_tokens: int | None
        ) -> dict[str, Any]:
            output: dict[str, Any]
            if message_format:
                choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
                if finish_reason is not None:
                    choice["finish_reason"] = finish_reason
                output = {"choices": [choice]}
            else:
                output = {"text": text}
                if finish_reason is not None:
                    output["finish_reason"] = finish_reason
            obj: dict[str, Any] = {"output": output}
            if output_tokens is not None:
                obj["usage"] = {
                    "total_tokens": input_tokens + output_tokens,
                    "output_tokens": output_tokens,
                    "input_tokens": input_tokens,
                }
            if not omit_id:
                obj["request_id"] = request_id
            return obj

        if not streamed:
            parts: list[str] = []
            try:
                async for _, token in emu.paced(request, tokens, fault):
                    parts.append(token)
            except ClientGone:
                emu.stats.disconnects += 1
                return web.Response(status=499)
            bare = model == "chatyuan-large-v2"
            emu.stats.completed += 1
            payload = result("".join(parts), None if bare else finish, None if bare else len(parts))
            return json_response(request, 200, _dumps(payload))

        incremental = params.get("incremental_output") is True and not state["ignore_incremental"]
        sep = b"\n" if state["no_blank_lines"] else b"\n\n"
        resp = await emu.open_stream(
            request, "text/event-stream;charset=UTF-8", compress=bool(state["gzip"])
        )

        def frame(frame_id: int, obj: dict[str, Any]) -> bytes:
            head = f"id:{frame_id}\nevent:result\n:HTTP_STATUS/200\ndata:".encode()
            return head + _dumps(obj) + sep

        async def frames() -> AsyncIterator[bytes]:
            if fault is not None and fault.kind == "error" and fault.after_tokens == 0:
                yield error_frame(1, fault, request_id, sep)
                return
            text = ""
            count = 0
            async for i, token in emu.paced(request, tokens, fault):
                if fault is not None and i == fault.after_tokens:
                    if fault.kind == "error":
                        yield error_frame(i + 1, fault, request_id, sep)
                        return
                    if fault.kind == "malformed":
                        yield f"id:{i + 1}\nevent:result\n:HTTP_STATUS/200\n".encode()
                        yield b'data:{"output":{"finish_reason":"null","text":' + sep
                        return
                    if fault.kind == "truncate":
                        return
                text += token
                count += 1
                yield frame(i + 1, result(token if incremental else text, "null", count))
            yield frame(count + 1, result("" if incremental else text, finish, count))

        return await emu.run_stream(request, resp, frames())

    app.router.add_post(PATH, generation)
