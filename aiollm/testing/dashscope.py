"""Emulator of DashScope text generation.

``POST /api/v1/services/aigc/text-generation/generation`` with ``Authorization: Bearer
<Emulator.api_key>`` (else 401 ``InvalidApiKey``). ``input.messages`` (the last message's content
is the prompt) or ``input.prompt``; ``parameters.result_format`` ``text`` (default) or
``message``; ``parameters.incremental_output`` (default false: cumulative frames, as the real
service); ``parameters.max_tokens`` cuts the reply (finish ``length``). ``X-DashScope-SSE: enable``
streams ``id:``/``event:result``/``:HTTP_STATUS/200``/``data:`` frames and a final frame with the
finish reason and empty text (incremental) or the whole text (cumulative). Every response has an
``x-request-id`` header. ``chatyuan-large-v2`` answers like the real one: no ``usage`` and no
``finish_reason`` in a non-streamed result.

Scripted replies (:class:`~aiollm.testing.Reply`) in ``result_format=message`` send
``message.reasoning_content`` and ``message.tool_calls`` (incremental pieces, or everything so far
in cumulative mode) and finish with ``tool_calls``; the text format carries the text only. See
``docs/wire/dashscope.md``.

Switches in ``emu.state.dashscope`` (:class:`DashScopeState`).

Faults (route ``"generation"``): ``error`` at ``after_tokens=0`` is an HTTP error with the
DashScope body ``{code, message, request_id}`` (status ``fault.status`` or 400, ``Retry-After``
when set); inside a stream it is an ``event:error`` frame with ``:HTTP_STATUS/<status or 500>``.
``http`` is a bare status with a text body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._call import Call, Frame
from ._faults import Fault, FaultChoice
from ._reply import Answer, prompt_text
from ._service import Service, dumps, retry_after_header

__all__ = ["DashScope", "DashScopeState"]

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


@dataclass
class DashScopeState:
    """Switches of the DashScope service (all off by default)."""

    no_blank_lines: bool = False
    """Stream frames without the blank line between them (some gateways)."""
    ignore_incremental: bool = False
    """Always send cumulative frames (a server that ignores the parameter)."""
    gzip: bool = False
    """gzip-encode response bodies."""
    errors_in_stream: bool = False
    """A streamed request that takes an ``error`` fault at ``after_tokens=0`` gets HTTP 200 and
    a first ``event:error`` frame (as the real service does for some errors)."""
    omit_request_id: bool = False
    """Leave ``request_id`` out of bodies (the header still carries it)."""
    workspace: str | None = None
    """When set, requests must send this ``X-DashScope-WorkSpace`` (else 403)."""
    last_headers: dict[str, str] | None = None
    """The last request's headers."""


def input_text(body: dict[str, Any]) -> str:
    """The text a reply is derived from: that of the request's ``input``."""
    input_ = body.get("input")
    return prompt_text(input_) if isinstance(input_, dict) else ""


def error_body(code: str | int | None, message: str, request_id: str) -> bytes:
    """A DashScope error object."""
    return dumps({"code": code, "message": message, "request_id": request_id})


