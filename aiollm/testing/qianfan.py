"""Emulator routes for Baidu Qianfan (wenxinworkshop): the OAuth token endpoint and chat.

- ``POST|GET /oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..``
  issues tokens for :attr:`Emulator.qianfan_ak` / :attr:`Emulator.qianfan_sk` that live
  ``emu.state["qianfan"]["token_lifetime"]`` seconds (``expires_in``); a wrong client id or
  secret is a 401 ``{"error":"invalid_client",...}``. Route name ``qianfan.token``.
- ``POST /rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}?access_token=..`` checks the
  token (a missing one is error 100, an unknown or revoked one 110, an expired one 111, all as
  HTTP 200 JSON), the ``messages`` rules (336003) and streams one ``data:`` frame per token with
  ``sentence_id`` / ``is_end`` and a running ``usage``. Route name ``qianfan.chat``.

Knobs in ``emu.state["qianfan"]``: ``token_lifetime`` (seconds), ``token_delay`` (seconds the
token endpoint takes to answer), ``sentence_ids`` (a list of
ids to send instead of 0, 1, 2 …; the last one repeats), ``unsafe_marker`` (a user message
containing it sets ``need_clear_history``; in the last message the reply is empty and
``ban_round`` is -1, in an earlier one ``ban_round`` is its round). :func:`expire_tokens` and
:func:`revoke_tokens` make the service reject the tokens issued so far.

Faults (``emu.script("qianfan", ...)``): the token endpoint takes only faults scripted with
``route="token"``; the chat route takes the others (``route=None`` or ``"chat"``). ``error`` answers
``{"error_code": code, "error_msg": message}`` — use :class:`QianfanFault` to choose how:
``body="json"`` (default; HTTP ``status`` or 200, ``application/json``, or a ``data:`` frame
inside the stream), ``body="html"`` (a ``text/html`` page; without a code, a page with no
error code at all) or ``body="line"`` (a bare JSON line in a ``text/event-stream`` body).
On the token route ``error`` answers ``{"error": code, "error_description": message}``.
``http``, ``reset``, ``stall``, ``malformed`` and ``truncate`` work as everywhere.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from ._emulator import ClientGone, Emulator, Fault

__all__ = ["QianfanFault", "expire_tokens", "register", "revoke_tokens"]

PROVIDER = "qianfan"
DEFAULT_TOKEN_LIFETIME = 2592000.0  # 30 days, as the service says

CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}"
TOKEN_PATH = "/oauth/2.0/token"


@dataclass
class QianfanFault(Fault):
    """A :class:`Fault` that also says how an ``error`` reaches the client (``body``)."""

    body: Literal["json", "html", "line"] = "json"


def _state(emu: Emulator) -> dict[str, Any]:
    state: dict[str, Any] = emu.state.setdefault("qianfan", {})
    state.setdefault("token_lifetime", DEFAULT_TOKEN_LIFETIME)
    state.setdefault("token_delay", 0.0)
    state.setdefault("tokens", {})  # token -> expiry (monotonic), or -1.0 once revoked
    state.setdefault("sentence_ids", None)
    state.setdefault("unsafe_marker", "UNSAFE")
    return state


def expire_tokens(emu: Emulator) -> int:
    """Make every token issued so far expired (the service answers 111); returns how many."""
    tokens: dict[str, float] = _state(emu)["tokens"]
    now = time.monotonic()
    for token in tokens:
        if tokens[token] > now:
            tokens[token] = now
    return len(tokens)


def revoke_tokens(emu: Emulator) -> int:
    """Make every token issued so far invalid (the service answers 110); returns how many."""
    tokens: dict[str, float] = _state(emu)["tokens"]
    for token in tokens:
        tokens[token] = -1.0
    return len(tokens)


def error_json(code: int | str | None, message: str) -> bytes:
    """A Qianfan error body."""
    return json.dumps(
        {"error_code": code, "error_msg": message}, ensure_ascii=False, separators=(",", ":")
    ).encode()


def _error_page(code: int | str | None, message: str) -> bytes:
    if code is None:
        return (
            b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
            b"Gateway</h1></center><hr><center>nginx</center></body></html>"
        )
    return (
        b"<html><head><title>error</title></head><body>"
        + error_json(code, message)
        + b"</body></html>"
    )


def _fault_response(fault: Fault) -> web.Response:
    """The answer to a request-level ``error`` or ``http`` fault on the chat route."""
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.kind == "http":
        status = fault.status or 429
        if status == 429:
            body = error_json(18, "Open api qps request limit reached")
            headers["Content-Type"] = "application/json;charset=utf-8"
        else:
            body = f"<html><body><h1>{status}</h1></body></html>".encode()
            headers["Content-Type"] = "text/html"
        return web.Response(status=status, body=body, headers=headers)
    shape = getattr(fault, "body", "json")
    status = fault.status or 200
    if shape == "html":
        headers["Content-Type"] = "text/html;charset=utf-8"
        return web.Response(
            status=status, body=_error_page(fault.code, fault.message), headers=headers
        )
    if shape == "line":
        headers["Content-Type"] = "text/event-stream;charset=utf-8"
        return web.Response(
            status=status, body=error_json(fault.code, fault.message) + b"\n", headers=headers
        )
    headers["Content-Type"] = "application/json;charset=utf-8"
    return web.Response(status=status, body=error_json(fault.code, fault.message), headers=headers)


def _json_error(code: int, message: str) -> web.Response:
    return web.Response(
        body=error_json(code, message), content_type="application/json", charset="utf-8"
    )


def _messages_problem(messages: Any) -> str | None:
    """The service's 336003 message for ``messages`` that break its rules, else None."""
    if not isinstance(messages, list) or not messages:
        return "the length of messages must be an odd number"
    if len(messages) % 2 == 0:
        return "the length of messages must be an odd number"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return "invalid message"
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            return (
                "the role of message with odd index in the messages must be assistant"
                if i % 2
                else ("the role of message with even index in the messages must be user")
            )
        if not isinstance(message.get("content"), str):
            return "the content of message must be a string"
    if len(messages[-1]["content"]) > 2000:
        return "the max length of current question is 2000"
    return None


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def register(emu: Emulator, app: web.Application) -> None:
    """Add the Qianfan routes."""
    state = _state(emu)

    async def token(request: web.Request) -> web.StreamResponse:
        emu.begin("qianfan.token", {k: v for k, v in request.query.items() if k != "client_secret"})
        fault = emu.take_fault(PROVIDER, "token", exact=True)
        if fault is not None:
            if fault.kind == "error":
                return web.json_response(
                    {"error": fault.code or "invalid_client", "error_description": fault.message},
                    status=fault.status or 401,
                )
            if fault.kind == "http":
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else {}
                return web.Response(
                    status=fault.status or 500,
                    text="<html>server error</html>",
                    content_type="text/html",
                    headers=headers,
                )
            if fault.kind == "stall":
                try:
                    await emu.wait_gone(request)
                except ClientGone:
                    emu.stats.disconnects += 1
                return web.Response(status=499)
            if fault.kind == "reset":
                emu.drop(request)
                return web.Response(status=499)
            if fault.kind == "malformed":
                return web.Response(text="not a token", content_type="text/plain")
        if state["token_delay"] > 0:
            await asyncio.sleep(state["token_delay"])
        query = request.query
        if query.get("grant_type") != "client_credentials":
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "unsupported grant type"},
                status=400,
            )
        if query.get("client_id") != emu.qianfan_ak:
            return web.json_response(
                {"error": "invalid_client", "error_description": "unknown client id"}, status=401
            )
        if query.get("client_secret") != emu.qianfan_sk:
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                status=401,
            )
        lifetime = float(state["token_lifetime"])
        issued = f"24.{secrets.token_hex(16)}.{int(lifetime)}.{int(time.time())}-emu"
        state["tokens"][issued] = time.monotonic() + lifetime
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

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        emu.begin("qianfan.chat", body)
        access_token = request.query.get("access_token")
        if not access_token:
            return _json_error(100, "Invalid parameter")
        expiry = state["tokens"].get(access_token)
        if expiry is None or expiry < 0:
            return _json_error(110, "Access token invalid or no longer valid")
        if expiry <= time.monotonic():
            return _json_error(111, "Access token expired")
        if not isinstance(body, dict):
            return _json_error(336002, "Invalid JSON")
        fault = emu.take_fault(PROVIDER, "chat")
        if fault is not None and fault.kind in ("error", "http") and fault.after_tokens == 0:
            return _fault_response(fault)
        messages = body.get("messages")
        problem = _messages_problem(messages)
        if problem is not None:
            return _json_error(336003, problem)
        assert isinstance(messages, list)
        question = str(messages[-1]["content"])
        marker = state["unsafe_marker"]
        ban_round: int | None = None
        if marker and marker in question:
            ban_round = -1
        else:
            for i in range(0, len(messages) - 1, 2):
                if marker and marker in str(messages[i].get("content", "")):
                    ban_round = i // 2 + 1
                    break
        max_out = body.get("max_output_tokens")
        limit = max_out if isinstance(max_out, int) else None
        full = [] if ban_round == -1 else emu.reply_tokens_for(question, None)
        tokens = full[:limit] if limit is not None else full
        truncated = len(tokens) < len(full)
        rid = f"as-emu{emu.stats.requests['qianfan.chat']}"
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 2 + 1
        safety: dict[str, Any] = {"need_clear_history": ban_round is not None}
        if ban_round is not None:
            safety["ban_round"] = ban_round

        def usage(n: int) -> dict[str, int]:
            return {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            }

        if not body.get("stream"):
            text: list[str] = []
            try:
                async for _, tok in emu.paced(request, tokens, fault):
                    text.append(tok)
            except ClientGone:
                emu.stats.disconnects += 1
                return web.Response(status=499)
            emu.stats.completed += 1
            return web.json_response(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "result": "".join(text),
                    "is_truncated": truncated,
                    **safety,
                    "usage": usage(len(tokens)),
                },
                dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
            )

        ids = state["sentence_ids"]
        resp = await emu.open_stream(request, "text/event-stream;charset=utf-8")

        def frame(i: int, result: str, is_end: bool) -> bytes:
            sid = i if ids is None else (ids[i] if i < len(ids) else ids[-1])
            return _frame(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "sentence_id": sid,
                    "is_end": is_end,
                    "is_truncated": truncated and is_end,
                    "result": result,
                    **safety,
                    "usage": usage(i + 1 if tokens else 0),
                }
            )

        async def frames() -> AsyncIterator[bytes]:
            if not tokens:
                yield frame(0, "", True)
                return
            last = len(tokens) - 1
            async for i, tok in emu.paced(request, tokens, fault):
                if fault is not None and i == fault.after_tokens:
                    if fault.kind == "error":
                        err = error_json(fault.code, fault.message)
                        if getattr(fault, "body", "json") == "line":
                            yield err + b"\n"
                        else:
                            yield b"data: " + err + b"\n\n"
                        return
                    if fault.kind == "malformed":
                        yield b'data: {"id": "broken", "result": \n\n'
                        return
                    if fault.kind == "truncate":
                        return
                yield frame(i, tok, i == last)

        return await emu.run_stream(request, resp, frames())

    app.router.add_route("POST", TOKEN_PATH, token)
    app.router.add_route("GET", TOKEN_PATH, token)
    app.router.add_post(CHAT_PATH, chat)
