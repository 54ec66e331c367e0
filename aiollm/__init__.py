"""aiollm: an async, streaming-first client for DashScope, Qianfan and OpenAI-compatible APIs.

::

    async with aiollm.Client() as client:
        reply = await client.chat("qianfan/llama_2_7b", messages=[{"role": "user", "content": "你好"}])
        async with client.stream("dashscope/baichuan2-turbo", messages=msgs) as stream:
            async for event in stream:
                ...
"""

from __future__ import annotations

from . import fanout
from .client import Client
from .errors import (
    AiollmError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ContentFilterError,
    ContextOverflowError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    TimeoutError,
    ToolArgumentsError,
    TransportError,
    UnsupportedOperationError,
)
from .events import (
    Completion,
    Embeddings,
    Event,
    Finish,
    ReasoningDelta,
    SafetyNotice,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .hooks import FinishInfo, Hooks, RequestInfo, ResponseHead, RetryInfo
from .limits import Limits, RetryPolicy, SharedLimitsError
from .stream import Stream
from .transport import Timeout

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AiollmError",
    "AuthenticationError",
    "Client",
    "Completion",
    "ConfigurationError",
    "ContentFilterError",
    "ContextOverflowError",
    "Embeddings",
    "Event",
    "Finish",
    "FinishInfo",
    "Hooks",
    "InvalidRequestError",
    "Limits",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "ReasoningDelta",
    "RequestInfo",
    "ResponseHead",
    "RetryInfo",
    "RetryPolicy",
    "SafetyNotice",
    "ServerError",
    "SharedLimitsError",
    "Stream",
    "StreamInterrupted",
    "TextDelta",
    "Timeout",
    "TimeoutError",
    "ToolArgumentsError",
    "ToolCall",
    "ToolCallDelta",
    "TransportError",
    "UnsupportedOperationError",
    "Usage",
    "fanout",
]
