"""Emulator routes for the token-protected OpenAI-compatible gateway.

- ``GET /api/v1/ability_sub/external/getToken?appid=..&secret=..`` with
  :attr:`Emulator.gateway_appid` / :attr:`Emulator.gateway_secret` issues a signed JWT (HS256)
  whose payload carries ``abilityId`` (:attr:`Emulator.gateway_ability`), ``abilityName``,
  ``appId``, ``iat`` and ``exp = iat + token_lifetime`` (fractional seconds when the lifetime
  is). Wrong credentials: HTTP 401 ``{"code": 401, "msg": ...}``. Each issued token is counted
  (``emu.stats.requests["gateway.token"]``, ``state["issued"]``).
- ``POST /{ability}/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` with
  ``?accessToken=<token>``. A missing, forged, revoked or expired token gets HTTP 401 and
  ``{code: 401, msg: "accessToken expired"|"invalid accessToken"}`` in the current error
  shape; a token for another ability gets 403. Answers are JSON only: a request with
  ``"stream": true`` gets error -98434 (``INVALID_RESPONSE_CONTENT_TYPE``) unless
  ``allow_stream`` is on, then chat streams OpenAI chunks.

Switches in ``emu.state["gateway"]``:

- ``token_lifetime`` (seconds, default 3600);
- ``token_shape``: how getToken answers — ``"data.accessToken"`` (default,
  ``{"code": 0, "msg": "success", "data": {"accessToken": ..}}``), ``"data.token"``,
  ``"data"`` (``{"code": 200, "data": "<jwt>"}``), ``"token"``, ``"accessToken"``, or
  ``"text"`` (the bare token as ``text/plain``);
- ``error_shape``: the body of every error — ``"code_msg"`` (default, ``{"code", "msg"}``),
  ``"code_message"`` (``{"code", "message"}``) or ``"openai"``
  (``{"error": {"code", "message", "type"}}``);
- ``allow_stream`` (default False): honour ``"stream": true`` on chat instead of -98434.

Faults (routes ``"token"``, ``"chat"``, ``"completions"``, ``"embeddings"``; a fault without a
route is taken by the next call, never by a token request): ``error`` answers
``fault.code`` / ``fault.message`` in the current ``error_shape``, with HTTP status
``fault.status`` — or 200 when it is None, as the gateway puts its codes in 200 bodies;
``http`` is a bare ``fault.status`` (default 502) with a plain-text body and ``Retry-After``
when ``retry_after`` is set; ``reset`` and ``stall`` act after ``after_tokens`` tokens;
``malformed`` answers a broken JSON body and ``truncate`` a JSON body cut short.
:func:`revoke_tokens` makes every token issued so far invalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ._emulator import ClientGone, Emulator, Fault
from .openai import (
    chat_result,
    chunk,
    completion_result,
    embedding_result,
    finish_for,
    prompt_text,
    usage_for,
)

PROVIDER = "gateway"
TOKEN_PATH = "/api/v1/ability_sub/external/getToken"
ERROR_NAMES = {
    -98432: "SENSITIVE_WORD_ERROR",
    -98433: "TOKEN_LIMIT_DAY",
    -98434: "INVALID_RESPONSE_CONTENT_TYPE",
    40303: "CONTEXT_OVERFLOW",
    50002: "CUDA_OUT_OF_MEMORY",
    401: "UNAUTHORIZED",
}
_SIGNING_KEY = b"aiollm-emulator-gateway-signing-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: dict[str, Any], key: bytes = _SIGNING_KEY) -> str:
    """An HS256 JWT of ``claims``."""
    head = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def read_jwt(token: str, key: bytes = _SIGNING_KEY) -> dict[str, Any] | None:
    """The claims of a JWT this emulator signed, or None (forged or malformed)."""
    try:
        head, body, signature = token.split(".")
        expected = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def revoke_tokens(emu: Emulator) -> None:
    """Reject every token issued so far (as if the gateway restarted with a new key)."""
    state = emu.state[PROVIDER]
    state["revoked"].update(state["issued"])


def _state(emu: Emulator) -> dict[str, Any]:
    state: dict[str, Any] = emu.state.setdefault(PROVIDER, {})
    state.setdefault("token_lifetime", 3600.0)
    state.setdefault("token_shape", "data.accessToken")
    state.setdefault("error_shape", "code_msg")
    state.setdefault("allow_stream", False)
    state.setdefault("issued", [])
    state.setdefault("revoked", set())
    return state


def error_response(
    emu: Emulator, code: int | str | None, message: str, status: int | None = None
) -> web.Response:
    """A gateway error in the current ``error_shape`` (HTTP ``status``, default 200)."""
    shape = _state(emu)["error_shape"]
    obj: dict[str, Any]
    if shape == "openai":
        name = ERROR_NAMES.get(code, "gateway_error") if isinstance(code, int) else "gateway_error"
        obj = {"error": {"code": code, "message": message, "type": name}}
    elif shape == "code_message":
        obj = {"code": code, "message": message}
    else:
        obj = {"code": code, "msg": message}
    return web.Response(
        body=json.dumps(obj, ensure_ascii=False).encode(),
        status=status or 200,
        content_type="application/json",
    )


def _fault_response(emu: Emulator, fault: Fault) -> web.Response:
    if fault.kind == "error":
        return error_response(emu, fault.code, fault.message, fault.status)
    headers = {"Content-Type": "text/plain"}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    status = fault.status or 502
    return web.Response(status=status, text=f"{status} {fault.message}", headers=headers)


def register(emu: Emulator, app: web.Application) -> None:
    """Add the gateway routes."""
    state = _state(emu)

    async def get_token(request: web.Request) -> web.Response:
        emu.begin("gateway.token", dict(request.query))
        fault = emu.take_fault(PROVIDER, "token", exact=True)
        if fault is not None and fault.kind in ("error", "http"):
            return _fault_response(emu, fault)
        query = request.query
        if query.get("appid") != emu.gateway_appid or query.get("secret") != emu.gateway_secret:
            return web.json_response({"code": 401, "msg": "appid or secret is invalid"}, status=401)
        now = time.time()
        lifetime = float(state["token_lifetime"])
        exp: float = now + lifetime
        iat: float = now
        if lifetime.is_integer():
            iat = int(now)
            exp = iat + int(lifetime)
        token = make_jwt(
            {
                "abilityStatus": "1",
                "abilityName": "Llama2",
                "clusterName": "host",
                "appId": emu.gateway_appid,
                "abilityId": emu.gateway_ability,
                "userName": "emulator",
                "exp": exp,
                "iat": iat,
                "jti": len(state["issued"]) + 1,
            }
        )
        state["issued"].append(token)
        shape = state["token_shape"]
        if shape == "text":
            return web.Response(text=token, content_type="text/plain")
        if shape == "data":
            return web.json_response({"code": 200, "msg": "success", "data": token})
        if shape in ("token", "accessToken"):
            return web.json_response({shape: token})
        key = "token" if shape == "data.token" else "accessToken"
        return web.json_response({"code": 0, "msg": "success", "data": {key: token}})

    def token_rejection(request: web.Request) -> web.Response | None:
        token = request.query.get("accessToken", "")
        claims = read_jwt(token) if token else None
        if claims is None or token in state["revoked"]:
            return error_response(emu, 401, "invalid accessToken", 401)
        if float(claims.get("exp", 0)) <= time.time():
            return error_response(emu, 401, "accessToken expired", 401)
        if claims.get("abilityId") != request.match_info["ability"]:
            return error_response(emu, 403, "the token is not for this ability", 403)
        return None

    async def answer(request: web.Request, route: str) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        emu.begin(f"gateway.{route}", body)
        rejected = token_rejection(request)
        if rejected is not None:
            return rejected
        if not isinstance(body, dict):
            return error_response(emu, 400, "the body must be a JSON object", 400)
        fault = emu.take_fault(PROVIDER, route)
        if fault is not None and fault.kind in ("error", "http"):
            return _fault_response(emu, fault)
        if body.get("stream") and not (route == "chat" and state["allow_stream"]):
            return error_response(emu, -98434, "INVALID_RESPONSE_CONTENT_TYPE")
        if route == "embeddings":
            emu.stats.completed += 1
            return web.json_response(embedding_result(body))
        tokens = emu.reply_tokens_for(prompt_text(body), body.get("max_tokens"))
        prefix = "chatcmpl" if route == "chat" else "cmpl"
        cid = f"{prefix}-gw{emu.stats.requests[f'gateway.{route}']}"
        if body.get("stream"):
            return await stream_chat(request, cid, body, tokens, fault)
        text: list[str] = []
        try:
            async for _, token in emu.paced(request, tokens, fault):
                text.append(token)
        except ClientGone:
            emu.stats.disconnects += 1
            return web.Response(status=499)
        build = chat_result if route == "chat" else completion_result
        document = json.dumps(build(cid, body, text), ensure_ascii=False).encode()
        if fault is not None and fault.kind == "malformed":
            document = b'{"id": "broken", "choices": [{"message": oops}]}'
        elif fault is not None and fault.kind == "truncate":
            document = document[: len(document) // 2]
        emu.stats.completed += 1
        return web.Response(body=document, content_type="application/json")

    async def stream_chat(
        request: web.Request, cid: str, body: dict[str, Any], tokens: list[str], fault: Fault | None
    ) -> web.StreamResponse:
        model = str(body.get("model", ""))
        resp = await emu.open_stream(request, "text/event-stream; charset=utf-8")

        async def frames() -> AsyncIterator[bytes]:
            async for i, token in emu.paced(request, tokens, fault):
                if fault is not None and i == fault.after_tokens and fault.kind == "truncate":
                    return
                yield chunk(cid, model, token, None)
            yield chunk(cid, model, None, finish_for(body, tokens))
            usage = usage_for(body, tokens)
            final = {"id": cid, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return await emu.run_stream(request, resp, frames())

    async def chat(request: web.Request) -> web.StreamResponse:
        return await answer(request, "chat")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await answer(request, "completions")

    async def embeddings(request: web.Request) -> web.StreamResponse:
        return await answer(request, "embeddings")

    app.router.add_get(TOKEN_PATH, get_token)
    app.router.add_post("/{ability}/v1/chat/completions", chat)
    app.router.add_post("/{ability}/v1/completions", completions)
    app.router.add_post("/{ability}/v1/embeddings", embeddings)
