"""Baidu Qianfan / wenxinworkshop chat (``qianfan/<endpoint>``).

Settings: ``ak`` (``QIANFAN_AK``) and ``sk`` (``QIANFAN_SK``) — the application's API Key and
Secret Key, exchanged at ``/oauth/2.0/token`` for an access token that is cached, refreshed
ahead of ``expires_in`` and refreshed once more when the service rejects it — or a ready
``access_token`` (``QIANFAN_ACCESS_TOKEN``, used as is, never refreshed); ``base_url``
(``QIANFAN_BASE_URL``, an origin, default ``https://aip.baidubce.com``). AK/SK given as
settings win over a token given as a setting, which wins over the environment.

The model is the endpoint name: ``qianfan/llama_2_7b`` posts to
``{base_url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/llama_2_7b?access_token=...``.

Wire facts this module deals with (see the README's *Qianfan* section):

- errors are ``{"error_code": n, "error_msg": ...}`` bodies, usually with HTTP 200 and
  ``application/json`` even for stream requests, sometimes ``text/html``, sometimes a bare
  JSON line inside an event stream;
- streams are ``data: {json}`` frames with ``sentence_id`` and ``is_end`` (no ``[DONE]``); the
  text is the concatenation of the frames' ``result`` s; ``sentence_id`` gaps or repeats only
  raise a :class:`SentenceOrderWarning`; the final usage is the ``is_end`` frame's;
- ``messages`` must be non-empty, odd in number, ``user``/``assistant`` alternating from and
  to ``user``, with at most 2000 characters in the last one (checked before sending).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import ConfigurationError, InvalidRequestError
from ..request import TokenEndpoint
from ._base import Call, HTTPRequest, Prepared, Provider, ResponseDecoder, json_body
from ._qianfan_decoder import QianfanDecoder, SentenceOrderWarning
from ._qianfan_rules import (
    DEFAULT_TOKEN_TIMEOUT,
    MAX_CONTENT_CHARS,
    PROVIDER,
    QianfanToken,
    error_from_code,
    native_messages,
    trim_history,
    validate_messages,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_CONTENT_CHARS",
    "QianfanDecoder",
    "QianfanProvider",
    "QianfanToken",
    "SentenceOrderWarning",
    "error_from_code",
    "trim_history",
    "validate_messages",
]

DEFAULT_BASE_URL = "https://aip.baidubce.com"
CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"


_ENDPOINT_RE = re.compile(r"[A-Za-z0-9._~-]+")


_BODY_FIELDS = (
    "temperature",
    "top_p",
    "penalty_score",
    "system",
    "stop",
    "max_output_tokens",
    "user_id",
)


class QianfanProvider(Provider):
    """``qianfan/<endpoint>``: wenxinworkshop chat with an OAuth access token."""

    name: ClassVar[str] = PROVIDER
    setting_keys: ClassVar[frozenset[str]] = frozenset(
        {"ak", "sk", "access_token", "base_url", "token_timeout"}
    )
    operations: ClassVar[frozenset[str]] = frozenset({"chat"})

    @property
    def base_url(self) -> str:
        """The service origin (token and chat URLs hang off it)."""
        return str(self.setting("base_url", "QIANFAN_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")

    def credential(self) -> str | TokenEndpoint:
        settings = self.settings
        if not (settings.get("ak") or settings.get("sk")):
            token = settings.get("access_token")
            if token:
                return str(token)
            if not (self.env.get("QIANFAN_AK") or self.env.get("QIANFAN_SK")):
                env_token = self.env.get("QIANFAN_ACCESS_TOKEN")
                if env_token:
                    return env_token
                raise ConfigurationError(
                    "missing Qianfan credentials: set QIANFAN_AK and QIANFAN_SK (the "
                    "application's API Key and Secret Key) or QIANFAN_ACCESS_TOKEN, or pass "
                    "providers={'qianfan': {'ak': ..., 'sk': ...}} to aiollm.Client",
                    provider=self.name,
                )
        ak = self.require("ak", "QIANFAN_AK")
        sk = self.require("sk", "QIANFAN_SK")
        timeout = self.setting("token_timeout", None, DEFAULT_TOKEN_TIMEOUT)
        return QianfanToken(self.base_url, ak, sk, timeout=float(timeout))

    # -- requests -----------------------------------------------------------------------------
    def check(self, call: Call) -> None:
        super().check(call)
        if not _ENDPOINT_RE.fullmatch(call.model):
            raise InvalidRequestError(
                f"the model must be a Qianfan endpoint name such as 'llama_2_7b' "
                f"(letters, digits, '_', '-', '.'), got {call.model!r}",
                provider=self.name,
            )
        trim = call.params.get("trim_history", False)
        if not isinstance(trim, bool):
            raise InvalidRequestError("trim_history must be True or False", provider=self.name)
        if "stream" in call.params:
            raise InvalidRequestError(
                "do not pass stream=: use client.stream() or client.chat()", provider=self.name
            )

    def prepare(self, call: Call) -> Prepared:
        """Validate ``call`` and build its body once: the rules checked, the history trimmed."""
        self.check(call)
        system, messages, dropped = self.messages(call)
        notes = {"trimmed_messages": dropped} if call.params.get("trim_history") else {}
        return Prepared(call, json_body(self.body(call, system, messages)), notes)

    def messages(self, call: Call) -> tuple[str | None, list[dict[str, Any]], int]:
        """``(system, messages, dropped)``: the leading system message split off, the rules
        checked and, with ``trim_history=True``, the oldest pairs dropped (``dropped`` of them)."""
        if call.messages is not None:
            messages = native_messages(list(call.messages))
        else:
            messages = [{"role": "user", "content": call.prompt or ""}]
        system: str | None = None
        if messages and isinstance(messages[0], Mapping) and messages[0].get("role") == "system":
            content = messages[0].get("content")
            if not isinstance(content, str):
                raise InvalidRequestError(
                    "messages rule: the system message must have a string 'content'",
                    provider=self.name,
                )
            if call.params.get("system") is not None:
                raise InvalidRequestError(
                    "pass the system prompt either as a leading system message or as system=, "
                    "not both",
                    provider=self.name,
                )
            system = content
            messages = messages[1:]
        validate_messages(messages)
        dropped = 0
        if call.params.get("trim_history"):
            trimmed = trim_history(messages)
            dropped = len(messages) - len(trimmed)
            messages = trimmed
        return system, messages, dropped

    def body(
        self,
        call: Call,
        system: str | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of ``call`` (with its checked ``system`` and ``messages``)."""
        if messages is None:
            system, messages, _ = self.messages(call)
        body: dict[str, Any] = {"messages": messages}
        if system is not None:
            body["system"] = system
        params = dict(call.params)
        params.pop("trim_history", None)
        tools = params.pop("tools", None)
        if tools and "functions" not in params:
            # OpenAI-style tools as the service's ``functions``.
            params["functions"] = [
                tool.get("function", tool) if isinstance(tool, Mapping) else tool for tool in tools
            ]
        if "max_tokens" in params:
            max_tokens = params.pop("max_tokens")
            params.setdefault("max_output_tokens", max_tokens)
        for key, value in params.items():
            if value is not None or key not in _BODY_FIELDS:
                body[key] = value
        if call.stream:
            body["stream"] = True
        return body

    def chat_url(self, call: Call) -> str:
        """The chat URL of ``call``'s endpoint (without the access token)."""
        return f"{self.base_url}{CHAT_PATH}{call.model}"

    def build_request(self, prepared: Prepared, credential: str) -> HTTPRequest:
        return HTTPRequest(
            "POST",
            self.chat_url(prepared.call),
            headers={"Content-Type": "application/json"},
            params={"access_token": credential},
            body=prepared.body,
            secrets=(credential,) if credential else (),
        )

    def decoder(
        self, prepared: Prepared, status: int, headers: Mapping[str, str]
    ) -> ResponseDecoder:
        return QianfanDecoder(prepared.call, status, headers, notes=prepared.notes)