class DashScope(Service):
    """DashScope's native text-generation endpoint, streamed (SSE) or not."""

    name = "dashscope"
    stream_content_type = "text/event-stream;charset=UTF-8"
    extra_faults = (
        FaultChoice(Fault("error", code="Throttling.RateQuota", status=429, retry_after=0.05)),
        FaultChoice(Fault("error", code="Throttling", status=429), "start"),
        FaultChoice(Fault("error", code="InternalError", status=500), "start"),
        FaultChoice(Fault("error", code="InternalError", status=500, message="in stream"), "mid"),
        FaultChoice(Fault("error", code="Throttling", status=429, in_stream=True), "start"),
    )

    @property
    def state(self) -> DashScopeState:
        """The service's switches."""
        return self.emu.state.dashscope

    def add_routes(self, app: web.Application) -> None:
        async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
            request_id = request.get(_REQUEST_ID)
            if request_id:
                response.headers["x-request-id"] = request_id

        app.on_response_prepare.append(add_request_id)
        app.router.add_post(PATH, self.endpoint(ROUTE, self.generation))

    def request_id(self, call: Call) -> str:
        request_id = f"emu-{call.number:08d}-dash-scope-{id(call.request) & 0xFFFF:04x}"
        call.request[_REQUEST_ID] = request_id
        return request_id

    def compress(self) -> bool:
        return self.state.gzip

    def error_in_stream(self, fault: Fault) -> bool:
        return fault.in_stream or self.state.errors_in_stream

    def fail(self, call: Call, status: int, code: str, message: str) -> web.Response:
        """An error answer with the DashScope body."""
        return self.respond(call, self.json(status, error_body(code, message, call.request_id)))

    @staticmethod
    def json(status: int, payload: bytes, headers: dict[str, str] | None = None) -> web.Response:
        """A JSON answer."""
        head = {"Content-Type": "application/json", **(headers or {})}
        return web.Response(status=status, body=payload, headers=head)

    def error_response(self, call: Call, fault: Fault) -> web.Response:
        status = fault.status or 400
        code = fault.code if fault.code is not None else DEFAULT_CODES.get(status, "InternalError")
        body = error_body(code, fault.message, call.request_id)
        return self.json(status, body, retry_after_header(fault.retry_after))

    def throttle_response(self, call: Call, limit: str, retry_after: float | None) -> web.Response:
        code, message = (
            ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
            if limit == "rate"
            else ("Throttling", "Too many requests in progress, please try again later.")
        )
        body = error_body(code, message, call.request_id)
        return self.json(429, body, retry_after_header(retry_after))

    def separator(self) -> bytes:
        """What ends a frame: a blank line, or only a line end (``no_blank_lines``)."""
        return b"\n" if self.state.no_blank_lines else b"\n\n"

    def error_frame(self, call: Call, fault: Fault, position: int) -> bytes:
        status = fault.status or 500
        code = fault.code if fault.code is not None else DEFAULT_CODES.get(status, "InternalError")
        head = f"id:{position + 1}\nevent:error\n:HTTP_STATUS/{status}\ndata:".encode()
        return head + error_body(code, fault.message, call.request_id) + self.separator()

    def malformed_frame(self, call: Call, position: int) -> bytes:
        head = f"id:{position + 1}\nevent:result\n:HTTP_STATUS/200\n".encode()
        return head + b'data:{"output":{"finish_reason":"null","text":' + self.separator()

    # -- answers ------------------------------------------------------------------------------
    def result(self, call: Call, output: dict[str, Any], usage: dict[str, Any] | None) -> bytes:
        """A result object around ``output``."""
        obj: dict[str, Any] = {"output": output}
        if usage is not None:
            obj["usage"] = usage
        if not self.state.omit_request_id:
            obj["request_id"] = call.request_id
        return dumps(obj)

    def usage(
        self, call: Call, answer: Answer, output_tokens: int, reasoning: int
    ) -> dict[str, Any]:
        """The running ``usage`` after ``output_tokens`` tokens."""
        input_tokens = max(1, len(input_text(call.body).split()))
        usage: dict[str, Any] = {
            "total_tokens": input_tokens + output_tokens,
            "output_tokens": output_tokens,
            "input_tokens": input_tokens,
        }
        if reasoning:
            usage["output_tokens_details"] = {"reasoning_tokens": reasoning}
        if answer.reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": answer.reply.cached_tokens}
        return usage

    @staticmethod
    def message_format(call: Call) -> bool:
        """Whether the request asked for ``result_format=message``."""
        return bool(params_of(call).get("result_format") == "message")

    def output(
        self,
        answer: Answer,
        message_format: bool,
        text: str,
        reasoning: str,
        calls: list[dict[str, Any]],
        finish: str | None,
    ) -> dict[str, Any]:
        """The ``output`` object: ``text`` (text format) or ``choices[0].message``."""
        if not message_format:
            output: dict[str, Any] = {"text": text}
            if finish is not None:
                output["finish_reason"] = finish
            return output
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if answer.reply.reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        choice: dict[str, Any] = {"message": message}
        if finish is not None:
            choice = {"finish_reason": finish, "message": message}
        return {"choices": [choice]}

    def stream_frames(self, call: Call, answer: Answer) -> Iterator[Frame]:
        params = params_of(call)
        incremental = params.get("incremental_output") is True and not self.state.ignore_incremental
        message_format = self.message_format(call)
        sep = self.separator()
        text = reasoning = ""
        calls: list[dict[str, Any]] = []
        count = thought = frame_id = 0
        for piece in answer.pieces:
            if piece.kind == "refusal" or (piece.kind != "text" and not message_format):
                continue
            count += 1
            frame_id += 1
            new_text = new_reasoning = ""
            new_calls: list[dict[str, Any]] = []
            if piece.kind == "text":
                text += piece.text
                new_text = piece.text
            elif piece.kind == "reasoning":
                thought += 1
                reasoning += piece.text
                new_reasoning = piece.text
            else:
                call_ = answer.calls[piece.call]
                if piece.first:
                    calls.append(
                        {
                            "index": piece.call,
                            "id": call_.id,
                            "type": "function",
                            "function": {"name": call_.name, "arguments": ""},
                        }
                    )
                    new_calls = [calls[-1]]
                else:
                    calls[-1]["function"]["arguments"] += piece.text
                    fragment = {"arguments": piece.text}
                    new_calls = [
                        {"index": piece.call, "id": "", "type": "function", "function": fragment}
                    ]
            output = (
                self.output(answer, message_format, new_text, new_reasoning, new_calls, "null")
                if incremental
                else self.output(answer, message_format, text, reasoning, _copy(calls), "null")
            )
            head = f"id:{frame_id}\nevent:result\n:HTTP_STATUS/200\ndata:".encode()
            usage = self.usage(call, answer, count, thought)
            data = head + self.result(call, output, usage) + sep
            tool = piece.text if piece.kind == "tool" else ""
            yield Frame(data, text=new_text, reasoning=new_reasoning, tool=tool)
        final = (
            self.output(answer, message_format, "", "", [], answer.finish_reason)
            if incremental
            else self.output(answer, message_format, text, reasoning, calls, answer.finish_reason)
        )
        head = f"id:{frame_id + 1}\nevent:result\n:HTTP_STATUS/200\ndata:".encode()
        usage = self.usage(call, answer, count, thought)
        yield Frame(head + self.result(call, final, usage) + sep, paced=False)

    def document(self, call: Call, answer: Answer) -> bytes:
        message_format = self.message_format(call)
        calls = [
            {
                "index": i,
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for i, c in enumerate(answer.calls)
        ]
        if not message_format:
            calls = []
        if call.body.get("model") == "chatyuan-large-v2":
            output = self.output(answer, message_format, answer.text, "", [], None)
            return self.result(call, output, None)
        reasoning = answer.reasoning if message_format else ""
        output = self.output(
            answer, message_format, answer.text, reasoning, calls, answer.finish_reason
        )
        tokens = sum(
            1 for p in answer.pieces if p.kind == "text" or (message_format and p.kind != "refusal")
        )
        return self.result(
            call, output, self.usage(call, answer, tokens, answer.count("reasoning"))
        )

    async def generation(self, call: Call) -> web.StreamResponse:
        request = call.request
        self.state.last_headers = dict(request.headers)
        if request.headers.get("Authorization") != f"Bearer {self.emu.api_key}":
            return self.fail(call, 401, "InvalidApiKey", "Invalid API-key provided.")
        body = call.body
        if not isinstance(body, dict):
            return self.fail(call, 400, "InvalidParameter", "The request body is not valid JSON.")
        workspace = self.state.workspace
        if workspace and request.headers.get("X-DashScope-WorkSpace") != workspace:
            return self.fail(call, 403, "Workspace.AccessDenied", "Workspace access denied.")
        if not body.get("model"):
            message = "Required parameter(model) missing or invalid."
            return self.fail(call, 400, "BadRequest.EmptyModel", message)
        input_ = body.get("input")
        if not isinstance(input_, dict) or not (input_.get("messages") or input_.get("prompt")):
            message = "Required input parameter missing from request."
            return self.fail(call, 400, "BadRequest.EmptyInput", message)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return self.fail(call, 400, "InvalidParameter", "parameters must be an object.")
        throttled = call.admit()
        if throttled is not None:
            return self.respond(call, throttled)
        max_tokens = params.get("max_tokens")
        tokens = self.emu.reply_tokens_for(input_text(body))
        answer = self.make_answer(call, tokens, max_tokens if isinstance(max_tokens, int) else None)
        call.take_fault(len(answer.pieces))
        streamed = request.headers.get("X-DashScope-SSE", "").lower() == "enable"
        return await self.answer(call, answer, streamed)


def params_of(call: Call) -> dict[str, Any]:
    """The request's ``parameters`` (checked to be an object before answering)."""
    params = call.body.get("parameters")
    return params if isinstance(params, dict) else {}


def _copy(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**c, "function": dict(c["function"])} for c in calls]
