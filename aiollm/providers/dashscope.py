"""Alibaba DashScope native text generation (``dashscope/<model>``).

Settings: ``api_key`` (``DASHSCOPE_API_KEY``, required), ``base_url`` (``DASHSCOPE_BASE_URL``, the
origin, default ``https://dashscope.aliyuncs.com``; the client appends
``/api/v1/services/aigc/text-generation/generation``) and ``workspace`` (``DASHSCOPE_WORKSPACE``,
sent as ``X-DashScope-WorkSpace``).

Requests carry ``input.messages`` (or ``input.prompt``) and every other keyword argument in
``parameters``, unchanged. Streaming is switched on by the ``X-DashScope-SSE: enable`` header;
the event stream has ``id:``/``event:``/``:HTTP_STATUS/NNN``/``data:`` lines.

Stream text modes (the decoder turns both into deltas whose concatenation is the final text, with
work linear in the bytes received):

- ``incremental_output=False``: every frame carries the whole text so far (the service's own
  default). A frame must start with the text so far; the part after it is the delta. A frame
  that does not is a :class:`~aiollm.ProtocolError`. An empty text means "no new text".
- Not given (or ``True``): the request asks for ``incremental_output: true``, where every frame
  carries only new text, and the decoder checks that the server obliged, because some models and
  gateways ignore the parameter (see :class:`ModeDetector` for the exact rule). Once a stream
  is known to be cumulative, it is checked as above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from ..errors import InvalidRequestError
from ..request import TokenEndpoint
from ._base import Call, HTTPRequest, Prepared, Provider, ResponseDecoder
from ._dashscope_decoder import DashScopeDecoder
from ._dashscope_rules import (
    MODEL_LIMITS,
    PROMPT_ONLY_MODELS,
    PROVIDER,
    ModeDetector,
    ParamRange,
    error_for,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "GENERATION_PATH",
    "MODEL_LIMITS",
    "DashScopeDecoder",
    "DashScopeProvider",
    "ModeDetector",
    "ParamRange",
    "error_for",
]

DEFAULT_BASE_URL: Final = "https://dashscope.aliyuncs.com"
GENERATION_PATH: Final = "/api/v1/services/aigc/text-generation/generation"


def _needs_message_format(params: Mapping[str, Any]) -> str | None:
    """The parameter that needs ``result_format='message'`` (tools, thinking), if any."""
    if params.get("tools"):
        return "tools"
    if params.get("enable_thinking"):
        return "enable_thinking"
    return None


class DashScopeProvider(Provider):
    """``dashscope/<model>``: DashScope native text generation with an API key."""

    name: ClassVar[str] = PROVIDER
    operations: ClassVar[frozenset[str]] = frozenset({"chat", "complete"})
    setting_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "base_url", "workspace"})

    @property
    def base_url(self) -> str:
        """The origin (a trailing ``/api/v1`` is tolerated)."""
        url = str(self.setting("base_url", "DASHSCOPE_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")
        return url.removesuffix("/api/v1")

    @property
    def workspace(self) -> str | None:
        """The workspace id sent as ``X-DashScope-WorkSpace``, if set."""
        value = self.setting("workspace", "DASHSCOPE_WORKSPACE")
        return str(value) if value else None

    def credential(self) -> str | TokenEndpoint:
        return self.require("api_key", "DASHSCOPE_API_KEY")

    def check(self, call: Call) -> None:
        super().check(call)
        if call.model in PROMPT_ONLY_MODELS and call.messages is not None:
            raise InvalidRequestError(
                f"{call.model} takes a prompt only, not messages: pass prompt=... in its own "
                "convention, e.g. prompt='用户：<question>\\n小元：'",
                provider=self.name,
                code="InvalidParameter",
            )
        wants = _needs_message_format(call.params)
        if wants and call.params.get("result_format", "message") != "message":
            raise InvalidRequestError(
                f"{wants} needs result_format='message' (tool calls and reasoning arrive only in "
                f"that format); leave result_format out and aiollm sets it",
                provider=self.name,
                code="InvalidParameter",
            )
        limits = MODEL_LIMITS.get(call.model)
        if limits:
            for param, allowed in limits.items():
                value = call.params.get(param)
                if value is not None and not allowed.contains(value):
                    kind = "an integer" if allowed.integer else "a number"
                    raise InvalidRequestError(
                        f"{call.model}: {param}={value!r} is out of range; it must be {kind} "
                        f"in {allowed}",
                        provider=self.name,
                        code="InvalidParameter",
                    )

    def body(self, call: Call) -> dict[str, Any]:
        """The JSON body of ``call``: model, input and parameters."""
        if call.messages is not None and call.op == "chat":
            input_: dict[str, Any] = {"messages": call.messages}
        else:
            input_ = {"prompt": call.prompt or ""}
        parameters = dict(call.params)
        if call.stream and parameters.get("incremental_output") is None:
            parameters["incremental_output"] = True
        if _needs_message_format(parameters):
            parameters.setdefault("result_format", "message")
        body: dict[str, Any] = {"model": call.model, "input": input_}
        if parameters:
            body["parameters"] = parameters
        return body

    def build_request(self, prepared: Prepared, credential: str) -> HTTPRequest:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        if prepared.call.stream:
            headers["Accept"] = "text/event-stream"
            headers["X-DashScope-SSE"] = "enable"
        else:
            headers["Accept"] = "application/json"
        workspace = self.workspace
        if workspace:
            headers["X-DashScope-WorkSpace"] = workspace
        return HTTPRequest(
            "POST",
            self.base_url + GENERATION_PATH,
            headers=headers,
            body=prepared.body,
            secrets=(credential,),
        )

    def decoder(
        self, prepared: Prepared, status: int, headers: Mapping[str, str]
    ) -> ResponseDecoder:
        return DashScopeDecoder(prepared.call, status, headers)
