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
    StreamingRefusedError,
    StreamInterrupted,
    StreamOptionsRejectedError,
    TimeoutError,
    ToolArgumentsError,
    TransportError,
    UnsupportedOperationError,
)
from .events import (
    Accumulator,
    Completion,
    Embeddings,
    Event,
    Finish,
    ReasoningDelta,
    RefusalDelta,
    ResponseInfo,
    SafetyNotice,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    fold,
)
from .hooks import FinishInfo, Hooks, RequestInfo, ResponseHead, RetryInfo
from .limits import Limits, RetryPolicy, SharedLimitsError
from .providers import split_model
from .stream import State, Stream
from .transport import Timeout

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Accumulator",
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
    "RefusalDelta",
    "RequestInfo",
    "ResponseHead",
    "ResponseInfo",
    "RetryInfo",
    "RetryPolicy",
    "SafetyNotice",
    "ServerError",
    "SharedLimitsError",
    "State",
    "Stream",
    "StreamInterrupted",
    "StreamOptionsRejectedError",
    "StreamingRefusedError",
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
    "fold",
    "split_model",
]
