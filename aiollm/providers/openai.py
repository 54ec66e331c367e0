"""Any OpenAI-compatible server (``openai/<model>``), and the OpenAI wire decoder.

Settings: ``base_url`` (``OPENAI_BASE_URL``, includes ``/v1``; default
``https://api.openai.com/v1``) and ``api_key`` (``OPENAI_API_KEY``; required for the default
base URL, optional for a custom server). Streams are real SSE ``chat.completion.chunk``s;
usage is asked for with ``stream_options.include_usage``; ``[DONE]`` ends the stream, and a
body that ends after a ``finish_reason`` without ``[DONE]`` is a normal end too. The
:class:`~aiollm.Finish` of a stream is held until ``[DONE]`` (or the end of the body), so
the usage chunk that follows the finish chunk comes before it.

The decoder (:class:`OpenAIDecoder`) is shared with the gateway provider, which speaks the
same wire format behind a different URL scheme, token and error codes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import (
    AiollmError,
    APIError,
    InvalidRequestError,
    StreamOptionsRejectedError,
)
from ..request import TokenEndpoint, json_body
from ._base import Call, HTTPRequest, Prepared, Provider, ResponseDecoder
from ._hints import openai_compatible_hint
from ._openai_decoder import OpenAIDecoder
from ._openai_wire import WireError, WireResponse

__all__ = ["DEFAULT_BASE_URL", "OpenAIDecoder", "OpenAIProvider", "WireError", "WireResponse"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

log = logging.getLogger("aiollm.openai")


class OpenAIProvider(Provider):
    """``openai/<model>``: any OpenAI-compatible server with a Bearer key."""

    name: ClassVar[str] = "openai"
    setting_keys: ClassVar[frozenset[str]] = frozenset({"api_key", "base_url"})
    operations: ClassVar[frozenset[str]] = frozenset({"chat", "complete", "embed"})
    decoder_class: ClassVar[type[OpenAIDecoder]] = OpenAIDecoder

    @property
    def base_url(self) -> str:
        """The API base, including ``/v1``."""
        return str(self.setting("base_url", "OPENAI_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")

    def explain(self, exc: APIError, request: HTTPRequest) -> APIError:
        return openai_compatible_hint(exc, request.url, request.secrets)

    def credential(self) -> str | TokenEndpoint:
        if self.base_url == DEFAULT_BASE_URL:
            return self.require("api_key", "OPENAI_API_KEY")
        return str(self.setting("api_key", "OPENAI_API_KEY", ""))

    def check(self, call: Call) -> None:
        super().check(call)
        if call.op == "embed":
            items = [call.input] if isinstance(call.input, str) else call.input
            if not items or not all(isinstance(item, str) for item in items):
                raise InvalidRequestError(
                    "input must be a string or a non-empty list of strings", provider=self.name
                )
        elif call.op == "complete" and not isinstance(call.prompt, str):
            raise InvalidRequestError("prompt must be a string", provider=self.name)

    def body(self, call: Call, *, stream: bool | None = None) -> dict[str, Any]:
        """The JSON body of ``call`` in the OpenAI format (``stream`` asks for SSE)."""
        if stream is None:
            stream = call.stream
        body: dict[str, Any] = {"model": call.model}
        if call.op == "chat":
            if call.messages is not None:
                body["messages"] = call.messages
            else:
                body["messages"] = [{"role": "user", "content": call.prompt or ""}]
        elif call.op == "complete":
            body["prompt"] = call.prompt
        else:
            body["input"] = call.input
        body.update(call.params)
        body.pop("think_tags", None)  # read by the decoder, not sent
        if stream:
            body["stream"] = True
            if "stream_options" not in body:
                if not self.no_stream_options:
                    body["stream_options"] = {"include_usage": True}
            elif body["stream_options"] is None:
                del body["stream_options"]
        else:
            # Servers reject stream_options without stream; the call is not streamed.
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def path(self, call: Call) -> str:
        """The endpoint path of ``call`` below the ``/v1`` base."""
        return {"chat": "/chat/completions", "complete": "/completions", "embed": "/embeddings"}[
            call.op
        ]

    no_stream_options = False
    """Set once the server rejected ``stream_options``: later requests leave it out."""

    def failed(self, prepared: Prepared, error: AiollmError) -> None:
        """A rejected ``stream_options`` is remembered; the retry sends the body without it."""
        if isinstance(error, StreamOptionsRejectedError) and not self.no_stream_options:
            self.no_stream_options = True
            log.info("%s: the server rejects stream_options; usage is not asked for", self.name)

    def build_request(self, prepared: Prepared, credential: str) -> HTTPRequest:
        call = prepared.call
        if self.no_stream_options and call.stream and "stream_options" not in call.params:
            body = prepared.alternates.get("no_stream_options")
            if body is None:
                body = prepared.alternates["no_stream_options"] = json_body(self.body(call))
        else:
            body = prepared.body
        headers = {"Content-Type": "application/json"}
        if call.stream:
            headers["Accept"] = "text/event-stream"
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return HTTPRequest(
            "POST",
            self.base_url + self.path(call),
            headers=headers,
            body=body,
            secrets=(credential,) if credential else (),
        )

    def decoder(
        self, prepared: Prepared, status: int, headers: Mapping[str, str]
    ) -> ResponseDecoder:
        return self.decoder_class(prepared.call, status, headers)
