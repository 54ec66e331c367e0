"""Emulator of Baidu Qianfan (wenxinworkshop): the OAuth token endpoint and chat.

- ``POST|GET /oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..``
  issues tokens for :attr:`Emulator.qianfan_ak` / :attr:`Emulator.qianfan_sk` that live
  ``emu.state.qianfan.token_lifetime`` seconds (``expires_in``); a wrong client id or secret is
  a 401 ``{"error":"invalid_client",...}``. Route name ``qianfan.token``; issued tokens are
  counted in ``emu.stats.tokens_issued["qianfan"]``.
- ``POST /rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}?access_token=..`` checks the
  token (a missing one is error 100, an unknown or revoked one 110, an expired one 111, all as
  HTTP 200 JSON), the ``messages`` rules (336003) and streams one ``data:`` frame per token with
  ``sentence_id`` / ``is_end`` and a running ``usage``. Route name ``qianfan.chat``.

Scripted replies (:class:`~aiollm.testing.Reply`) with tool calls answer ERNIE's
``function_call`` (``name``, ``arguments``, and the reasoning as ``thoughts``; the first call
only, as the API has one) with ``finish_reason: "function_call"``; see ``docs/wire/qianfan.md``.

Switches in ``emu.state.qianfan`` (:class:`QianfanState`).

Faults (``emu.script("qianfan", ...)``): the token endpoint takes only faults scripted with
``route="token"``; the chat route takes the others (``route=None`` or ``"chat"``). ``error`` answers
``{"error_code": code, "error_msg": message}`` — use :class:`QianfanFault` to choose how:
``body="json"`` (default; HTTP ``status`` or 200, ``application/json``, or a ``data:`` frame
inside the stream), ``body="html"`` (a ``text/html`` page; without a code, a page with no
error code at all) or ``body="line"`` (a bare JSON line in a ``text/event-stream`` body).
On the token route ``error`` answers ``{"error": code, "error_description": message}``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from ._call import Call, ClientGone, Frame
from ._faults import Fault, FaultChoice
from ._reply import Answer
from ._service import HTML_PAGE, Service, dumps, retry_after_header

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["Qianfan", "QianfanFault", "QianfanState", "expire_tokens", "revoke_tokens"]

DEFAULT_TOKEN_LIFETIME = 2592000.0  # 30 days, as the service says

CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}"
TOKEN_PATH = "/oauth/2.0/token"


@dataclass
class QianfanFault(Fault):
    """A :class:`Fault` that also says how an ``error`` reaches the client (``body``)."""

    body: Literal["json", "html", "line"] = "json"


@dataclass
class QianfanState:
    """Switches and issued tokens of the Qianfan service."""

    token_lifetime: float = DEFAULT_TOKEN_LIFETIME
    """Seconds a token lives (``expires_in``)."""
    token_delay: float = 0.0
    """Seconds the token endpoint takes to answer."""
    tokens: dict[str, float] = field(default_factory=dict)
    """Issued token -> expiry (``time.monotonic()``), or -1.0 once revoked."""
    sentence_ids: list[int] | None = None
    """Ids to send instead of 0, 1, 2 …; the last one repeats."""
    unsafe_marker: str | None = "UNSAFE"
    """A user message containing it sets ``need_clear_history``: in the last message the reply
    is empty and ``ban_round`` is -1, in an earlier one ``ban_round`` is its round."""

    def expire_tokens(self) -> int:
        """Make every token issued so far expired (the service answers 111); returns how many."""
        now = time.monotonic()
        for token, expiry in self.tokens.items():
            if expiry > now:
                self.tokens[token] = now
        return len(self.tokens)

    def revoke_tokens(self) -> int:
        """Make every token issued so far invalid (the service answers 110); returns how many."""
        for token in self.tokens:
            self.tokens[token] = -1.0
        return len(self.tokens)


def expire_tokens(emu: Emulator) -> int:
    """Make every token issued so far expired (the service answers 111); returns how many."""
    return emu.state.qianfan.expire_tokens()


def revoke_tokens(emu: Emulator) -> int:
    """Make every token issued so far invalid (the service answers 110); returns how many."""
    return emu.state.qianfan.revoke_tokens()


def error_json(code: int | str | None, message: str) -> bytes:
    """A Qianfan error body."""
    return dumps({"error_code": code, "error_msg": message})


def _error_page(code: int | str | None, message: str) -> bytes:
    if code is None:
        return HTML_PAGE
    head = b"<html><head><title>error</title></head><body>"
    return head + error_json(code, message) + b"</body></html>"


def _messages_problem(messages: Any) -> str | None:
    """The service's 336003 message for ``messages`` that break its rules, else None.

    Roles alternate ``user`` / ``assistant`` from ``user`` to an odd count; ERNIE's function
    calling also allows a ``function`` message (with its ``name``) in a user's place right after
    an assistant message that carries a ``function_call``.
    """
    if not isinstance(messages, list) or not messages or len(messages) % 2 == 0:
        return "the length of messages must be an odd number"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return "invalid message"
        role = message.get("role")
        if i % 2:
            if role != "assistant":
                return "the role of message with odd index in the messages must be assistant"
            if "function_call" in message and message.get("content") in (None, ""):
                continue
        elif role == "function":
            previous = messages[i - 1] if i else {}
            if "function_call" not in previous or not isinstance(message.get("name"), str):
                return "a function message must follow an assistant function_call and have a name"
        elif role != "user":
            return "the role of message with even index in the messages must be user"
        if not isinstance(message.get("content"), str):
            return "the content of message must be a string"
    if len(messages[-1]["content"]) > 2000:
        return "the max length of current question is 2000"
    return None


JSON_UTF8 = "application/json;charset=utf-8"


class Qianfan(Service):
    """Qianfan's OAuth token endpoint and wenxinworkshop chat."""

    name = "qianfan"
    stream_content_type = "text/event-stream;charset=utf-8"
    extra_faults = (
        FaultChoice(Fault("error", code=18, message="Open api qps request limit reached")),
        FaultChoice(Fault("error", code=336100, message="too many users, try again later")),
        FaultChoice(Fault("error", code=110, message="Access token invalid", expire_token=True)),
        FaultChoice(Fault("error", code=111, message="Access token expired", expire_token=True)),
        FaultChoice(Fault("http", status=429, retry_after=0.05), "start"),
        FaultChoice(Fault("http", status=429), "start"),
        FaultChoice(QianfanFault("error", code=336000, message="Internal error", body="line")),
    )

    @property
    def state(self) -> QianfanState:
        """The service's switches and tokens."""
        return self.emu.state.qianfan

    def add_routes(self, app: web.Application) -> None:
        token = self.endpoint("token", self.token, query=True)
        app.router.add_route("POST", TOKEN_PATH, token)
        app.router.add_route("GET", TOKEN_PATH, token)
        app.router.add_post(CHAT_PATH, self.endpoint("chat", self.chat))

    def request_id(self, call: Call) -> str:
        return "" if call.route == "token" else f"as-emu{call.number}"

    def model_of(self, call: Call) -> str:
        return call.request.match_info.get("endpoint", "")

    def expire(self, token: str) -> None:
        self.state.tokens[token] = time.monotonic()

    @staticmethod
    def error_answer(code: int | str | None, message: str, status: int = 200) -> web.Response:
        """An error as the service sends it: JSON, usually with HTTP 200."""
        body = error_json(code, message)
        return web.Response(status=status, body=body, headers={"Content-Type": JSON_UTF8})

    def http_response(self, call: Call, fault: Fault) -> web.Response:
        headers = retry_after_header(fault.retry_after)
        status = fault.status or 429
        if status == 429:
            body = error_json(18, "Open api qps request limit reached")
            headers["Content-Type"] = JSON_UTF8
        else:
            body = f"<html><body><h1>{status}</h1></body></html>".encode()
            headers["Content-Type"] = "text/html"
        return web.Response(status=status, body=body, headers=headers)

    def error_response(self, call: Call, fault: Fault) -> web.Response:
        headers = retry_after_header(fault.retry_after)
        shape = getattr(fault, "body", "json")
        status = fault.status or 200
        if shape == "html":
            headers["Content-Type"] = "text/html;charset=utf-8"
            body = _error_page(fault.code, fault.message)
        elif shape == "line":
            headers["Content-Type"] = "text/event-stream;charset=utf-8"
            body = error_json(fault.code, fault.message) + b"\n"
        else:
            headers["Content-Type"] = JSON_UTF8
            body = error_json(fault.code, fault.message)
        return web.Response(status=status, body=body, headers=headers)

    def throttle_response(self, call: Call, limit: str, retry_after: float | None) -> web.Response:
        if limit == "rate":
            return self.error_answer(18, "Open api qps request limit reached")
        return self.error_answer(336100, "too many users, try again later")

    def error_frame(self, call: Call, fault: Fault, position: int) -> bytes:
        err = error_json(fault.code, fault.message)
        if getattr(fault, "body", "json") == "line":
            return err + b"\n"
        return b"data: " + err + b"\n\n"

    def malformed_frame(self, call: Call, position: int) -> bytes:
        return b'data: {"id": "broken", "result": \n\n'

    # -- answers ------------------------------------------------------------------------------
    def usage(self, call: Call, completion: int) -> dict[str, int]:
        """``usage`` after ``completion`` tokens."""
        prompt: int = call.extra["prompt_tokens"]
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    @staticmethod
    def function_call(answer: Answer) -> dict[str, Any] | None:
        """ERNIE's ``function_call`` for the answer's first tool call, if any."""
        if not answer.calls:
            return None
        first = answer.calls[0]
        fc: dict[str, Any] = {"name": first.name, "arguments": first.arguments}
        if answer.reasoning:
            fc["thoughts"] = answer.reasoning
        return fc

    def stream_frames(self, call: Call, answer: Answer) -> Iterator[Frame]:
        texts = [p.text for p in answer.pieces if p.kind == "text"]
        fc = self.function_call(answer)
        count = len(texts) + (fc is not None)
        ids = self.state.sentence_ids
        for i in range(max(count, 1)):
            is_end = i >= count - 1
            text = texts[i] if i < len(texts) else ""
            obj: dict[str, Any] = {
                "id": call.request_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "sentence_id": i if ids is None else ids[min(i, len(ids) - 1)],
                "is_end": is_end,
                "is_truncated": call.extra["truncated"] and is_end,
                "result": text,
                **call.extra["safety"],
                "usage": self.usage(call, i + 1 if count else 0),
            }
            tool = ""
            if fc is not None and i == len(texts):
                obj["function_call"] = fc
                obj["finish_reason"] = "function_call"
                tool = fc["arguments"]
            yield Frame(b"data: " + dumps(obj) + b"\n\n", text=text, tool=tool)

    def document(self, call: Call, answer: Answer) -> bytes:
        obj: dict[str, Any] = {
            "id": call.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "result": answer.text,
            "is_truncated": call.extra["truncated"],
            **call.extra["safety"],
            "usage": self.usage(call, answer.count("text")),
        }
        fc = self.function_call(answer)
        if fc is not None:
            obj["function_call"] = fc
            obj["finish_reason"] = "function_call"
        return dumps(obj)

    # -- routes -------------------------------------------------------------------------------
    async def token(self, call: Call) -> web.StreamResponse:
        fault = call.take_fault(0, exact=True)
        if fault is not None:
            if fault.kind == "error":
                body = {"error": fault.code or "invalid_client", "error_description": fault.message}
                return self.respond(call, web.json_response(body, status=fault.status or 401))
            if fault.kind == "http":
                page = web.Response(
                    status=fault.status or 500,
                    text="<html>server error</html>",
                    content_type="text/html",
                    headers=retry_after_header(fault.retry_after or None),
                )
                return self.respond(call, page)
            if fault.kind in ("stall", "keepalive"):
                try:
                    await call.wait_gone()
                except ClientGone:
                    self.emu.stats.disconnects += 1
                call.record.outcome = "stall"
                return web.Response(status=499)
            if fault.kind == "reset":
                call.record.outcome = "reset"
                await call.drop()
                return web.Response(status=499)
            if fault.kind == "malformed":
                return self.respond(call, web.Response(text="not a token"), "malformed")
        state = self.state
        if state.token_delay > 0:
            await asyncio.sleep(state.token_delay)
        query = call.request.query
        if query.get("grant_type") != "client_credentials":
            body = {
                "error": "unsupported_grant_type",
                "error_description": "unsupported grant type",
            }
            return self.respond(call, web.json_response(body, status=400))
        if query.get("client_id") != self.emu.qianfan_ak:
            body = {"error": "invalid_client", "error_description": "unknown client id"}
            return self.respond(call, web.json_response(body, status=401))
        if query.get("client_secret") != self.emu.qianfan_sk:
            body = {"error": "invalid_client", "error_description": "Client authentication failed"}
            return self.respond(call, web.json_response(body, status=401))
        lifetime = float(state.token_lifetime)
        issued = f"24.{secrets.token_hex(16)}.{int(lifetime)}.{int(time.time())}-emu"
        state.tokens[issued] = time.monotonic() + lifetime
        self.emu.stats.tokens_issued[self.name] += 1
        return web.json_response(
            {
                "refresh_token": f"25.{secrets.token_hex(16)}",
                "expires_in": lifetime if lifetime != int(lifetime) else int(lifetime),
                "session_key": secrets.token_hex(8),
                "access_token": issued,
                "scope": "public brain_all_scope",
                "session_secret": secrets.token_hex(8),
            }
        )

    async def chat(self, call: Call) -> web.StreamResponse:
        access_token = call.request.query.get("access_token")
        if not access_token:
            return self.respond(call, self.error_answer(100, "Invalid parameter"))
        call.token = access_token
        expiry = self.state.tokens.get(access_token)
        if expiry is None or expiry < 0:
            message = "Access token invalid or no longer valid"
            return self.respond(call, self.error_answer(110, message))
        if expiry <= time.monotonic():
            return self.respond(call, self.error_answer(111, "Access token expired"))
        body = call.body
        if not isinstance(body, dict):
            return self.respond(call, self.error_answer(336002, "Invalid JSON"))
        throttled = call.admit()
        if throttled is not None:
            return self.respond(call, throttled)
        messages = body.get("messages")
        problem = _messages_problem(messages)
        ban_round = self.ban_round(messages) if isinstance(messages, list) and not problem else None
        full = [] if ban_round == -1 or problem else self.emu.reply_tokens_for(self.question(body))
        max_out = body.get("max_output_tokens")
        limit = max_out if isinstance(max_out, int) else None
        answer = self.make_answer(call, full, limit)
        fault = call.take_fault(len(answer.pieces))
        if fault is not None and fault.kind in ("error", "http") and fault.after_tokens == 0:
            return self.respond(call, self.fault_response(call, fault))
        if problem is not None:
            return self.respond(call, self.error_answer(336003, problem))
        assert isinstance(messages, list)
        safety: dict[str, Any] = {"need_clear_history": ban_round is not None}
        if ban_round is not None:
            safety["ban_round"] = ban_round
        call.extra = {
            "truncated": answer.count("text") < len(full),
            "safety": safety,
            "prompt_tokens": sum(len(str(m.get("content", ""))) for m in messages) // 2 + 1,
        }
        return await self.answer(call, answer, bool(body.get("stream")))

    @staticmethod
    def question(body: dict[str, Any]) -> str:
        """The last message's content."""
        return str(body["messages"][-1]["content"])

    def ban_round(self, messages: list[dict[str, Any]]) -> int | None:
        """-1 when the question holds the unsafe marker, the round of an earlier one, or None."""
        marker = self.state.unsafe_marker
        if not marker:
            return None
        if marker in str(messages[-1]["content"]):
            return -1
        for i in range(0, len(messages) - 1, 2):
            if marker in str(messages[i].get("content", "")):
                return i // 2 + 1
        return None
