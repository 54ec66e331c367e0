"""Response body framing: bytes in, frames out (sans-IO).

The transport hands this layer body chunks as they arrive, split anywhere; the framers turn
them into whole frames and keep nothing else:

* :class:`SSEDecoder` turns a ``text/event-stream`` body into server-sent events, following
  the WHATWG rules, and also reads streams that omit the blank line between frames.
* :class:`JSONFramer` splits a JSON body (one document, possibly pretty-printed, NDJSON, or
  documents back to back) into the raw bytes of each document, for the codec to decode.
* :func:`sniff_body` (and :class:`BodySniffer`, which waits for enough bytes) decides which of
  the two a body is, from its ``Content-Type`` and, when that does not say, its first bytes.

Everything here is pure computation on ``bytes``: no I/O, no event loop, no clock. The only
error raised for bad input is :class:`~aiollm.errors.ProtocolError`; after it a framer is
unusable. Work is linear in the input, and memory is bounded: a line, event or document larger
than its limit raises instead of being buffered. The same bytes give the same frames and the
same error whatever the chunk boundaries: when an error is found after frames that a ``feed``
call completed, the call returns those frames and the next call raises the error.
"""

from ._json import DEFAULT_MAX_BYTES, JSONFramer
from ._sniff import SNIFF_MAX_BYTES, BodyKind, BodySniffer, sniff_body
from ._sse import COMMENT_COST, ServerSentEvent, SSEDecoder, SSEItem, as_event

__all__ = [
    "COMMENT_COST",
    "DEFAULT_MAX_BYTES",
    "SNIFF_MAX_BYTES",
    "BodyKind",
    "BodySniffer",
    "JSONFramer",
    "SSEDecoder",
    "SSEItem",
    "ServerSentEvent",
    "as_event",
    "sniff_body",
]
