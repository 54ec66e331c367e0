"""Emulator of the token-protected OpenAI-compatible gateway.

- ``GET /api/v1/ability_sub/external/getToken?appid=..&secret=..`` with
  :attr:`Emulator.gateway_appid` / :attr:`Emulator.gateway_secret` issues a signed JWT (HS256)
  whose payload carries ``abilityId`` (:attr:`Emulator.gateway_ability`), ``abilityName``,
  ``appId``, ``iat`` and ``exp = iat + token_lifetime`` (fractional seconds when the lifetime
  is). Wrong credentials: HTTP 401 ``{"code": 401, "msg": ...}``. Each issued token is counted
  (``emu.stats.tokens_issued["gateway"]``, ``emu.state.gateway.issued``).
- ``POST /{ability}/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` with
  ``?accessToken=<token>``. A missing, forged, revoked or expired token gets HTTP 401 and
  ``{code: 401, msg: "accessToken expired"|"invalid accessToken"}`` in the current error
  shape; a token for another ability gets 403. Answers are JSON only: a request with
  ``"stream": true`` gets error -98434 (``INVALID_RESPONSE_CONTENT_TYPE``) unless
  ``allow_stream`` is on, then chat streams OpenAI chunks.

Switches in ``emu.state.gateway`` (:class:`GatewayState`).

Faults (routes ``"token"``, ``"chat"``, ``"completions"``, ``"embeddings"``; a fault without a
route is taken by the next call, never by a token request): ``error`` answers ``fault.code`` /
``fault.message`` in the current ``error_shape``, with HTTP status ``fault.status`` — or 200
when it is None, as the gateway puts its codes in 200 bodies; ``http`` is a bare
``fault.status`` (default 502) with a plain-text body; ``malformed`` answers a broken JSON body
and ``truncate`` a JSON body cut short. :func:`revoke_tokens` makes every token issued so far
invalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from ._call import Call, Frame
from ._faults import Fault, FaultChoice
from ._reply import Answer, prompt_text
from ._service import Service, dumps, retry_after_header
from .openai import chat_frames, embedding_result, max_tokens_of, whole_result

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["Gateway", "GatewayState", "make_jwt", "read_jwt", "revoke_tokens"]

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

TokenShape = Literal["data.accessToken", "data.token", "data", "token", "accessToken", "text"]
ErrorShape = Literal["code_msg", "code_message", "openai"]


@dataclass
class GatewayState:
    """Switches and issued tokens of the gateway."""

    token_lifetime: float = 3600.0
    """Seconds a token lives."""
    token_shape: TokenShape = "data.accessToken"
    """How getToken answers: ``{"code": 0, "msg": "success", "data": {"accessToken": ..}}``
    (default), ``data.token``, ``data`` (``{"code": 200, "data": "<jwt>"}``), ``token``,
    ``accessToken`` (a top-level key) or ``text`` (the bare token as ``text/plain``)."""
    error_shape: ErrorShape = "code_msg"
    """The body of every error: ``{"code", "msg"}``, ``{"code", "message"}`` or OpenAI's
    ``{"error": {"code", "message", "type"}}``."""
    allow_stream: bool = False
    """Honour ``"stream": true`` on chat instead of answering -98434."""
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

    def revoke_tokens(self) -> None:
        """Reject every token issued so far (as if the gateway restarted with a new key)."""
        self.revoked.update(self.issued)


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
    emu.state.gateway.revoke_tokens()


class Gateway(Service):
    """The gateway: getToken, then JSON-only chat, completions and embeddings."""

    name = "gateway"
    rate_limit_headers = True
    extra_faults = (
        FaultChoice(Fault("http", status=429, retry_after=0.05, message="too many requests")),
        FaultChoice(Fault("http", status=429, message="too many requests")),
        FaultChoice(Fault("error", code=50002, message="CUDA_OUT_OF_MEMORY")),
        FaultChoice(
            Fault("error", code=401, status=401, message="accessToken expired", expire_token=True)
        ),
    )

    @property
    def state(self) -> GatewayState:
        """The gateway's switches and tokens."""
        return self.emu.state.gateway

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(TOKEN_PATH, self.endpoint("token", self.get_token, query=True))
        for route in ("chat", "completions", "embeddings"):
            path = f"/{{ability}}/v1/{'chat/completions' if route == 'chat' else route}"
            app.router.add_post(path, self.endpoint(route, self.call))

    def request_id(self, call: Call) -> str:
        prefix = "chatcmpl" if call.route == "chat" else "cmpl"
        return "" if call.route == "token" else f"{prefix}-gw{call.number}"

    def error(self, code: int | str | None, message: str, status: int | None) -> web.Response:
        """A gateway error in the current ``error_shape`` (HTTP ``status``, default 200)."""
        body = self.error_body(code, message)
        return web.Response(body=body, status=status or 200, content_type="application/json")

    def error_body(self, code: int | str | None, message: str) -> bytes:
        """The body of a gateway error in the current ``error_shape``."""
        shape = self.state.error_shape
        obj: dict[str, Any]
        if shape == "openai":
            name = ERROR_NAMES.get(code, "gateway_error") if isinstance(code, int) else None
            obj = {"error": {"code": code, "message": message, "type": name or "gateway_error"}}
        elif shape == "code_message":
            obj = {"code": code, "message": message}
        else:
            obj = {"code": code, "msg": message}
        return dumps(obj)

    def error_response(self, call: Call, fault: Fault) -> web.Response:
        return self.error(fault.code, fault.message, fault.status)

    def http_response(self, call: Call, fault: Fault) -> web.Response:
        status = fault.status or 502
        headers = {"Content-Type": "text/plain", **retry_after_header(fault.retry_after)}
        return web.Response(status=status, text=f"{status} {fault.message}", headers=headers)

    def throttle_response(self, call: Call, limit: str, retry_after: float | None) -> web.Response:
        resp = self.error(429, "too many requests", 429)
        resp.headers.update(retry_after_header(retry_after))
        return resp

    def error_frame(self, call: Call, fault: Fault, position: int) -> bytes:
        return b"data: " + self.error_body(fault.code, fault.message) + b"\n\n"

    def stream_frames(self, call: Call, answer: Answer) -> Iterator[Frame]:
        return chat_frames(call.request_id, call.body, answer, usage=True, done=True)

    def document(self, call: Call, answer: Answer) -> bytes:
        return dumps(whole_result(call.route, call.request_id, call.body, answer))

    def expire(self, token: str) -> None:
        self.state.revoked.add(token)

    async def get_token(self, call: Call) -> web.StreamResponse:
        fault = call.take_fault(0, exact=True)
        if fault is not None and fault.kind in ("error", "http"):
            return self.respond(call, self.fault_response(call, fault))
        query = call.request.query
        emu = self.emu
        if query.get("appid") != emu.gateway_appid or query.get("secret") != emu.gateway_secret:
            rejection = web.json_response({"code": 401, "msg": "appid or secret is invalid"})
            rejection.set_status(401)
            return self.respond(call, rejection)
        state = self.state
        now = time.time()
        lifetime = float(state.token_lifetime)
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
                "jti": len(state.issued) + 1,
            }
        )
        state.issued.append(token)
        emu.stats.tokens_issued[self.name] += 1
        shape = state.token_shape
        if shape == "text":
            return web.Response(text=token, content_type="text/plain")
        if shape == "data":
            return web.json_response({"code": 200, "msg": "success", "data": token})
        if shape in ("token", "accessToken"):
            return web.json_response({shape: token})
        key = "token" if shape == "data.token" else "accessToken"
        return web.json_response({"code": 0, "msg": "success", "data": {key: token}})

    def token_rejection(self, call: Call) -> web.Response | None:
        """The answer to a call whose access token is missing, forged, revoked or expired."""
        token = call.request.query.get("accessToken", "")
        call.token = token or None
        claims = read_jwt(token) if token else None
        if claims is None or token in self.state.revoked:
            return self.error(401, "invalid accessToken", 401)
        if float(claims.get("exp", 0)) <= time.time():
            return self.error(401, "accessToken expired", 401)
        if claims.get("abilityId") != call.request.match_info["ability"]:
            return self.error(403, "the token is not for this ability", 403)
        return None

    async def call(self, call: Call) -> web.StreamResponse:
        rejected = self.token_rejection(call)
        if rejected is not None:
            return self.respond(call, rejected)
        body = call.body
        if not isinstance(body, dict):
            return self.respond(call, self.error(400, "the body must be a JSON object", 400))
        throttled = call.admit()
        if throttled is not None:
            return self.respond(call, throttled)
        route = call.route
        streamed = bool(body.get("stream"))
        if route == "embeddings":
            fault = call.take_fault(0, random=False)
            if fault is not None and fault.kind in ("error", "http"):
                return self.respond(call, self.fault_response(call, fault))
            self.emu.stats.completed += 1
            return self.respond(call, web.json_response(embedding_result(body)), "completed")
        tokens = self.emu.reply_tokens_for(prompt_text(body))
        answer = self.make_answer(call, tokens, max_tokens_of(body))
        fault = call.take_fault(len(answer.pieces))
        if fault is not None and (
            fault.kind == "http" or (fault.kind == "error" and fault.after_tokens == 0)
        ):
            return self.respond(call, self.fault_response(call, fault))
        if streamed and not (route == "chat" and self.state.allow_stream):
            return self.respond(call, self.error(-98434, "INVALID_RESPONSE_CONTENT_TYPE", None))
        return await self.answer(call, answer, streamed)
